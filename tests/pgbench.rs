//! pgbench against a 3-node cluster. `pgbench -i -s SCALE` creates and loads the TPC-B tables
//! (DROP/CREATE TABLE, COPY of 100,000 × SCALE accounts, VACUUM, ALTER TABLE … ADD PRIMARY
//! KEY), then `pgbench -c 8 -T 60` runs its TPC-B-like transaction from eight clients. Transactions are
//! SERIALIZABLE, so some fail with 40001 and pgbench retries them (`--max-tries=0`: as many
//! times as it takes, as one would run it against PostgreSQL at that level); none may fail for
//! good. Afterwards the balances of accounts, tellers and branches and the history all agree,
//! and the history holds one row per transaction pgbench saw commit.
//!
//! `BINI_PGBENCH_SCALE` (default 10, as the issue asks: a million accounts loaded in one
//! transaction, whose intents condense into spans) and `BINI_PGBENCH_SECONDS` (default 60)
//! change the scale and the run's length.

use std::process::Output;
use std::time::Duration;

use bini_e2e::{pg_conn_str, pg_connect, wait_for_sql, Cluster};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs pgbench against `addr` with `args`, killing it if it outlives `limit`.
async fn pgbench(addr: &str, args: &[&str], limit: Duration) -> Output {
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    let child = tokio::process::Command::new("pgbench")
        .args(["-h", host, "-p", port, "-U", "root"])
        .args(args)
        .arg("defaultdb")
        .env("PGCONNECT_TIMEOUT", "10")
        .kill_on_drop(true)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run pgbench (postgresql-contrib / postgresql-client)");
    tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("pgbench {args:?} ran longer than {limit:?}"))
        .expect("pgbench output")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The number after `label` on its line of pgbench's report.
fn figure(report: &str, label: &str) -> Option<u64> {
    report
        .lines()
        .find_map(|l| l.strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn pgbench_tpcb_keeps_balances_consistent() {
    let scale = env_or("BINI_PGBENCH_SCALE", 10);
    let seconds = env_or("BINI_PGBENCH_SECONDS", 60);
    let c = Cluster::start(3, &[]).await;
    wait_for_sql(&c).await;
    let addr = c.nodes[0].addr.clone();

    let init = pgbench(
        &addr,
        &["-i", "-s", &scale.to_string()],
        Duration::from_secs(1200),
    )
    .await;
    assert!(
        init.status.success(),
        "pgbench -i failed:\n{}{}",
        text(&init.stdout),
        text(&init.stderr)
    );
    // pgbench's own account of the load: "done in … s (drop tables …, client-side generate …)".
    if let Some(done) = text(&init.stderr)
        .lines()
        .find(|l| l.starts_with("done in"))
    {
        println!("pgbench -i -s {scale}: {done}");
    }

    let db = pg_connect(&pg_conn_str(&c.nodes[1].addr)).await;
    let count = |table: &'static str| {
        let db = &db;
        async move {
            let row = db
                .query_one(&format!("select count(*) from {table}"), &[])
                .await
                .expect("count");
            row.get::<_, i64>(0) as u64
        }
    };
    assert_eq!(count("pgbench_branches").await, scale);
    assert_eq!(count("pgbench_tellers").await, 10 * scale);
    assert_eq!(count("pgbench_accounts").await, 100_000 * scale);

    let run = pgbench(
        &addr,
        &[
            "-c",
            "8",
            "-j",
            "2",
            "-T",
            &seconds.to_string(),
            "--max-tries=0",
        ],
        Duration::from_secs(seconds + 300),
    )
    .await;
    let report = text(&run.stdout);
    assert!(
        run.status.success(),
        "pgbench run failed:\n{report}{}",
        text(&run.stderr)
    );
    println!("{report}");
    let processed = figure(&report, "number of transactions actually processed: ")
        .expect("processed transactions in the report");
    assert!(processed > 0, "no transaction went through:\n{report}");
    let failed = figure(&report, "number of failed transactions: ")
        .expect("failed transactions in the report (pgbench 15 prints them)");
    assert_eq!(failed, 0, "failed transactions:\n{report}");

    let sum = |sql: &'static str| {
        let db = &db;
        async move {
            let row = db.query_one(sql, &[]).await.expect(sql);
            row.get::<_, Option<i64>>(0).unwrap_or(0)
        }
    };
    let accounts = sum("select sum(abalance)::int8 from pgbench_accounts").await;
    let tellers = sum("select sum(tbalance)::int8 from pgbench_tellers").await;
    let branches = sum("select sum(bbalance)::int8 from pgbench_branches").await;
    let history = sum("select sum(delta)::int8 from pgbench_history").await;
    assert_eq!(
        (accounts, tellers, branches),
        (history, history, history),
        "balances disagree: accounts, tellers, branches vs history"
    );
    assert_eq!(
        count("pgbench_history").await,
        processed,
        "history rows against transactions pgbench saw commit"
    );
}
