//! SQL end to end: WALKTHROUGH step 4 on a 3-node cluster of real processes, through
//! `bini sql` and through `psql`, against each node in turn.

use std::process::{Command, Output};
use std::time::Duration;

use bini_e2e::{bini_bin, wait_for, Cluster};

fn bini_sql(addr: &str, args: &[&str]) -> Output {
    Command::new(bini_bin())
        .args(["sql", "--insecure", "--host", addr])
        .args(args)
        .output()
        .expect("run bini sql")
}

fn psql(addr: &str, sql: &str) -> Output {
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    Command::new("psql")
        .args([
            "-h",
            host,
            "-p",
            port,
            "-U",
            "root",
            "-d",
            "defaultdb",
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ])
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .expect("run psql (postgresql-client)")
}

/// psql's own table layout (not `-A -t`), each line's trailing blanks dropped.
fn psql_display(addr: &str, cmd: &str) -> String {
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    let out = Command::new("psql")
        .args([
            "-h",
            host,
            "-p",
            port,
            "-U",
            "root",
            "-d",
            "defaultdb",
            "-X",
        ])
        .args(["-v", "ON_ERROR_STOP=1", "-c", cmd])
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .expect("run psql (postgresql-client)");
    assert!(out.status.success(), "{cmd}: {}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .map(|l| format!("{}\n", l.trim_end()))
        .collect()
}

async fn pg_connect_node(c: &Cluster, i: usize) -> tokio_postgres::Client {
    bini_e2e::pg_connect(&bini_e2e::pg_conn_str(&c.nodes[i].addr)).await
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Waits until every node answers SQL (the default database exists once the cluster has
/// bootstrapped its catalog).
async fn wait_for_sql(c: &Cluster) {
    for n in &c.nodes {
        wait_for(Duration::from_secs(60), "SQL to answer", || async {
            let out = bini_sql(&n.addr, &["-e", "show databases"]);
            (out.status.success() && text(&out.stdout).contains("defaultdb")).then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn walkthrough_step_4_through_bini_sql_and_psql_on_every_node() {
    let c = Cluster::start(3, &[]).await;
    wait_for_sql(&c).await;
    let first = &c.nodes[0].addr;

    for stmt in [
        "create database bank",
        "create table bank.accounts (name varchar(255), balance decimal)",
        "insert into bank.accounts values ('Andy',100),('Bob',200),('Chris',300)",
    ] {
        let out = bini_sql(first, &["-e", stmt]);
        assert!(
            out.status.success(),
            "{stmt}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
    let want = "  name  | balance\n\
                --------+----------\n  \
                Andy  |     100\n  \
                Bob   |     200\n  \
                Chris |     300\n\
                (3 rows)\n";
    for n in &c.nodes {
        let out = bini_sql(&n.addr, &["-e", "select * from bank.accounts"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout), want, "through {}", n.addr);

        let out = psql(&n.addr, "select * from bank.accounts");
        assert!(out.status.success(), "psql: {}", text(&out.stderr));
        assert_eq!(
            text(&out.stdout),
            "Andy|100\nBob|200\nChris|300\n",
            "psql through {}",
            n.addr
        );
    }

    // The same session keeps its database; statements on one line run in order.
    let out = bini_sql(
        first,
        &[
            "-d",
            "bank",
            "-e",
            "update accounts set balance = balance - 50 where name = 'Andy'; \
             select sum(balance) from accounts",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("550"), "{}", text(&out.stdout));
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_carry_a_message_a_sqlstate_and_a_non_zero_exit() {
    let c = Cluster::start(1, &[]).await;
    wait_for_sql(&c).await;
    let addr = &c.nodes[0].addr;

    let out = bini_sql(addr, &["-e", "select * from nope"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("ERROR: relation \"nope\" does not exist"),
        "{err}"
    );
    assert!(err.contains("SQLSTATE: 42P01"), "{err}");

    // A unique violation, through psql: the node says which key.
    let out = psql(
        addr,
        "create table t (id int primary key, v string); insert into t values (1, 'a')",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = psql(addr, "insert into t values (1, 'b')");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("duplicate key value violates unique constraint"),
        "{}",
        text(&out.stderr)
    );

    // Bad input never takes the node down: it still answers.
    let out = psql(addr, "selec 1");
    assert!(text(&out.stderr).contains("syntax error") || !out.status.success());
    let out = psql(addr, "select v from t where id = 1");
    assert_eq!(text(&out.stdout), "a\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn as_of_system_time_reads_the_past_on_any_node() {
    let c = Cluster::start(3, &[]).await;
    wait_for_sql(&c).await;
    let connect = |i: usize| pg_connect_node(&c, i);
    let a = connect(0).await;
    a.batch_execute(
        "create table hist (k int primary key, v text); insert into hist values (1, 'old')",
    )
    .await
    .expect("setup");
    // A timestamp after the insert and before the update: a later statement's now(), one
    // microsecond up (its text form is truncated to microseconds).
    let between: String = a
        .query_one("select (now() + interval '1 microsecond')::string", &[])
        .await
        .expect("now")
        .get(0);
    a.batch_execute("update hist set v = 'new' where k = 1; insert into hist values (2, 'x')")
        .await
        .expect("update");
    for i in 0..3 {
        let b = connect(i).await;
        let old: Vec<(i64, String)> = b
            .query(
                &format!("select k, v from hist as of system time '{between}' order by k"),
                &[],
            )
            .await
            .expect("AS OF SYSTEM TIME read")
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        assert_eq!(old, [(1, "old".to_string())], "node {i} at {between}");
        let now: i64 = b
            .query_one("select count(*) from hist", &[])
            .await
            .expect("current read")
            .get(0);
        assert_eq!(now, 2);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn explain_shows_spans_and_show_ranges_lists_a_tables_ranges() {
    let c = Cluster::start(3, &[]).await;
    wait_for_sql(&c).await;
    let db = pg_connect_node(&c, 1).await;
    db.batch_execute(
        "create table spans (k int primary key, v text); insert into spans values (1, 'a')",
    )
    .await
    .expect("setup");
    let rows = |msgs: Vec<tokio_postgres::SimpleQueryMessage>| -> Vec<Vec<String>> {
        msgs.into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                    (0..r.len())
                        .map(|i| r.get(i).unwrap_or("NULL").to_string())
                        .collect(),
                ),
                _ => None,
            })
            .collect()
    };
    let plan = rows(
        db.simple_query("explain select * from spans where k in (1, 2)")
            .await
            .expect("explain"),
    );
    let scan = &plan.last().expect("a scan line")[0];
    // Two keys of the primary index (index 1) of the table.
    let re_table = scan
        .split("/Table/")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .expect("a /Table/<id> span");
    assert!(
        scan.contains("2 point lookup(s)")
            && scan.matches(&format!("/Table/{re_table}/1/")).count() == 2,
        "{plan:?}"
    );
    let plan = rows(
        db.simple_query("explain select * from spans")
            .await
            .expect("explain"),
    );
    let scan = &plan.last().expect("a scan line")[0];
    assert!(
        scan.ends_with(&format!("/Table/{re_table}/1 - /Table/{re_table}/2")),
        "{plan:?}"
    );

    // A range of the primary key reads one span of it, from the bound to the bound.
    let plan = rows(
        db.simple_query("explain select * from spans where k > 1 and k <= 5")
            .await
            .expect("explain"),
    );
    let scan = &plan.last().expect("a scan line")[0];
    assert!(
        scan.contains("1 span(s) of index spans_pkey")
            && scan.contains(&format!("/Table/{re_table}/1/")),
        "{plan:?}"
    );
    // A join on the primary key of the right table looks its rows up.
    db.batch_execute("create table refs (id int primary key, k int)")
        .await
        .expect("refs");
    let plan = rows(
        db.simple_query(
            "explain select * from refs join spans on spans.k = refs.k where refs.id = 3",
        )
        .await
        .expect("explain"),
    );
    assert!(
        plan.len() == 3
            && plan[1][0]
                .trim()
                .starts_with("lookup Inner join: 1 key column(s) of spans@spans_pkey")
            && plan[2][0]
                .trim()
                .starts_with("scan refs: 1 point lookup(s)"),
        "{plan:?}"
    );

    db.batch_execute("create index spans_v on spans (v)")
        .await
        .expect("index");
    let plan = rows(
        db.simple_query("explain select k from spans where v = 'a'")
            .await
            .expect("explain"),
    );
    let scan = &plan.last().expect("a scan line")[0];
    assert!(
        scan.contains("1 span(s) of index spans_v")
            && scan.contains(&format!("/Table/{re_table}/2/")),
        "{plan:?}"
    );
    let ranges = rows(
        db.simple_query("show ranges from table spans")
            .await
            .expect("show ranges"),
    );
    assert!(!ranges.is_empty(), "no ranges");
    for r in &ranges {
        let [start, end, id, replicas, _lease] = r.as_slice() else {
            panic!("columns: {r:?}");
        };
        assert!(id.parse::<u64>().is_ok(), "{r:?}");
        // Node ids in braces (up-replication to three may still be under way).
        let ids = replicas.trim_start_matches('{').trim_end_matches('}');
        assert!(
            ids.split(',').all(|n| n.parse::<u64>().is_ok()),
            "replicas: {r:?}"
        );
        assert_ne!(start, end, "{r:?}");
    }
    let err = db
        .simple_query("show ranges from table nope")
        .await
        .expect_err("ranges of a missing table");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE)
    );
    // Sessions and statements of the node: this connection, running the query that asks.
    db.batch_execute("set application_name = 'spans-test'")
        .await
        .expect("set");
    let me = rows(
        db.simple_query(
            "select user_name, database_name, application_name, active_query, txn_state \
             from bini_internal.sessions where application_name = 'spans-test'",
        )
        .await
        .expect("sessions"),
    );
    assert_eq!(me.len(), 1, "{me:?}");
    assert_eq!(me[0][..3], ["root", "defaultdb", "spans-test"]);
    assert!(me[0][3].contains("bini_internal.sessions"), "{me:?}");
    assert_eq!(me[0][4], "idle");
    for _ in 0..3 {
        let _ = db.simple_query("select v from spans where k = 1").await;
    }
    let _ = db.simple_query("select 1/0").await;
    let stats = rows(
        db.simple_query(
            "select statement, count, errors from bini_internal.statements \
             where statement = 'SELECT v FROM spans WHERE k = 1' or statement = 'SELECT 1 / 0'",
        )
        .await
        .expect("statements"),
    );
    let mut stats = stats;
    stats.sort();
    assert_eq!(
        stats,
        [
            ["SELECT 1 / 0", "1", "1"].map(String::from).to_vec(),
            ["SELECT v FROM spans WHERE k = 1", "3", "0"]
                .map(String::from)
                .to_vec(),
        ],
    );

    let err = db
        .simple_query("select * from bini_internal.nope")
        .await
        .expect_err("no such virtual table");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn psql_lists_databases_tables_schemas_and_indexes() {
    let c = Cluster::start(3, &[]).await;
    wait_for_sql(&c).await;
    let addr = &c.nodes[2].addr;
    let out = psql(
        addr,
        "create table users (id int primary key, name string); \
         create index users_name on users (name)",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    for (cmd, want) in [
        ("\\l", "defaultdb|root|UTF8|C.UTF-8|C.UTF-8||libc|\n"),
        ("\\dt", "public|users|table|root\n"),
        ("\\d", "public|users|table|root\n"),
        ("\\dn", "bini_internal|root\npublic|root\n"),
        (
            "\\di",
            "public|users_name|index|root|users\npublic|users_pkey|index|root|users\n",
        ),
    ] {
        let out = psql(addr, cmd);
        assert!(out.status.success(), "{cmd}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), want, "{cmd}");
    }
    // `\d TABLE` describes columns, indexes and checks as psql shows them for Postgres.
    let out = psql(
        addr,
        "create table accounts (id serial primary key, name varchar(50) not null, \
         email text unique, age int check (age >= 0), created timestamptz default now()); \
         create index accounts_name on accounts (name)",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        psql_display(addr, "\\d accounts"),
        r#"                          Table "public.accounts"
 Column  |           Type           | Collation | Nullable |    Default
---------+--------------------------+-----------+----------+----------------
 id      | bigint                   |           | not null | unique_rowid()
 name    | character varying(50)    |           | not null |
 email   | text                     |           |          |
 age     | bigint                   |           |          |
 created | timestamp with time zone |           |          | now()
Indexes:
    "accounts_pkey" PRIMARY KEY, btree (id)
    "accounts_email_key" UNIQUE CONSTRAINT, btree (email)
    "accounts_name" btree (name)
Check constraints:
    "accounts_age_check" CHECK (age >= 0)

"#
    );
    assert_eq!(
        psql_display(addr, "\\du"),
        r#"                                   List of roles
 Role name |                         Attributes                         | Member of
-----------+------------------------------------------------------------+-----------
 root      | Superuser, Create role, Create DB, Replication, Bypass RLS | {}

"#
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn copy_from_stdin_loads_rows_in_the_text_format() {
    use futures::SinkExt;
    let c = Cluster::start(3, &[]).await;
    wait_for_sql(&c).await;
    let db = pg_connect_node(&c, 0).await;
    db.batch_execute("create table copied (id int primary key, name text, score decimal)")
        .await
        .expect("create");
    // 1,200 rows (several insert batches), split across CopyData messages mid-line.
    let mut data = String::new();
    for i in 0..1200 {
        let name = match i % 3 {
            0 => "\\N".to_string(),
            1 => format!("tab\\there {i}"),
            _ => format!("it's {i}"),
        };
        data += &format!("{i}\t{name}\t{}.5\n", i % 7);
    }
    let sink = db
        .copy_in("copy copied from stdin with (format text)")
        .await
        .expect("COPY starts");
    futures::pin_mut!(sink);
    for chunk in data.as_bytes().chunks(777) {
        sink.send(bytes::Bytes::copy_from_slice(chunk))
            .await
            .expect("CopyData");
    }
    let n = sink.finish().await.expect("COPY completes");
    assert_eq!(n, 1200);
    let row = db
        .query_one(
            "select count(*), count(name), sum(score)::text from copied",
            &[],
        )
        .await
        .expect("count");
    assert_eq!(
        (
            row.get::<_, i64>(0),
            row.get::<_, i64>(1),
            row.get::<_, String>(2)
        ),
        (1200, 800, "4194.0".to_string())
    );
    let tabbed: String = db
        .query_one("select name from copied where id = 4", &[])
        .await
        .expect("row 4")
        .get(0);
    assert_eq!(tabbed, "tab\there 4");

    // A malformed row fails the COPY with a SQLSTATE; the connection carries on.
    let sink = db
        .copy_in("copy copied (id, name) from stdin")
        .await
        .expect("COPY starts");
    futures::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"5000\tok\n5001\n"))
        .await
        .expect("CopyData");
    let err = sink.finish().await.expect_err("a row with one column");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::INVALID_TEXT_REPRESENTATION),
        "{err}"
    );
    let one: i32 = db
        .query_one("select 1::int4", &[])
        .await
        .expect("still usable")
        .get(0);
    assert_eq!(one, 1);

    // A COPY is all or nothing: a bad row after thousands of good ones (inserted batch by
    // batch) leaves none of them.
    let sink = db
        .copy_in("copy copied (id, name) from stdin")
        .await
        .expect("COPY starts");
    futures::pin_mut!(sink);
    let mut data = String::new();
    for i in 10_000..15_000 {
        data += &format!("{i}\tgood\n");
    }
    data += "oops\tbad\n";
    sink.send(bytes::Bytes::from(data)).await.expect("CopyData");
    let err = sink.finish().await.expect_err("a row with a bad id");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::INVALID_TEXT_REPRESENTATION),
        "{err}"
    );
    let n: i64 = db
        .query_one("select count(*) from copied", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 1200, "rows of the failed COPY remain");
}

/// CREATE INDEX on a table that keeps taking writes from another node: the writer goes on
/// during the build, and afterwards every lookup through the index finds exactly the rows a
/// scan of the table finds.
#[tokio::test(flavor = "multi_thread")]
async fn create_index_backfills_while_the_table_takes_writes() {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;

    let c = Cluster::start(3, &[]).await;
    wait_for_sql(&c).await;
    let db = pg_connect_node(&c, 0).await;
    db.batch_execute(
        "create table events (id int primary key, kind int, note text); \
         insert into events select g, g % 50, 'n' from generate_series(1, 20000) as g",
    )
    .await
    .expect("load events");

    let writer = pg_connect_node(&c, 1).await;
    let (stop, building) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let (rounds, during) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let task = {
        let (stop, building) = (stop.clone(), building.clone());
        let (rounds, during) = (rounds.clone(), during.clone());
        tokio::spawn(async move {
            let mut i: i64 = 0;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let was_building = building.load(Ordering::SeqCst);
                let (new, moved, gone) = (20_000 + i, i * 7 % 20_000 + 1, i * 13 % 20_000 + 1);
                writer
                    .execute(
                        "insert into events values ($1, $2, 'w')",
                        &[&new, &(new % 50)],
                    )
                    .await
                    .expect("insert during the build");
                writer
                    .execute(
                        "update events set kind = (kind + 1) % 50 where id = $1",
                        &[&moved],
                    )
                    .await
                    .expect("update during the build");
                writer
                    .execute("delete from events where id = $1", &[&gone])
                    .await
                    .expect("delete during the build");
                rounds.fetch_add(1, Ordering::SeqCst);
                if was_building && building.load(Ordering::SeqCst) {
                    during.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    };
    wait_for(
        Duration::from_secs(30),
        "the writer to get going",
        || async { (rounds.load(Ordering::SeqCst) >= 3).then_some(()) },
    )
    .await;
    building.store(true, Ordering::SeqCst);
    db.batch_execute("create index events_kind on events (kind)")
        .await
        .expect("create index while the table takes writes");
    building.store(false, Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    task.await.expect("writer");
    assert!(
        during.load(Ordering::SeqCst) > 0,
        "no write went through while the index was being built"
    );

    // What a scan of the primary index says, against what the index finds.
    let mut want: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for r in db
        .query("select id, kind from events", &[])
        .await
        .expect("scan")
    {
        want.entry(r.get(1)).or_default().push(r.get(0));
    }
    let plan = db
        .simple_query("explain select id from events where kind = 7")
        .await
        .expect("explain");
    let plan: Vec<String> = plan
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .collect();
    assert!(
        plan.iter().any(|l| l.contains("events_kind")),
        "the index is not used: {plan:?}"
    );
    for kind in 0..50i64 {
        let mut got: Vec<i64> = db
            .query("select id from events where kind = $1", &[&kind])
            .await
            .expect("lookup by kind")
            .iter()
            .map(|r| r.get(0))
            .collect();
        got.sort();
        let mut expected = want.get(&kind).cloned().unwrap_or_default();
        expected.sort();
        assert_eq!(got, expected, "kind {kind}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn schema_changes_on_one_node_are_seen_at_once_by_the_others() {
    // Each node caches the descriptors its statements use; a change made through one node
    // must show in the very next statement on another, however warm its cache.
    let c = Cluster::start(3, &[]).await;
    wait_for_sql(&c).await;
    let a = pg_connect_node(&c, 0).await;
    let b = pg_connect_node(&c, 1).await;
    a.batch_execute(
        "create table cached (id int primary key, v text); insert into cached values (1, 'x')",
    )
    .await
    .expect("setup");
    for _ in 0..3 {
        b.query("select v from cached where id = 1", &[])
            .await
            .expect("warm the cache on node 2");
    }
    a.batch_execute("alter table cached add column n int; alter table cached rename column v to w")
        .await
        .expect("alter");
    b.execute("insert into cached (id, w, n) values (2, 'y', 7)", &[])
        .await
        .expect("node 2 writes the new columns");
    let rows = b
        .query("select id, w, n from cached order by id", &[])
        .await
        .expect("node 2 reads the new columns");
    let got: Vec<(i64, String, Option<i64>)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(got, vec![(1, "x".into(), None), (2, "y".into(), Some(7))]);

    // A transaction on node 2 that read the table before node 1 dropped it cannot commit a
    // write to it as if it still existed.
    b.batch_execute("begin; insert into cached (id, w) values (3, 'z')")
        .await
        .expect("begin and write");
    a.batch_execute("drop table cached").await.expect("drop");
    let committed = b.batch_execute("commit").await;
    let rows = a
        .query(
            "select count(*) from pg_class where relname = 'cached'",
            &[],
        )
        .await
        .expect("catalog");
    let n: i64 = rows[0].get(0);
    assert_eq!(n, 0, "the table is gone (commit on node 2: {committed:?})");
    let err = b
        .query("select * from cached", &[])
        .await
        .expect_err("node 2 no longer sees the table");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_request_stops_the_running_statement() {
    let c = Cluster::start(3, &[]).await;
    wait_for_sql(&c).await;
    let db = pg_connect_node(&c, 0).await;
    db.batch_execute("create table few (a int primary key); insert into few values (1)")
        .await
        .expect("setup");
    // A correlated subquery per row of a long series: seconds of work, one read per row.
    let slow = "select (select count(*) from few where a = g) from generate_series(1, 1000000) g";
    let token = db.cancel_token();
    let watcher = pg_connect_node(&c, 0).await;
    let started = std::time::Instant::now();
    let (result, ()) = tokio::join!(db.query(slow, &[]), async {
        // Cancel once the node shows the statement running.
        wait_for(Duration::from_secs(30), "the statement to run", || async {
            let rows = watcher
                .query(
                    "select count(*) from bini_internal.sessions \
                     where active_query like '%1000000%' \
                     and active_query not like '%bini_internal%'",
                    &[],
                )
                .await
                .ok()?;
            (rows[0].get::<_, i64>(0) > 0).then_some(())
        })
        .await;
        token
            .cancel_query(tokio_postgres::NoTls)
            .await
            .expect("cancel request");
    });
    let err = result.expect_err("the statement is canceled");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::QUERY_CANCELED),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "canceled only after {:?}",
        started.elapsed()
    );
    // The session carries on.
    let one: i32 = db
        .query_one("select 1::int4", &[])
        .await
        .expect("usable after cancel")
        .get(0);
    assert_eq!(one, 1);
}
