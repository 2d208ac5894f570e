//! SQL point selects over pgwire: a 3-node cluster of real `bini` processes (RocksDB on disk,
//! replication factor 3, clients spread over the nodes) side by side with PostgreSQL on the same
//! machine, both driven by the same client (tokio-postgres, one prepared
//! `SELECT v FROM bench WHERE k = $1` per request, random keys over 10,000 rows).
//!
//! `$CARGO_TARGET_DIR/debug/sql-bench [seconds per row]` (default 10).

#[path = "pg_reference.rs"]
mod pg_reference;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bini_e2e::{pg_conn_str, pg_connect, wait_for_sql, Cluster};
use hdrhistogram::Histogram;
use rand::Rng;

const ROWS: i64 = 10_000;

/// Creates and fills the table through `cs`.
async fn load(cs: &str) {
    let c = pg_connect(cs).await;
    c.batch_execute("DROP TABLE IF EXISTS bench; CREATE TABLE bench (k INT8 PRIMARY KEY, v TEXT)")
        .await
        .expect("create");
    for start in (0..ROWS).step_by(500) {
        let values: Vec<String> = (start..(start + 500).min(ROWS))
            .map(|k| format!("({k}, '{}')", "v".repeat(64)))
            .collect();
        c.batch_execute(&format!("INSERT INTO bench VALUES {}", values.join(",")))
            .await
            .expect("load");
    }
}

/// Runs `clients` clients (client i on `targets[i % len]`) for `secs`: requests per second,
/// the latency histogram (µs) and the number of errors.
async fn run(targets: &[String], clients: usize, secs: u64) -> (f64, Histogram<u64>, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..clients {
        let (cs, stop) = (targets[i % targets.len()].clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let c = pg_connect(&cs).await;
            let stmt = c
                .prepare("SELECT v FROM bench WHERE k = $1")
                .await
                .expect("prepare");
            let mut h = Histogram::<u64>::new(3).expect("histogram");
            let mut errors = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let k: i64 = rand::rng().random_range(0..ROWS);
                let t = Instant::now();
                match c.query_one(&stmt, &[&k]).await {
                    Ok(_) => {
                        let _ = h.record(t.elapsed().as_micros() as u64);
                    }
                    Err(_) => errors += 1,
                }
            }
            (h, errors)
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Histogram::<u64>::new(3).expect("histogram");
    let mut errors = 0;
    for t in tasks {
        let (h, e) = t.await.expect("client");
        all.add(&h).expect("merge");
        errors += e;
    }
    (
        all.len() as f64 / started.elapsed().as_secs_f64(),
        all,
        errors,
    )
}

#[tokio::main]
async fn main() {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let cluster = Cluster::start(3, &[]).await;
    wait_for_sql(&cluster).await;
    let bini: Vec<String> = cluster.nodes.iter().map(|n| pg_conn_str(&n.addr)).collect();
    load(&bini[0]).await;
    let pg = pg_reference::Postgres::start(bini_e2e::free_port());
    let pg_cs = pg.as_ref().map(|p| p.conn_str());
    if let Some(cs) = &pg_cs {
        load(cs).await;
    }
    println!("point selects over pgwire, {ROWS} rows, {secs} s per row; bini: 3 nodes, RF 3;");
    println!("reference: PostgreSQL, one node; the same client drives both");
    println!(
        "{:>7} {:>9} {:>8} {:>8} {:>9} {:>8} {:>8} {:>8}",
        "clients", "qps", "p50 ms", "p99 ms", "pg qps", "pg p50", "pg p99", "bini/pg"
    );
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    for clients in [1usize, 8, 32] {
        let (qps, h, errors) = run(&bini, clients, secs).await;
        let reference = match &pg_cs {
            Some(cs) => Some(run(std::slice::from_ref(cs), clients, secs).await),
            None => None,
        };
        let (pqps, p50, p99, ratio) = match &reference {
            Some((pq, ph, _)) => (
                format!("{pq:.0}"),
                format!("{:.2}", ms(ph, 0.5)),
                format!("{:.2}", ms(ph, 0.99)),
                format!("{:.2}", qps / pq),
            ),
            None => ("-".into(), "-".into(), "-".into(), "-".into()),
        };
        println!(
            "{:>7} {:>9.0} {:>8.2} {:>8.2} {:>9} {:>8} {:>8} {:>8}{}",
            clients,
            qps,
            ms(&h, 0.5),
            ms(&h, 0.99),
            pqps,
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
