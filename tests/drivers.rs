//! Real Postgres drivers against a 3-node cluster: tokio-postgres (here, in Rust), psycopg 3
//! and asyncpg (Python programs under `tests/drivers/`) and pgjdbc (a Java program run as a
//! single source file with Debian's `postgresql.jar`). Each connects, creates tables, sends
//! every supported type as a prepared-statement parameter and reads it back unchanged, runs
//! transactions and checks the SQLSTATE of errors. Each driver talks to a different node.

use std::path::Path;
use std::process::Command;

use bini_e2e::{pg_conn_str, pg_connect, wait_for_sql, Cluster};
use bytes::{Buf, BufMut, BytesMut};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use postgres_types::{accepts, to_sql_checked, FromSql, IsNull, ToSql, Type};
use rust_decimal::Decimal;
use tokio_postgres::error::SqlState;

/// INTERVAL in its binary form (postgres-types has no Rust type for it).
#[derive(Debug, PartialEq, Clone, Copy)]
struct Interval {
    micros: i64,
    days: i32,
    months: i32,
}

impl ToSql for Interval {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.put_i64(self.micros);
        out.put_i32(self.days);
        out.put_i32(self.months);
        Ok(IsNull::No)
    }
    accepts!(INTERVAL);
    to_sql_checked!();
}

impl<'a> FromSql<'a> for Interval {
    fn from_sql(
        _: &Type,
        mut raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        if raw.len() != 16 {
            return Err("interval is 16 bytes".into());
        }
        Ok(Interval {
            micros: raw.get_i64(),
            days: raw.get_i32(),
            months: raw.get_i32(),
        })
    }
    accepts!(INTERVAL);
}

async fn connect(addr: &str) -> tokio_postgres::Client {
    pg_connect(&pg_conn_str(addr)).await
}

fn sqlstate(e: &tokio_postgres::Error) -> Option<&SqlState> {
    e.as_db_error().map(|d| d.code())
}

/// The tokio-postgres checks; panics naming the first that fails.
async fn tokio_postgres_checks(addr: &str) {
    let db = connect(addr).await;
    let version: String = db
        .query_one("select version()", &[])
        .await
        .expect("driver call")
        .get(0);
    assert!(!version.is_empty());

    db.batch_execute(
        "drop table if exists tp_types; drop table if exists tp_serial;
         create table tp_types (id int8 primary key, b bool, i2 int2, i4 int4, i8 int8,
           f4 float4, f8 float8, n numeric(12,4), vc varchar(20), c char(5), t text,
           by bytea, d date, ts timestamp, tstz timestamptz, iv interval, u uuid, j jsonb);
         create table tp_serial (id serial primary key, name text)",
    )
    .await
    .expect("DDL");

    // Every type as a binary parameter, read back in binary.
    let ins = db
        .prepare(
            "insert into tp_types values ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18)",
        )
        .await
        .expect("prepare insert");
    let want_types = [
        Type::INT8,
        Type::BOOL,
        Type::INT2,
        Type::INT4,
        Type::INT8,
        Type::FLOAT4,
        Type::FLOAT8,
        Type::NUMERIC,
        Type::VARCHAR,
        Type::BPCHAR,
        Type::TEXT,
        Type::BYTEA,
        Type::DATE,
        Type::TIMESTAMP,
        Type::TIMESTAMPTZ,
        Type::INTERVAL,
        Type::UUID,
        Type::JSONB,
    ];
    // A parameter for a VARCHAR(n) column is unbounded text, as a comparison may be longer.
    let mut want_params = want_types.to_vec();
    want_params[8] = Type::TEXT;
    assert_eq!(ins.params(), want_params, "inferred parameter types");
    let n: Decimal = "12345678.1234".parse().expect("driver call");
    let d = NaiveDate::from_ymd_opt(2024, 2, 29).expect("driver call");
    let ts: NaiveDateTime = d
        .and_hms_micro_opt(13, 14, 15, 123_456)
        .expect("driver call");
    let tstz: DateTime<Utc> = ts.and_utc();
    let iv = Interval {
        micros: 4 * 3_600_000_000 + 5,
        days: 3,
        months: 14,
    };
    let u = uuid::Uuid::parse_str("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11").expect("driver call");
    let j = serde_json::json!({"a": [1, 2.5, "x"], "b": null, "c": {"d": true}});
    let bytes = vec![0u8, 1, 0x7f, 0x80, 0xff];
    let n_ins = db
        .execute(
            &ins,
            &[
                &1i64,
                &true,
                &i16::MIN,
                &i32::MAX,
                &i64::MAX,
                &1.5f32,
                &2.25f64,
                &n,
                &"héllo wörld",
                &"ab",
                &"multi\nline 'quoted' \\ text",
                &bytes,
                &d,
                &ts,
                &tstz,
                &iv,
                &u,
                &j,
            ],
        )
        .await
        .expect("insert every type");
    assert_eq!(n_ins, 1);
    // A row of NULLs, each a NULL of the column's type.
    db.execute(
        &ins,
        &[
            &2i64,
            &None::<bool>,
            &None::<i16>,
            &None::<i32>,
            &None::<i64>,
            &None::<f32>,
            &None::<f64>,
            &None::<Decimal>,
            &None::<String>,
            &None::<String>,
            &None::<String>,
            &None::<Vec<u8>>,
            &None::<NaiveDate>,
            &None::<NaiveDateTime>,
            &None::<DateTime<Utc>>,
            &None::<Interval>,
            &None::<uuid::Uuid>,
            &None::<serde_json::Value>,
        ],
    )
    .await
    .expect("insert NULLs");

    let sel = db
        .prepare("select * from tp_types where id = $1")
        .await
        .expect("prepare select");
    assert_eq!(sel.params(), &[Type::INT8]);
    let got: Vec<Type> = sel.columns().iter().map(|c| c.type_().clone()).collect();
    assert_eq!(got, want_types, "result column types");
    let r = db.query_one(&sel, &[&1i64]).await.expect("select row 1");
    assert!(r.get::<_, bool>(1));
    assert_eq!(r.get::<_, i16>(2), i16::MIN);
    assert_eq!(r.get::<_, i32>(3), i32::MAX);
    assert_eq!(r.get::<_, i64>(4), i64::MAX);
    assert_eq!(r.get::<_, f32>(5), 1.5);
    assert_eq!(r.get::<_, f64>(6), 2.25);
    assert_eq!(r.get::<_, Decimal>(7), n);
    assert_eq!(r.get::<_, String>(8), "héllo wörld");
    assert_eq!(r.get::<_, String>(9), "ab   ");
    assert_eq!(r.get::<_, String>(10), "multi\nline 'quoted' \\ text");
    assert_eq!(r.get::<_, Vec<u8>>(11), bytes);
    assert_eq!(r.get::<_, NaiveDate>(12), d);
    assert_eq!(r.get::<_, NaiveDateTime>(13), ts);
    assert_eq!(r.get::<_, DateTime<Utc>>(14), tstz);
    assert_eq!(r.get::<_, Interval>(15), iv);
    assert_eq!(r.get::<_, uuid::Uuid>(16), u);
    assert_eq!(r.get::<_, serde_json::Value>(17), j);
    let r = db.query_one(&sel, &[&2i64]).await.expect("select row 2");
    for i in 1..18 {
        assert!(
            r.get::<_, Option<postgres_types_any::Any>>(i).is_none(),
            "column {i} of the NULL row is not NULL"
        );
    }

    // The same values as text (simple protocol) agree with Postgres's text forms.
    let rows = db
        .simple_query("select b, i2, n, c, by, ts, tstz, iv, u from tp_types where id = 1")
        .await
        .expect("driver call");
    let tokio_postgres::SimpleQueryMessage::Row(row) = &rows[1] else {
        panic!("no row: {rows:?}");
    };
    let text: Vec<&str> = (0..9).map(|i| row.get(i).expect("driver call")).collect();
    assert_eq!(
        text,
        [
            "t",
            "-32768",
            "12345678.1234",
            "ab   ",
            "\\x00017f80ff",
            "2024-02-29 13:14:15.123456",
            "2024-02-29 13:14:15.123456+00",
            "1 year 2 mons 3 days 04:00:00.000005",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        ]
    );

    // One statement, many executions; SERIAL ids come back through RETURNING.
    let ins = db
        .prepare("insert into tp_serial (name) values ($1) returning id")
        .await
        .expect("driver call");
    let mut ids = Vec::new();
    for name in ["a", "b", "b", "c", "d"] {
        ids.push(
            db.query_one(&ins, &[&name])
                .await
                .expect("driver call")
                .get::<_, i64>(0),
        );
    }
    let mut distinct = ids.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 5, "serial ids {ids:?}");
    let count: i64 = db
        .query_one("select count(*) from tp_serial where name = $1", &[&"b"])
        .await
        .expect("driver call")
        .get(0);
    assert_eq!(count, 2);
    let after: Vec<i64> = db
        .query(
            "select id from tp_serial where id > $1 order by id limit $2",
            &[&distinct[0], &2i64],
        )
        .await
        .expect("driver call")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(after, &distinct[1..3]);

    // Transactions: a commit is seen by another connection, a rollback is not.
    let mut db = db;
    let other = connect(addr).await;
    let txn = db.transaction().await.expect("driver call");
    txn.execute("insert into tp_serial (name) values ($1)", &[&"committed"])
        .await
        .expect("driver call");
    txn.commit().await.expect("driver call");
    let txn = db.transaction().await.expect("driver call");
    txn.execute(
        "insert into tp_serial (name) values ($1)",
        &[&"rolled back"],
    )
    .await
    .expect("driver call");
    txn.rollback().await.expect("driver call");
    let names: Vec<String> = other
        .query(
            "select name from tp_serial where name in ($1, $2) order by name",
            &[&"committed", &"rolled back"],
        )
        .await
        .expect("driver call")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(names, ["committed"]);

    // Errors carry their SQLSTATE, and the connection stays usable.
    let dup = db
        .execute("insert into tp_types (id) values ($1)", &[&1i64])
        .await
        .expect_err("an error");
    assert_eq!(sqlstate(&dup), Some(&SqlState::UNIQUE_VIOLATION), "{dup}");
    let missing = db
        .query("select * from no_such_table", &[])
        .await
        .expect_err("an error");
    assert_eq!(
        sqlstate(&missing),
        Some(&SqlState::UNDEFINED_TABLE),
        "{missing}"
    );
    let div = db.query("select 1/0", &[]).await.expect_err("an error");
    assert_eq!(sqlstate(&div), Some(&SqlState::DIVISION_BY_ZERO), "{div}");
    let syntax = db.query("selec 1", &[]).await.expect_err("an error");
    assert_eq!(sqlstate(&syntax), Some(&SqlState::SYNTAX_ERROR), "{syntax}");
    let one: i64 = db
        .query_one("select 1", &[])
        .await
        .expect("driver call")
        .get(0);
    assert_eq!(one, 1);
}

/// Any value, for checking NULLs of every column type.
mod postgres_types_any {
    use postgres_types::{FromSql, Type};

    pub struct Any;

    impl<'a> FromSql<'a> for Any {
        fn from_sql(
            _: &Type,
            _: &'a [u8],
        ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
            Ok(Any)
        }

        fn accepts(_: &Type) -> bool {
            true
        }
    }
}

/// Runs a driver program; returns a failure description, if it failed.
fn run_program(what: &str, cmd: &mut Command) -> Option<String> {
    let out = match cmd.output() {
        Ok(o) => o,
        Err(e) => return Some(format!("{what}: cannot run {cmd:?}: {e}")),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("--- {what}\n{stdout}{stderr}");
    (!out.status.success()).then(|| format!("{what} failed ({}):\n{stdout}{stderr}", out.status))
}

#[tokio::test(flavor = "multi_thread")]
async fn real_drivers_round_trip_every_type() {
    let c = Cluster::start(3, &[]).await;
    wait_for_sql(&c).await;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("drivers");
    let host_port = |i: usize| {
        let (h, p) = c.nodes[i].addr.rsplit_once(':').expect("driver call");
        (h.to_string(), p.to_string())
    };

    tokio_postgres_checks(&c.nodes[0].addr).await;
    println!("ok: tokio-postgres");

    let mut failures = Vec::new();
    let (h, p) = host_port(1);
    failures.extend(run_program(
        "psycopg 3",
        Command::new("python3")
            .arg(dir.join("psycopg_test.py"))
            .args([&h, &p]),
    ));
    let (h, p) = host_port(2);
    failures.extend(run_program(
        "asyncpg",
        Command::new("python3")
            .arg(dir.join("asyncpg_test.py"))
            .args([&h, &p]),
    ));
    let (h, p) = host_port(0);
    failures.extend(run_program(
        "pgjdbc",
        Command::new("java")
            .args(["-cp", "/usr/share/java/postgresql.jar"])
            .arg(dir.join("JdbcTest.java"))
            .args([&h, &p]),
    ));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
