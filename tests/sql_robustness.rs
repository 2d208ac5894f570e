//! Nothing a SQL client sends crashes a node: 10,000 generated statements (well-formed ones
//! over a small schema, mutations of them, token soup and raw bytes) through the simple and
//! the extended protocol, then malformed protocol messages on raw sockets. Every statement
//! must end in a result or an error carrying a SQLSTATE, on a connection that stays open,
//! and every node must still answer afterwards.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bini_e2e::{pg_conn_str, pg_connect, wait_for_sql, Cluster};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_postgres::NoTls;

const STATEMENTS: usize = 10_000;

const TYPES: &[&str] = &[
    "INT",
    "INT2",
    "INT4",
    "INT8",
    "FLOAT4",
    "FLOAT8",
    "DECIMAL",
    "DECIMAL(5,2)",
    "TEXT",
    "VARCHAR(3)",
    "CHAR(2)",
    "STRING",
    "BYTEA",
    "BOOL",
    "DATE",
    "TIMESTAMP",
    "TIMESTAMPTZ",
    "INTERVAL",
    "UUID",
    "JSONB",
];

const FUNCTIONS: &[&str] = &[
    "abs",
    "ceil",
    "floor",
    "round",
    "sqrt",
    "power",
    "mod",
    "length",
    "lower",
    "upper",
    "substring",
    "substr",
    "trim",
    "ltrim",
    "rtrim",
    "replace",
    "concat",
    "left",
    "right",
    "strpos",
    "repeat",
    "reverse",
    "split_part",
    "coalesce",
    "nullif",
    "greatest",
    "least",
    "now",
    "date_trunc",
    "extract",
    "age",
    "to_char",
    "gen_random_uuid",
    "md5",
    "random",
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "string_agg",
    "jsonb_typeof",
    "no_such_function",
];

const COLUMNS: &[&str] = &["a", "b", "c", "d", "e", "f", "g", "j", "zz", "t1.a", "t2.x"];

const KEYWORDS: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "GROUP",
    "BY",
    "ORDER",
    "LIMIT",
    "OFFSET",
    "INSERT",
    "INTO",
    "VALUES",
    "UPDATE",
    "SET",
    "DELETE",
    "CREATE",
    "TABLE",
    "DROP",
    "INDEX",
    "ON",
    "JOIN",
    "LEFT",
    "UNION",
    "ALL",
    "DISTINCT",
    "AS",
    "AND",
    "OR",
    "NOT",
    "NULL",
    "IS",
    "IN",
    "EXISTS",
    "CASE",
    "WHEN",
    "THEN",
    "ELSE",
    "END",
    "CAST",
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "SAVEPOINT",
    "WITH",
    "HAVING",
    "(",
    ")",
    ",",
    ";",
    "*",
    "+",
    "-",
    "/",
    "%",
    "=",
    "<>",
    "<",
    ">=",
    "||",
    "->",
    "->>",
    "::",
    "'",
    "\"",
    "$1",
    "$0",
    "$99999999999",
    "t1",
    "t2",
    "a",
    "b",
    "1",
    "'x'",
];

struct Gen {
    rng: StdRng,
}

impl Gen {
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.rng.random_range(0..xs.len())]
    }

    fn literal(&mut self) -> String {
        match self.rng.random_range(0..16) {
            0 => "NULL".into(),
            1 => self.rng.random_range(-5i64..100).to_string(),
            2 => self
                .pick(&[
                    "9223372036854775807",
                    "-9223372036854775808",
                    "9223372036854775808",
                    "32768",
                    "0",
                    "-0",
                    "1e308",
                    "1e309",
                    "-1e-400",
                    "99999999999999999999999999999999999999",
                ])
                .into(),
            3 => format!(
                "{}.{}",
                self.rng.random_range(-999..999),
                self.rng.random_range(0..99999)
            ),
            4 => self.pick(&["true", "false"]).into(),
            5 => self
                .pick(&[
                    "''",
                    "'abc'",
                    "'é中🙂'",
                    "'it''s'",
                    "'\\x00ff'",
                    "'NaN'",
                    "'Infinity'",
                    "'-infinity'",
                    "E'\\n\\t'",
                    "'     '",
                ])
                .into(),
            6 => self
                .pick(&[
                    "'2024-02-29'",
                    "'2023-02-29'",
                    "'0001-01-01'",
                    "'9999-12-31 23:59:59.999999'",
                    "'294277-01-01'",
                    "'2024-01-01 25:00:00'",
                    "'2024-06-01 12:00:00+14'",
                ])
                .into(),
            7 => self
                .pick(&[
                    "'1 day'",
                    "'-1 year 2 mons'",
                    "'999999999 years'",
                    "'1.5 hours'",
                    "'P1D'",
                    "'banana'",
                ])
                .into(),
            8 => self
                .pick(&[
                    "'{}'",
                    "'[1, 2, {\"a\": null}]'",
                    "'{\"a\": {\"b\": [1e400]}}'",
                    "'{bad json'",
                    "'\"str\"'",
                ])
                .into(),
            9 => self
                .pick(&[
                    "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'",
                    "'not-a-uuid'",
                    "'{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}'",
                ])
                .into(),
            10 => format!("'{}'", "x".repeat(self.rng.random_range(0..3000))),
            11 => format!("${}", self.rng.random_range(0..4)),
            12 => format!("{}::{}", self.rng.random_range(-3..300), self.pick(TYPES)),
            13 => "ARRAY[1, 2]".into(),
            14 => format!("DATE {}", self.pick(&["'2024-01-01'", "'nope'"])),
            _ => format!(
                "INTERVAL '{} {}'",
                self.rng.random_range(-9..99),
                self.pick(&["days", "hours", "x"])
            ),
        }
    }

    fn expr(&mut self, depth: u32) -> String {
        if depth == 0 {
            return if self.rng.random_bool(0.5) {
                self.pick(COLUMNS).into()
            } else {
                self.literal()
            };
        }
        let d = depth - 1;
        match self.rng.random_range(0..13) {
            0 => format!(
                "({} {} {})",
                self.expr(d),
                self.pick(&[
                    "+",
                    "-",
                    "*",
                    "/",
                    "%",
                    "=",
                    "<>",
                    "<",
                    "<=",
                    ">",
                    ">=",
                    "AND",
                    "OR",
                    "||",
                    "->",
                    "->>",
                    "LIKE",
                    "ILIKE",
                    "IS DISTINCT FROM",
                    "^",
                    "&",
                    "<<"
                ]),
                self.expr(d)
            ),
            1 => format!("{}({})", self.pick(FUNCTIONS), self.args(d)),
            2 => format!("CAST({} AS {})", self.expr(d), self.pick(TYPES)),
            3 => format!("{}::{}", self.expr(d), self.pick(TYPES)),
            4 => format!(
                "CASE WHEN {} THEN {} ELSE {} END",
                self.expr(d),
                self.expr(d),
                self.expr(d)
            ),
            5 => format!("{} IN ({})", self.expr(d), self.args(d)),
            6 => format!("{} IS {}NULL", self.expr(d), self.pick(&["", "NOT "])),
            7 => format!("(SELECT {} FROM t1 LIMIT 1)", self.expr(d)),
            8 => format!("EXISTS (SELECT 1 FROM t2 WHERE {})", self.expr(d)),
            9 => format!(
                "{} BETWEEN {} AND {}",
                self.expr(d),
                self.expr(d),
                self.expr(d)
            ),
            10 => format!("NOT {}", self.expr(d)),
            11 => format!("-{}", self.expr(d)),
            _ => self.expr(0),
        }
    }

    fn args(&mut self, depth: u32) -> String {
        let n = self.rng.random_range(0..4);
        (0..n)
            .map(|_| self.expr(depth))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn select(&mut self) -> String {
        let items = (0..self.rng.random_range(1..4))
            .map(|_| self.expr(2))
            .collect::<Vec<_>>()
            .join(", ");
        let from = self.pick(&[
            "t1",
            "t2",
            "t1, t2",
            "t1 JOIN t2 ON t1.a = t2.x",
            "t1 LEFT JOIN t2 ON t1.b = t2.y",
            "t1 FULL JOIN t2 ON t1.a = t2.x",
            "nope",
            "(SELECT a FROM t1) AS s",
        ]);
        let mut s = format!(
            "SELECT {}{items} FROM {from}",
            self.pick(&["", "DISTINCT "])
        );
        if self.rng.random_bool(0.5) {
            s += &format!(" WHERE {}", self.expr(2));
        }
        if self.rng.random_bool(0.3) {
            s += &format!(" GROUP BY {}", self.expr(1));
            if self.rng.random_bool(0.3) {
                s += &format!(" HAVING {}", self.expr(1));
            }
        }
        if self.rng.random_bool(0.3) {
            s += &format!(
                " ORDER BY {} {}",
                self.expr(1),
                self.pick(&["", "DESC", "NULLS FIRST"])
            );
        }
        if self.rng.random_bool(0.3) {
            s += &format!(" LIMIT {}", self.literal());
        }
        if self.rng.random_bool(0.1) {
            s = format!(
                "{s} {} {}",
                self.pick(&["UNION", "INTERSECT", "EXCEPT ALL"]),
                self.select_simple()
            );
        }
        s
    }

    fn select_simple(&mut self) -> String {
        format!("SELECT {} FROM t2", self.expr(1))
    }

    fn statement(&mut self) -> String {
        match self.rng.random_range(0..20) {
            0..=5 => self.select(),
            6 | 7 => format!(
                "INSERT INTO {} VALUES ({}){}",
                self.pick(&["t1", "t2", "t1 (a, b)", "t2 (x)", "nope"]),
                self.args(1),
                self.pick(&[
                    "",
                    " ON CONFLICT DO NOTHING",
                    " RETURNING *",
                    " ON CONFLICT (a) DO UPDATE SET b = excluded.b"
                ])
            ),
            8 => format!(
                "UPDATE {} SET {} = {} WHERE {}{}",
                self.pick(&["t1", "t2"]),
                self.pick(COLUMNS),
                self.expr(2),
                self.expr(2),
                self.pick(&["", " RETURNING a"])
            ),
            9 => format!(
                "DELETE FROM {} WHERE {}",
                self.pick(&["t1", "t2"]),
                self.expr(2)
            ),
            10 => format!(
                "CREATE TABLE IF NOT EXISTS r{} ({} {}{}, {} {})",
                self.rng.random_range(0..5),
                self.pick(&["a", "b", "k"]),
                self.pick(TYPES),
                self.pick(&[
                    "",
                    " PRIMARY KEY",
                    " NOT NULL",
                    " UNIQUE",
                    " DEFAULT 1",
                    " CHECK (a > 0)"
                ]),
                self.pick(&["b", "c", "a"]),
                self.pick(TYPES),
            ),
            11 => format!(
                "{} {}",
                self.pick(&[
                    "DROP TABLE IF EXISTS",
                    "TRUNCATE",
                    "SHOW COLUMNS FROM",
                    "SHOW CREATE TABLE",
                    "CREATE INDEX ON"
                ]),
                self.pick(&["r0", "r1", "r2", "r3", "nope", "r4 (b)", "r0 (a, a)"])
            ),
            12 => format!(
                "ALTER TABLE r{} {}",
                self.rng.random_range(0..5),
                self.pick(&[
                    "ADD COLUMN z INT",
                    "ADD COLUMN z INT NOT NULL",
                    "DROP COLUMN z",
                    "DROP COLUMN a",
                    "RENAME COLUMN b TO bb",
                    "RENAME TO r9"
                ])
            ),
            13 => self
                .pick(&[
                    "BEGIN",
                    "COMMIT",
                    "ROLLBACK",
                    "SAVEPOINT s",
                    "ROLLBACK TO SAVEPOINT s",
                    "RELEASE SAVEPOINT s",
                    "SET search_path = public",
                    "SET application_name = 'fuzz'",
                    "SHOW TABLES",
                    "SHOW DATABASES",
                    "EXPLAIN SELECT * FROM t1 WHERE a = 1",
                    "",
                    ";;",
                ])
                .into(),
            14 | 15 => {
                // A well-formed statement with a few characters changed.
                let mut s: Vec<char> = self.select().chars().collect();
                for _ in 0..self.rng.random_range(1..5) {
                    if s.is_empty() {
                        break;
                    }
                    let i = self.rng.random_range(0..s.len());
                    match self.rng.random_range(0..3) {
                        0 => {
                            s.remove(i);
                        }
                        1 => s.insert(
                            i,
                            self.pick(&["(", ")", "'", "\"", ",", "$", "\\", ";"])
                                .chars()
                                .next()
                                .expect("infallible"),
                        ),
                        _ => s[i] = char::from(self.rng.random_range(32u8..127)),
                    }
                }
                s.into_iter().collect()
            }
            16 | 17 => (0..self.rng.random_range(1..15))
                .map(|_| self.pick(KEYWORDS))
                .collect::<Vec<_>>()
                .join(" "),
            18 => {
                let bytes: Vec<u8> = (0..self.rng.random_range(1..60))
                    .map(|_| self.rng.random())
                    .collect();
                String::from_utf8_lossy(&bytes).replace('\0', "")
            }
            _ => format!("SELECT {}", self.expr(3)),
        }
    }
}

/// Sends a framed pgwire message (type byte, length, body).
fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![kind];
    m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

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

/// Writes `payload` after a valid startup, reads whatever comes back until the server
/// closes or goes quiet (a message cut short leaves it waiting for the rest).
fn raw_session(addr: &str, payload: &[u8]) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        panic!("{addr} refused a connection");
    };
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("set read timeout");
    let _ = s.write_all(&startup());
    let _ = s.write_all(payload);
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
    }
}

fn malformed_messages(rng: &mut StdRng) -> Vec<Vec<u8>> {
    let cstr = |s: &str| {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        v
    };
    let mut out = vec![
        // Length fields that lie: too short, huge, negative.
        vec![b'Q', 0, 0, 0, 2],
        vec![b'Q', 0xff, 0xff, 0xff, 0xff],
        vec![b'Q', 0x7f, 0xff, 0xff, 0xff, b's'],
        // Query without its terminating NUL, and with invalid UTF-8.
        message(b'Q', b"select 1"),
        message(b'Q', &[0xff, 0xfe, 0x00]),
        // Bind / Execute / Describe / Close of statements and portals that don't exist.
        message(
            b'B',
            &[&cstr("")[..], &cstr("nope"), &[0, 0, 0, 0, 0, 0]].concat(),
        ),
        message(b'E', &[&cstr("nope")[..], &[0, 0, 0, 0]].concat()),
        message(b'D', &[&[b'S'][..], &cstr("nope")].concat()),
        message(b'D', &[&[b'X'][..], &cstr("")].concat()),
        message(b'C', &[&[b'P'][..], &cstr("nope")].concat()),
        // Parse declaring parameter types, then Bind with wrong counts and garbage values.
        [
            message(
                b'P',
                &[
                    &cstr("s1")[..],
                    &cstr("select $1, $2"),
                    &[0, 2],
                    &1700u32.to_be_bytes(),
                    &1186u32.to_be_bytes(),
                ]
                .concat(),
            ),
            message(
                b'B',
                &[
                    &cstr("")[..],
                    &cstr("s1"),
                    &[0, 1, 0, 1],
                    &[0, 2],
                    &[0, 0, 0, 3, 1, 2, 3],
                    &[0, 0, 0, 2, 9, 9],
                    &[0, 0],
                ]
                .concat(),
            ),
            message(b'E', &[&cstr("")[..], &[0, 0, 0, 0]].concat()),
            message(b'S', &[]),
        ]
        .concat(),
        [
            message(
                b'P',
                &[
                    &cstr("s2")[..],
                    &cstr("select $1::int8"),
                    &[0, 1],
                    &20u32.to_be_bytes(),
                ]
                .concat(),
            ),
            // Binary INT8 of 3 bytes, NUMERIC with a digit count far beyond its bytes.
            message(
                b'B',
                &[
                    &cstr("")[..],
                    &cstr("s2"),
                    &[0, 1, 0, 1],
                    &[0, 1],
                    &[0, 0, 0, 3, 1, 2, 3],
                    &[0, 0],
                ]
                .concat(),
            ),
            message(b'E', &[&cstr("")[..], &[0, 0, 0, 0]].concat()),
            message(
                b'P',
                &[
                    &cstr("s3")[..],
                    &cstr("select $1"),
                    &[0, 1],
                    &1700u32.to_be_bytes(),
                ]
                .concat(),
            ),
            message(
                b'B',
                &[
                    &cstr("")[..],
                    &cstr("s3"),
                    &[0, 1, 0, 1],
                    &[0, 1],
                    &[0, 0, 0, 8, 0x7f, 0xff, 0x80, 0x00, 0x40, 0x00, 0xff, 0xff],
                    &[0, 0],
                ]
                .concat(),
            ),
            message(b'E', &[&cstr("")[..], &[0, 0, 0, 0]].concat()),
            message(b'S', &[]),
        ]
        .concat(),
        // A copy-data message nobody asked for, a function call, an unknown type byte.
        message(b'd', b"1\t2\n"),
        message(b'F', &[0, 0, 0, 1]),
        message(b'~', b"????"),
        // Terminate, then more.
        [message(b'X', &[]), message(b'Q', &cstr("select 1"))].concat(),
    ];
    for _ in 0..200 {
        let kind = *[
            b'Q', b'P', b'B', b'E', b'D', b'S', b'H', b'C', b'p', b'f', b'c',
        ]
        .get(rng.random_range(0..11))
        .expect("infallible");
        let body: Vec<u8> = (0..rng.random_range(0..64)).map(|_| rng.random()).collect();
        out.push(message(kind, &body));
    }
    out
}

/// NULL as a parameter of any type.
#[derive(Debug)]
struct AnyNull;

impl tokio_postgres::types::ToSql for AnyNull {
    fn to_sql(
        &self,
        _: &tokio_postgres::types::Type,
        _: &mut bytes::BytesMut,
    ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        Ok(tokio_postgres::types::IsNull::Yes)
    }

    fn accepts(_: &tokio_postgres::types::Type) -> bool {
        true
    }

    tokio_postgres::types::to_sql_checked!();
}

/// What one connection's share of the statements came to.
#[derive(Default)]
struct Tally {
    ok: usize,
    errors: usize,
    internal: Vec<String>,
    slowest: Vec<(Duration, String)>,
}

/// Runs `count` generated statements on one connection (its own database, so connections
/// never wait on each other's open transactions); panics if the connection is lost.
async fn run_statements(addr: String, db: String, seed: u64, count: usize) -> Tally {
    let cs = pg_conn_str(&addr).replace("dbname=defaultdb", &format!("dbname={db}"));
    let client = pg_connect(&cs).await;
    client
        .batch_execute(
            "create table t1 (a int primary key, b text, c float, d decimal, e bool, f date, \
             g timestamptz, j jsonb);
             create table t2 (x int, y text, z interval);
             insert into t1 values (1, 'one', 1.5, 2.5, true, '2024-01-01', now(), '{\"k\": 1}'),
               (2, NULL, -0.5, NULL, false, NULL, NULL, '[1]');
             insert into t2 values (1, 'one', '1 day'), (3, NULL, NULL)",
        )
        .await
        .expect("schema");
    let mut g = Gen {
        rng: StdRng::seed_from_u64(seed),
    };
    let mut t = Tally::default();
    for i in 0..count {
        let stmt = g.statement();
        let started = std::time::Instant::now();
        let r = if g.rng.random_bool(0.5) {
            client.simple_query(&stmt).await.map(|_| ())
        } else {
            // Extended protocol: Parse + Describe (parameter and column types are inferred),
            // then Bind (every parameter NULL, whatever its type) + Execute.
            match client.prepare(&stmt).await {
                Ok(p) => {
                    let nulls: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                        vec![&AnyNull; p.params().len()];
                    client.query(&p, &nulls).await.map(|_| ())
                }
                Err(e) => Err(e),
            }
        };
        t.slowest.push((started.elapsed(), stmt.clone()));
        if t.slowest.len() > 3 {
            t.slowest.sort_by_key(|s| std::cmp::Reverse(s.0));
            t.slowest.truncate(3);
        }
        match r {
            Ok(()) => t.ok += 1,
            Err(e) => match e.as_db_error() {
                Some(d) => {
                    t.errors += 1;
                    if d.code().code() == "XX000" {
                        t.internal.push(format!("{stmt}\n  -> {}", d.message()));
                    }
                }
                None => panic!("{db}: statement {i} lost its connection: {stmt:?}: {e}"),
            },
        }
        assert!(
            !client.is_closed(),
            "{db}: statement {i} closed the connection: {stmt:?}"
        );
    }
    t
}

#[tokio::test(flavor = "multi_thread")]
async fn random_statements_and_malformed_messages_never_crash_a_node() {
    let c = Cluster::start(3, &[]).await;
    wait_for_sql(&c).await;
    let seed: u64 = std::env::var("SQL_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("seed {seed} (SQL_FUZZ_SEED={seed} repeats each connection's statements)");
    let admin = pg_connect(&pg_conn_str(&c.nodes[0].addr)).await;
    // One connection per node, at once, each in a database of its own.
    let run_started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for (i, n) in c.nodes.iter().enumerate() {
        let db = format!("fuzz{i}");
        admin
            .batch_execute(&format!("create database {db}"))
            .await
            .expect("create database");
        let count = STATEMENTS / c.nodes.len() + usize::from(i < STATEMENTS % c.nodes.len());
        tasks.push(tokio::spawn(run_statements(
            n.addr.clone(),
            db,
            seed.wrapping_add(i as u64),
            count,
        )));
    }
    let mut all = Tally::default();
    for task in tasks {
        let t = match task.await {
            Ok(t) => t,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        all.ok += t.ok;
        all.errors += t.errors;
        all.internal.extend(t.internal);
        all.slowest.extend(t.slowest);
    }
    println!(
        "{} statements succeeded, {} failed with a SQLSTATE, in {:?}",
        all.ok,
        all.errors,
        run_started.elapsed()
    );
    // The generator must exercise both sides: statements that run and ones that fail.
    assert!(
        all.ok > STATEMENTS / 10 && all.errors > STATEMENTS / 10,
        "{} ok, {} errors: the generated statements hardly exercise one side",
        all.ok,
        all.errors
    );
    for (d, s) in &all.slowest {
        println!("slow: {d:?} {}", s.chars().take(200).collect::<String>());
    }
    for s in all.internal.iter().take(20) {
        println!("internal error: {s}");
    }

    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    for (i, m) in malformed_messages(&mut rng).iter().enumerate() {
        raw_session(&c.nodes[i % c.nodes.len()].addr, m);
    }

    // Every node still runs and answers, with the right answer.
    admin
        .batch_execute(
            "create table defaultdb.alive (k int primary key);
             insert into defaultdb.alive values (1), (2), (3)",
        )
        .await
        .expect("a table to read back");
    for (i, n) in c.nodes.iter().enumerate() {
        assert!(c.is_running(i), "node {i} died");
        let (client, conn) = tokio_postgres::connect(&pg_conn_str(&n.addr), NoTls)
            .await
            .unwrap_or_else(|e| panic!("node {i} refuses connections: {e}"));
        tokio::spawn(conn);
        let n: i64 = client
            .query_one(
                "select count(*) from defaultdb.alive where k > $1",
                &[&1i64],
            )
            .await
            .unwrap_or_else(|e| panic!("node {i} does not answer: {e}"))
            .get(0);
        assert_eq!(n, 2, "node {i} answers wrongly");
    }
    assert!(
        all.internal.is_empty(),
        "{} statements failed with an internal error (XX000); first: {}",
        all.internal.len(),
        all.internal[0]
    );
}
