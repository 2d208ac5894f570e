//! What a node does with statements at and past its limits: huge but ordinary statements
//! (an ORM's 100,000-term `OR` chain or `IN` list, 400 levels of generated brackets) run;
//! statements nested too deeply, or too long, fail with a SQLSTATE (54001, 54000). Every
//! statement goes through both the simple and the extended protocol, on a connection that
//! must stay open, to a node that must stay up and keep serving other clients.

use std::time::Duration;

use bini_e2e::{pg_conn_str, pg_connect, wait_for_sql, Cluster};
use tokio_postgres::error::SqlState;

/// What a statement must come to.
enum Expect {
    /// It runs and returns this count.
    Count(i64),
    /// It fails with this SQLSTATE.
    Fails(&'static str),
}

fn or_chain(n: usize) -> String {
    let terms: Vec<String> = (0..n).map(|i| format!("id = {i}")).collect();
    format!("select count(*) from t where {}", terms.join(" or "))
}

fn in_list(n: usize) -> String {
    let items: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    format!("select count(*) from t where id in ({})", items.join(","))
}

/// `levels` levels of parenthesised AND/OR, as a query builder nests them; true for the ids
/// `levels - 1` only (the last OR; every AND below it needs two different ids at once).
fn nested_and_or(levels: usize) -> String {
    let mut e = "id = 0".to_string();
    for i in 1..levels {
        let op = if i % 2 == 0 { "and" } else { "or" };
        e = format!("({e} {op} id = {i})");
    }
    format!("select count(*) from t where {e}")
}

#[tokio::test(flavor = "multi_thread")]
async fn huge_statements_run_and_too_deep_ones_fail_with_a_sqlstate() {
    let c = Cluster::start(1, &[]).await;
    wait_for_sql(&c).await;
    let addr = c.nodes[0].addr.clone();
    let client = pg_connect(&pg_conn_str(&addr)).await;
    client
        .batch_execute(
            "create table t (id int primary key, v text);
             insert into t select g, concat('v', g) from generate_series(1, 1000) g",
        )
        .await
        .expect("schema");
    let cases: Vec<(&str, String, Expect)> = vec![
        (
            "100,000-term OR chain",
            or_chain(100_000),
            Expect::Count(1000),
        ),
        (
            "100,000-element IN list",
            in_list(100_000),
            Expect::Count(1000),
        ),
        (
            "400 levels of nested AND/OR",
            nested_and_or(400),
            Expect::Count(1),
        ),
        (
            "2,000-term sum over a column",
            format!(
                "select count(*) from t where {} > 0",
                vec!["id"; 2_000].join(" + ")
            ),
            Expect::Count(1000),
        ),
        (
            "10,000 levels of brackets",
            format!("select {}1{}", "(".repeat(10_000), ")".repeat(10_000)),
            Expect::Fails("54001"),
        ),
        (
            "10,000 nested function calls",
            format!("select {}1{}", "abs(".repeat(10_000), ")".repeat(10_000)),
            Expect::Fails("54001"),
        ),
        (
            "a 100,000-term sum",
            format!("select {}", vec!["1"; 100_000].join(" + ")),
            Expect::Fails("54001"),
        ),
        (
            "10,000 chained casts",
            format!("select 1{}", "::int".repeat(10_000)),
            Expect::Fails("54001"),
        ),
        (
            "2,000 nested subqueries",
            format!("select {}1{}", "(select ".repeat(2_000), ")".repeat(2_000)),
            Expect::Fails("54001"),
        ),
        (
            "10,000 UNION ALLs",
            vec!["select 1"; 10_000].join(" union all "),
            Expect::Fails("54001"),
        ),
        (
            "a 17 MiB statement",
            format!("select length('{}')", "x".repeat(17 << 20)),
            Expect::Fails("54000"),
        ),
    ];
    // Another client keeps using the node throughout.
    let other = pg_connect(&pg_conn_str(&addr)).await;
    for (what, sql, expect) in &cases {
        for extended in [false, true] {
            let started = std::time::Instant::now();
            let r = if extended {
                match client.prepare(sql).await {
                    Ok(p) => client
                        .query(&p, &[])
                        .await
                        .map(|rows| rows.first().map(|r| r.get::<_, i64>(0)).unwrap_or_default()),
                    Err(e) => Err(e),
                }
            } else {
                client.simple_query(sql).await.map(|msgs| {
                    msgs.iter()
                        .find_map(|m| match m {
                            tokio_postgres::SimpleQueryMessage::Row(r) => {
                                r.get(0).and_then(|v| v.parse().ok())
                            }
                            _ => None,
                        })
                        .unwrap_or_default()
                })
            };
            let protocol = if extended { "extended" } else { "simple" };
            println!("{what} ({protocol}): {:?}", started.elapsed());
            match (expect, r) {
                (Expect::Count(n), Ok(got)) => assert_eq!(got, *n, "{what} ({protocol})"),
                (Expect::Fails(code), Err(e)) => {
                    let db = e
                        .as_db_error()
                        .unwrap_or_else(|| panic!("{what} ({protocol}): no SQLSTATE: {e}"));
                    assert_eq!(
                        db.code(),
                        &SqlState::from_code(code),
                        "{what} ({protocol}): {}",
                        db.message()
                    );
                }
                (Expect::Count(_), Err(e)) => panic!("{what} ({protocol}) failed: {e}"),
                (Expect::Fails(code), Ok(_)) => {
                    panic!("{what} ({protocol}) ran; it should fail with {code}")
                }
            }
            assert!(
                !client.is_closed(),
                "{what} ({protocol}) closed the connection"
            );
            let n: i64 = tokio::time::timeout(
                Duration::from_secs(10),
                other.query_one("select count(*) from t where id < $1", &[&10i64]),
            )
            .await
            .unwrap_or_else(|_| panic!("the other client waited after {what}"))
            .unwrap_or_else(|e| panic!("the other client failed after {what}: {e}"))
            .get(0);
            assert_eq!(n, 9);
            assert!(c.is_running(0), "the node died on {what} ({protocol})");
        }
    }
}

/// The resident memory of a process, from `/proc/<pid>/status`.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

const BUDGET_MIB: u64 = 64;

#[tokio::test(flavor = "multi_thread")]
async fn statements_past_the_memory_budget_fail_while_others_run_and_scans_stream() {
    let c = Cluster::start(1, &[("BINI_MAX_SQL_MEMORY", "64MiB")]).await;
    wait_for_sql(&c).await;
    let addr = c.nodes[0].addr.clone();
    let pid = c.nodes[0].pid().expect("running");
    let client = pg_connect(&pg_conn_str(&addr)).await;
    client
        .batch_execute("create table big (id int primary key, pad text)")
        .await
        .expect("schema");
    // 100 MiB of rows, more than the budget, loaded 10 MiB at a time.
    for i in 0..10 {
        client
            .batch_execute(&format!(
                "insert into big select g, repeat('x', 500) from generate_series({}, {}) g",
                i * 20_000 + 1,
                (i + 1) * 20_000
            ))
            .await
            .expect("load");
    }
    let baseline = rss_bytes(pid);
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(baseline));
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        std::thread::spawn(move || {
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                peak.fetch_max(rss_bytes(pid), std::sync::atomic::Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    // Another session's small statements keep succeeding throughout.
    let small = {
        let addr = addr.clone();
        tokio::spawn(async move {
            let other = pg_connect(&pg_conn_str(&addr)).await;
            let mut ran: i64 = 0;
            let started = std::time::Instant::now();
            while started.elapsed() < Duration::from_secs(8) {
                let n: i64 = other
                    .query_one(
                        "select count(*) from big where id between $1 and $1 + 9",
                        &[&(ran + 1)],
                    )
                    .await
                    .unwrap_or_else(|e| panic!("a small statement failed: {e}"))
                    .get(0);
                assert_eq!(n, 10);
                ran += 1;
            }
            ran
        })
    };
    for (what, sql) in [
        (
            "a cross join of two million-row series",
            "select count(*) from generate_series(1, 1000000) a, generate_series(1, 1000000) b",
        ),
        (
            "a sort of two million rows",
            "select g from generate_series(1, 2000000) g order by g desc limit 1",
        ),
        (
            "a GROUP BY with two million groups",
            "select g, count(*) from generate_series(1, 2000000) g group by g limit 1",
        ),
        (
            "a sort of the whole table",
            "select * from big order by pad desc, id limit 1",
        ),
    ] {
        let e = client.query(sql, &[]).await.expect_err(what);
        let db = e.as_db_error().unwrap_or_else(|| panic!("{what}: {e}"));
        assert_eq!(
            db.code(),
            &SqlState::OUT_OF_MEMORY,
            "{what}: {}",
            db.message()
        );
    }
    // A full scan bigger than the budget streams: every row arrives, none held at once.
    let rows = client
        .query_raw("select id, pad from big", std::iter::empty::<i64>())
        .await
        .expect("scan");
    futures::pin_mut!(rows);
    let (mut n, mut bytes) = (0u64, 0u64);
    while let Some(row) = futures::StreamExt::next(&mut rows).await {
        let row = row.expect("row");
        bytes += row.get::<_, &str>(1).len() as u64;
        n += 1;
    }
    assert_eq!((n, bytes), (200_000, 100_000_000));
    let ran = small.await.expect("small statements");
    // They all succeeded (any failure panics above); on two busy cores a few is all there is
    // time for.
    assert!(ran >= 3, "only {ran} small statements ran");
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    sampler.join().expect("sampler");
    let grew = peak
        .load(std::sync::atomic::Ordering::Relaxed)
        .saturating_sub(baseline);
    println!(
        "RSS {} MiB before, grew at most {} MiB (budget {BUDGET_MIB} MiB); {ran} small statements ran",
        baseline >> 20,
        grew >> 20
    );
    // The budget plus a fixed allowance for what is not budgeted: batches in flight,
    // RocksDB's block cache warming up on the scans, and memory the previous statement freed
    // that the allocator has not yet handed back (it does within a second; statements here
    // run back to back).
    assert!(
        grew < (BUDGET_MIB + 128) << 20,
        "RSS grew by {} MiB with a {BUDGET_MIB} MiB budget",
        grew >> 20
    );
    assert!(c.is_running(0));
}
