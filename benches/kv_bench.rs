//! KV put throughput and latency on a 3-node cluster of real `bini` processes, with 1, 16 and
//! 64 concurrent writers, and syncs per committed write (group commit) — side by side with
//! PostgreSQL on the same machine inserting the same rows (see `pg_reference.rs`).
//!
//! Run: `cargo build --workspace --all-targets && cargo run --bin kv-bench -- [SECONDS]`.
//! Figures are printed, never asserted.

mod pg_reference;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bini_e2e::{put, Cluster};
use bini_proto::{BatchRequest, NodeStatusRequest};
use hdrhistogram::Histogram;

async fn counters(c: &Cluster) -> (u64, u64) {
    let mut syncs = 0;
    let mut applied = 0;
    for i in 0..c.nodes.len() {
        let mut n = c.node(i).await;
        if let Ok(r) = n.node_status(NodeStatusRequest {}).await {
            let r = r.into_inner();
            syncs += r.synced_writes;
            applied += r.commands_applied;
        }
    }
    (syncs, applied)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let c = Cluster::start(3, &[]).await;
    c.wait_replicated(0, 3, Duration::from_secs(60)).await;
    let c = Arc::new(c);
    let pg = pg_reference::Postgres::start(bini_e2e::free_port());
    println!("kv put, 3 nodes (replication factor 3), 64-byte values, {secs} s per row;");
    println!("reference: PostgreSQL, one node, INSERT of the same row, synchronous commit");
    println!(
        "{:>8} {:>10} {:>8} {:>8} {:>13} {:>13} {:>10} {:>8} {:>8} {:>10}",
        "writers",
        "puts/s",
        "p50 ms",
        "p99 ms",
        "syncs/write",
        "(per node)",
        "pg tps",
        "pg p50",
        "pg p99",
        "bini/pg"
    );
    for writers in [1usize, 16, 64] {
        let stop = Arc::new(AtomicBool::new(false));
        let (syncs0, _) = counters(&c).await;
        let started = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..writers {
            let (c, stop) = (c.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let mut client = c.kv(w % 3).await;
                let mut h = Histogram::<u64>::new(3).expect("histogram");
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("bench/{writers}/{w}/{i}");
                    let t = Instant::now();
                    let req = BatchRequest {
                        requests: vec![put(key, vec![b'v'; 64])],
                        header: None,
                    };
                    if client.batch(req).await.is_ok() {
                        let _ = h.record(t.elapsed().as_micros() as u64);
                    }
                    i += 1;
                }
                h
            }));
        }
        tokio::time::sleep(Duration::from_secs(secs)).await;
        stop.store(true, Ordering::Relaxed);
        let mut all = Histogram::<u64>::new(3).expect("histogram");
        for t in tasks {
            all.add(t.await.expect("writer")).expect("merge");
        }
        let elapsed = started.elapsed().as_secs_f64();
        let (syncs1, _) = counters(&c).await;
        let n = all.len().max(1);
        let syncs = (syncs1 - syncs0) as f64;
        let puts = all.len() as f64 / elapsed;
        let reference = pg.as_ref().and_then(|p| p.insert_bench(writers, secs));
        let (pg_tps, pg_p50, pg_p99, ratio) = match &reference {
            Some(r) => (
                format!("{:.0}", r.tps),
                format!("{:.2}", r.p50_ms),
                format!("{:.2}", r.p99_ms),
                format!("{:.2}", puts / r.tps),
            ),
            None => ("-".into(), "-".into(), "-".into(), "-".into()),
        };
        println!(
            "{:>8} {:>10.0} {:>8.2} {:>8.2} {:>13.3} {:>13.3} {:>10} {:>8} {:>8} {:>10}",
            writers,
            puts,
            all.value_at_quantile(0.5) as f64 / 1000.0,
            all.value_at_quantile(0.99) as f64 / 1000.0,
            syncs / n as f64,
            syncs / n as f64 / 3.0,
            pg_tps,
            pg_p50,
            pg_p99,
            ratio,
        );
    }
}
