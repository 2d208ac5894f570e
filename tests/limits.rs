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
