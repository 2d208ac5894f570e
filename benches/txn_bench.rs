//! Transaction throughput and latency on a 3-node cluster (in one process, RocksDB on disk,
//! gRPC on loopback), side by side with PostgreSQL on the same machine:
//!
//! - **single-range**: one 64-byte write per transaction, committed in one phase (no record,
//!   no intents) — the autocommit INSERT; reference: pgbench running that INSERT.
//! - **multi-range**: two writes to two ranges per transaction — record, intents, commit,
//!   asynchronous resolution; reference: pgbench running BEGIN; two INSERTs; COMMIT.
//!
//! `cargo run --release --bin txn-bench -- [seconds per row]` (default 10).

#[path = "pg_reference.rs"]
mod pg_reference;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bini_kv::StoreConfig;
use bini_testkit::TestCluster;
use bini_txn::put;
use hdrhistogram::Histogram;

const SPLITS: usize = 8;

fn key(shard: usize, client: usize, i: u64) -> Vec<u8> {
    format!("tb/{shard}/{client:03}/{i:010}").into_bytes()
}

#[tokio::main]
async fn main() {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let cluster = TestCluster::start(3, StoreConfig::default()).await;
    cluster.wait_replicated(3, Duration::from_secs(60)).await;
    for shard in 1..SPLITS {
        cluster.split_at(format!("tb/{shard}/").as_bytes()).await;
    }
    cluster.wait_replicated(3, Duration::from_secs(60)).await;
    let cluster = Arc::new(cluster);
    let pg = pg_reference::Postgres::start(bini_e2e::free_port());
    println!("transactions on 3 nodes (replication factor 3), 64-byte values, {secs} s per row;");
    println!("reference: PostgreSQL, one node, synchronous commit");
    println!(
        "{:<13} {:>7} {:>9} {:>8} {:>8} {:>9} {:>8} {:>8} {:>8}",
        "kind", "clients", "txn/s", "p50 ms", "p99 ms", "pg tps", "pg p50", "pg p99", "bini/pg"
    );
    for multi in [false, true] {
        for clients in [1usize, 16, 64] {
            let stop = Arc::new(AtomicBool::new(false));
            let started = Instant::now();
            let mut tasks = Vec::new();
            for c in 0..clients {
                let (cluster, stop) = (cluster.clone(), stop.clone());
                tasks.push(tokio::spawn(async move {
                    let db = cluster.db(c % 3);
                    let mut h = Histogram::<u64>::new(3).expect("histogram");
                    let mut errors = 0u64;
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        let shard = (c + i as usize) % SPLITS;
                        let mut writes = vec![put(&key(shard, c, i), &[b'v'; 64])];
                        if multi {
                            let other = (shard + SPLITS / 2) % SPLITS;
                            writes.push(put(&key(other, c, i), &[b'v'; 64]));
                        }
                        let t = Instant::now();
                        match db.begin().commit_with(writes).await {
                            Ok(()) => {
                                let _ = h.record(t.elapsed().as_micros() as u64);
                            }
                            Err(_) => errors += 1,
                        }
                    }
                    (h, errors)
                }));
            }
            tokio::time::sleep(Duration::from_secs(secs)).await;
            stop.store(true, Ordering::Relaxed);
            let mut all = Histogram::<u64>::new(3).expect("histogram");
            let mut errors = 0;
            for t in tasks {
                let (h, e) = t.await.expect("client");
                all.add(&h).expect("merge");
                errors += e;
            }
            let elapsed = started.elapsed().as_secs_f64();
            let tps = all.len() as f64 / elapsed;
            let pgf = pg.as_ref().and_then(|p| {
                if multi {
                    let insert = "INSERT INTO kv VALUES (gen_random_uuid()::text, convert_to(repeat('v', 64), 'UTF8'));\n";
                    p.script_bench(&format!("BEGIN;\n{insert}{insert}COMMIT;\n"), clients, secs)
                } else {
                    p.insert_bench(clients, secs)
                }
            });
            let kind = if multi { "multi-range" } else { "single-range" };
            let (ptps, p50, p99, ratio) = match &pgf {
                Some(f) => (
                    format!("{:.0}", f.tps),
                    format!("{:.2}", f.p50_ms),
                    format!("{:.2}", f.p99_ms),
                    format!("{:.2}", tps / f.tps),
                ),
                None => ("-".into(), "-".into(), "-".into(), "-".into()),
            };
            println!(
                "{:<13} {:>7} {:>9.0} {:>8.2} {:>8.2} {:>9} {:>8} {:>8} {:>8}{}",
                kind,
                clients,
                tps,
                all.value_at_quantile(0.5) as f64 / 1000.0,
                all.value_at_quantile(0.99) as f64 / 1000.0,
                ptps,
                p50,
                p99,
                ratio,
                if errors > 0 {
                    format!("  ({errors} errors)")
                } else {
                    String::new()
                }
            );
        }
    }
}
