//! pgbench's TPC-B-like transaction (`pgbench -i -s SCALE`, then `pgbench -c N -T SECS`) on a
//! 3-node cluster of real `bini` processes (RocksDB on disk, replication factor 3) and on
//! PostgreSQL 15 on the same machine, one after the other in one invocation, by the same
//! pgbench. Both run SERIALIZABLE (PostgreSQL through `default_transaction_isolation`), and
//! pgbench retries serialization failures (`--max-tries=0`); `retried` is the share of
//! transactions that needed at least one retry.
//!
//! `$CARGO_TARGET_DIR/debug/tpcb-bench [seconds per row] [scale]` (defaults 10 and 1).

#[path = "pg_reference.rs"]
mod pg_reference;

use bini_e2e::{wait_for_sql, Cluster};
use pg_reference::{pgbench, pgbench_report, PgbenchReport, Postgres, Target};

/// Loads the pgbench tables and runs `clients` clients for `secs` seconds per entry.
fn bench(t: &Target<'_>, scale: u64, secs: u64, clients: &[usize]) -> Vec<Option<PgbenchReport>> {
    if pgbench(t, &["-i", "-q", "-s", &scale.to_string()]).is_none() {
        return clients.iter().map(|_| None).collect();
    }
    clients
        .iter()
        .map(|c| {
            let out = pgbench(
                t,
                &[
                    "-c",
                    &c.to_string(),
                    "-j",
                    &(*c).min(4).to_string(),
                    "-T",
                    &secs.to_string(),
                    "--max-tries=0",
                ],
            )?;
            pgbench_report(&out)
        })
        .collect()
}

#[tokio::main]
async fn main() {
    let arg = |i: usize, default: u64| {
        std::env::args()
            .nth(i)
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    };
    let (secs, scale) = (arg(1, 10), arg(2, 1));
    let clients = [1usize, 8, 32];

    let cluster = Cluster::start(3, &[]).await;
    wait_for_sql(&cluster).await;
    let addr = cluster.nodes[0].addr.clone();
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    let port: u16 = port.parse().expect("port");
    let target = Target {
        host,
        port,
        user: "root",
        db: "defaultdb",
        options: "",
    };
    let bini = tokio::task::block_in_place(|| bench(&target, scale, secs, &clients));
    drop(cluster);

    let pg = Postgres::start(bini_e2e::free_port());
    let reference = match &pg {
        Some(pg) => {
            let target = Target {
                host: "127.0.0.1",
                port: pg.port(),
                user: "postgres",
                db: "postgres",
                options: "-c default_transaction_isolation=serializable",
            };
            bench(&target, scale, secs, &clients)
        }
        None => clients.iter().map(|_| None).collect(),
    };

    println!("pgbench TPC-B-like, scale {scale}, {secs} s per row; bini: 3 nodes, RF 3;");
    println!("reference: PostgreSQL, one node, SERIALIZABLE; the same pgbench drives both");
    println!(
        "{:>7} {:>8} {:>8} {:>8} {:>7} {:>8} {:>8} {:>8} {:>8}",
        "clients", "tps", "lat ms", "retried", "failed", "pg tps", "pg lat", "pg retr", "bini/pg"
    );
    let pct = |r: &PgbenchReport| {
        format!(
            "{:.1}%",
            100.0 * r.retried as f64 / (r.processed.max(1)) as f64
        )
    };
    for ((c, b), p) in clients.iter().zip(&bini).zip(&reference) {
        let (tps, lat, retried, failed) = match b {
            Some(b) => (
                format!("{:.0}", b.tps),
                format!("{:.2}", b.latency_ms),
                pct(b),
                b.failed.to_string(),
            ),
            None => ("-".into(), "-".into(), "-".into(), "-".into()),
        };
        let (ptps, plat, pretr) = match p {
            Some(p) => (
                format!("{:.0}", p.tps),
                format!("{:.2}", p.latency_ms),
                pct(p),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        let ratio = match (b, p) {
            (Some(b), Some(p)) => format!("{:.2}", b.tps / p.tps),
            _ => "-".into(),
        };
        println!(
            "{c:>7} {tps:>8} {lat:>8} {retried:>8} {failed:>7} {ptps:>8} {plat:>8} {pretr:>8} {ratio:>8}"
        );
    }
}
