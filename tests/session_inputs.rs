//! Every input a client sends is honoured or refused, never accepted and ignored: transaction
//! modes (`READ ONLY` refuses writes with 25006), `statement_timeout` (57014, also for a
//! statement computing in memory), `idle_in_transaction_session_timeout` (FATAL 25P03),
//! `SET` of unknown variables or values bini cannot honour (42704 / 0A000 / 22023),
//! `SET LOCAL` / `RESET` / `DISCARD ALL` / `DEALLOCATE`, cancel requests, and the extended
//! protocol's Execute row limit (a suspended portal returns only the rows asked for). Also the
//! wrong results of `IN` / `ANY` over empty sets, through psql and tokio-postgres.

use std::process::Command;
use std::time::{Duration, Instant};

use bini_e2e::{pg_conn_str, pg_connect, wait_for_sql, Cluster};
use tokio_postgres::error::SqlState;

/// The SQLSTATE of a failed statement (panics if it succeeded or lost its connection).
fn code<T: std::fmt::Debug>(r: Result<T, tokio_postgres::Error>, what: &str) -> String {
    let e = r.expect_err(what);
    e.as_db_error()
        .unwrap_or_else(|| panic!("{what}: no SQLSTATE: {e}"))
        .code()
        .code()
        .to_string()
}

async fn show(c: &tokio_postgres::Client, var: &str) -> String {
    c.simple_query(&format!("show {var}"))
        .await
        .expect("show")
        .into_iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .expect("a value")
}

#[tokio::test(flavor = "multi_thread")]
async fn every_session_input_is_honoured_or_refused() {
    let c = Cluster::start(1, &[]).await;
    wait_for_sql(&c).await;
    let addr = c.nodes[0].addr.clone();
    let db = pg_connect(&pg_conn_str(&addr)).await;
    db.batch_execute(
        "create table t (id int primary key, v int);
         insert into t select g, 0 from generate_series(1, 5000) g",
    )
    .await
    .expect("schema");

    // READ ONLY, three ways, refuses writes; reads still work.
    db.batch_execute("begin read only").await.expect("begin");
    let n: i64 = db
        .query_one("select count(*) from t", &[])
        .await
        .expect("read")
        .get(0);
    assert_eq!(n, 5000);
    let e = code(
        db.execute("insert into t values (0, 0)", &[]).await,
        "insert",
    );
    assert_eq!(e, "25006");
    db.batch_execute("rollback").await.expect("rollback");
    db.batch_execute("begin; set transaction read only")
        .await
        .expect("set transaction");
    assert_eq!(show(&db, "transaction_read_only").await, "on");
    let e = code(db.batch_execute("update t set v = 1").await, "update");
    assert_eq!(e, "25006");
    db.batch_execute("rollback").await.expect("rollback");
    db.batch_execute("set default_transaction_read_only = on")
        .await
        .expect("set");
    let e = code(db.batch_execute("delete from t").await, "delete");
    assert_eq!(e, "25006");
    let e = code(db.batch_execute("create table u (a int)").await, "ddl");
    assert_eq!(e, "25006");
    db.batch_execute("begin read write; insert into t values (0, 0); rollback")
        .await
        .expect("READ WRITE overrides the default");
    db.batch_execute("reset default_transaction_read_only")
        .await
        .expect("reset");
    let n: i64 = db
        .query_one("select count(*) from t", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 5000, "nothing was written");
    // Isolation levels run SERIALIZABLE.
    db.batch_execute("begin isolation level read committed")
        .await
        .expect("begin");
    assert_eq!(show(&db, "transaction_isolation").await, "serializable");
    db.batch_execute("commit").await.expect("commit");

    // Variables: unknown names, values bini cannot honour, bad values.
    for (sql, want) in [
        ("set no_such_setting = 1", SqlState::UNDEFINED_OBJECT),
        (
            "set timezone = 'Europe/Paris'",
            SqlState::FEATURE_NOT_SUPPORTED,
        ),
        ("set search_path = myapp", SqlState::FEATURE_NOT_SUPPORTED),
        (
            "set client_encoding = 'LATIN1'",
            SqlState::FEATURE_NOT_SUPPORTED,
        ),
        (
            "set statement_timeout = 'soon'",
            SqlState::INVALID_PARAMETER_VALUE,
        ),
        (
            "set default_transaction_read_only = maybe",
            SqlState::INVALID_PARAMETER_VALUE,
        ),
        ("set lock_timeout = '1s'", SqlState::FEATURE_NOT_SUPPORTED),
        ("show no_such_setting", SqlState::UNDEFINED_OBJECT),
    ] {
        let e = db.batch_execute(sql).await.expect_err(sql);
        assert_eq!(e.code(), Some(&want), "{sql}: {e}");
    }
    assert_eq!(
        show(&db, "timezone").await,
        "UTC",
        "a refused SET changes nothing"
    );
    db.batch_execute("set application_name = 'inputs'; set time zone 'UTC'")
        .await
        .expect("honoured values");
    // SET LOCAL lasts until the block ends; RESET goes back to the default.
    db.batch_execute("begin; set local statement_timeout = '5s'")
        .await
        .expect("set local");
    assert_eq!(show(&db, "statement_timeout").await, "5000");
    db.batch_execute("commit").await.expect("commit");
    assert_eq!(show(&db, "statement_timeout").await, "0");
    db.batch_execute("set extra_float_digits = 3; reset extra_float_digits")
        .await
        .expect("reset");
    assert_eq!(show(&db, "extra_float_digits").await, "1");

    // statement_timeout stops a statement computing in memory, and one reading rows.
    db.batch_execute("set statement_timeout = '1s'")
        .await
        .expect("set");
    for sql in [
        "select count(*) from generate_series(1, 100000) a, generate_series(1, 100000) b",
        "select count(*) from t a, t b, t c",
    ] {
        let started = Instant::now();
        let e = code(db.query_one(sql, &[]).await, sql);
        assert_eq!(e, "57014", "{sql}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{sql} ran {:?} past a 1 s timeout",
            started.elapsed()
        );
    }
    db.batch_execute("set statement_timeout = 0")
        .await
        .expect("set");

    // A cancel request stops a statement computing in memory.
    let token = db.cancel_token();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        token
            .cancel_query(tokio_postgres::NoTls)
            .await
            .expect("cancel");
    });
    let started = Instant::now();
    let e = code(
        db.query_one(
            "select count(*) from generate_series(1, 100000) a, generate_series(1, 100000) b",
            &[],
        )
        .await,
        "canceled",
    );
    assert_eq!(e, "57014");
    assert!(started.elapsed() < Duration::from_secs(10));
    canceller.await.expect("canceller");
    assert_eq!(
        db.query_one("select 1::int8", &[])
            .await
            .expect("the session carries on")
            .get::<_, i64>(0),
        1
    );

    // DEALLOCATE drops a prepared statement; DISCARD ALL drops them all and resets variables.
    // (By name through raw messages: drivers do not show their statement names.)
    deallocate_by_name(&addr);
    let e = code(db.batch_execute("deallocate no_such").await, "unknown");
    assert_eq!(e, "26000");
    let st = db.prepare("select 1::int8").await.expect("prepare");
    db.batch_execute("set application_name = 'before-discard'; discard all")
        .await
        .expect("discard all");
    assert_eq!(show(&db, "application_name").await, "");
    assert_eq!(code(db.query_one(&st, &[]).await, "discarded"), "26000");
    let e = code(db.batch_execute("begin; discard all").await, "in a block");
    assert_eq!(e, "25001");
    db.batch_execute("rollback").await.expect("rollback");

    // The Execute row limit suspends the portal: each Execute returns what it asks for.
    let mut conn = pg_connect(&pg_conn_str(&addr)).await;
    let tx = conn.transaction().await.expect("begin");
    let portal = tx
        .bind("select id from t order by id", &[])
        .await
        .expect("bind");
    let mut seen = 0;
    loop {
        let rows = tx.query_portal(&portal, 700).await.expect("execute");
        assert!(
            rows.len() <= 700,
            "one Execute returned {} rows",
            rows.len()
        );
        if let Some(first) = rows.first() {
            assert_eq!(first.get::<_, i64>(0), seen + 1, "rows in order, none lost");
        }
        seen += rows.len() as i64;
        if rows.len() < 700 {
            break;
        }
    }
    assert_eq!(seen, 5000);
    tx.commit().await.expect("commit");

    // idle_in_transaction_session_timeout closes a session idle in a block.
    let idle = pg_connect(&pg_conn_str(&addr)).await;
    idle.batch_execute("set idle_in_transaction_session_timeout = '300ms'; begin")
        .await
        .expect("begin");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let e = idle
        .query_one("select 1::int8", &[])
        .await
        .expect_err("the session was closed");
    let closed_right = idle.is_closed()
        || e.as_db_error()
            .is_some_and(|d| d.code() == &SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT);
    assert!(closed_right, "not closed for idling: {e}");

    // IN and ANY over empty sets, and a NULL looked for in them.
    let r = db
        .query_one(
            "select null::int in (select 1 where false), \
                    null::int not in (select 1 where false), \
                    1 in (select 1 where false), \
                    null::text = any('{}')",
            &[],
        )
        .await
        .expect("empty sets");
    assert_eq!(
        (
            r.get::<_, Option<bool>>(0),
            r.get::<_, Option<bool>>(1),
            r.get::<_, Option<bool>>(2),
            r.get::<_, Option<bool>>(3)
        ),
        (Some(false), Some(true), Some(false), Some(false))
    );

    // Through psql as well: READ ONLY, and the SQLSTATEs it shows.
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
            "-v",
            "VERBOSITY=verbose",
            "-c",
            "begin read only",
            "-c",
            "insert into t values (-1, 0)",
            "-c",
            "rollback",
            "-c",
            "set statement_timeout = '200ms'",
            "-c",
            "select count(*) from generate_series(1, 100000) a, generate_series(1, 100000) b",
        ])
        .output()
        .expect("run psql");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("25006") && stderr.contains("read-only transaction"),
        "{stderr}"
    );
    assert!(
        stderr.contains("57014") && stderr.contains("statement timeout"),
        "{stderr}"
    );
    assert!(c.is_running(0));
}

fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![kind];
    m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// Prepares statement `st1` (Parse), drops it with `DEALLOCATE st1`, then finds it gone: a
/// Bind to it fails, and so does a second DEALLOCATE (26000).
fn deallocate_by_name(addr: &str) {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s.write_all(&startup()).expect("startup");
    read_until(&mut s, b'Z').expect("ready");
    let parse = [cstr("st1"), cstr("select 1"), vec![0, 0]].concat();
    s.write_all(&[message(b'P', &parse), message(b'S', &[])].concat())
        .expect("parse");
    read_until(&mut s, b'1').expect("ParseComplete");
    read_until(&mut s, b'Z').expect("ready");
    s.write_all(&message(b'Q', &cstr("deallocate st1")))
        .expect("deallocate");
    let done = read_until(&mut s, b'C').expect("CommandComplete");
    assert!(String::from_utf8_lossy(&done).contains("DEALLOCATE"));
    read_until(&mut s, b'Z').expect("ready");
    let bind = [cstr(""), cstr("st1"), vec![0, 0, 0, 0, 0, 0]].concat();
    s.write_all(&[message(b'B', &bind), message(b'S', &[])].concat())
        .expect("bind");
    let e = read_until(&mut s, b'E').expect("Bind to a dropped statement fails");
    assert!(String::from_utf8_lossy(&e).contains("26000"), "{e:?}");
    read_until(&mut s, b'Z').expect("ready");
    s.write_all(&message(b'Q', &cstr("deallocate st1")))
        .expect("deallocate again");
    let e = read_until(&mut s, b'E').expect("error");
    assert!(String::from_utf8_lossy(&e).contains("26000"), "{e:?}");
}

/// A startup message for `root` on `defaultdb`.
fn startup() -> Vec<u8> {
    let mut body = 196608u32.to_be_bytes().to_vec();
    for s in ["user", "root", "database", "defaultdb", ""] {
        body.extend_from_slice(s.as_bytes());
        body.push(0);
    }
    let mut m = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    m.extend_from_slice(&body);
    m
}

/// Reads backend messages until one of type `kind` (returning its body) or the end.
fn read_until(s: &mut std::net::TcpStream, kind: u8) -> Option<Vec<u8>> {
    use std::io::Read;
    loop {
        let mut header = [0u8; 5];
        s.read_exact(&mut header).ok()?;
        let len = u32::from_be_bytes(header[1..5].try_into().ok()?) as usize;
        let mut body = vec![0u8; len.saturating_sub(4)];
        s.read_exact(&mut body).ok()?;
        if header[0] == kind {
            return Some(body);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_over_the_limit_ends_its_connection_only() {
    use std::io::Write;
    let c = Cluster::start(1, &[]).await;
    wait_for_sql(&c).await;
    let addr = c.nodes[0].addr.clone();
    let mut s = std::net::TcpStream::connect(&addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s.write_all(&startup()).expect("startup");
    read_until(&mut s, b'Z').expect("ready for query");
    // A Query message announcing 1 GiB, then its first bytes: refused from the header,
    // before anything is buffered.
    let mut header = vec![b'Q'];
    header.extend_from_slice(&(1u32 << 30).to_be_bytes());
    s.write_all(&header).expect("header");
    let _ = s.write_all(&vec![b'x'; 1 << 20]);
    let error = read_until(&mut s, b'E').expect("an ErrorResponse");
    let text = String::from_utf8_lossy(&error);
    assert!(text.contains("FATAL") && text.contains("54000"), "{text}");
    // The connection is closed; the node and its other clients are not.
    assert!(
        read_until(&mut s, b'Z').is_none(),
        "the connection stays open"
    );
    let other = pg_connect(&pg_conn_str(&addr)).await;
    other.simple_query("select 1").await.expect("node serves");
    assert!(c.is_running(0));
}
