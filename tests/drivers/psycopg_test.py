#!/usr/bin/env python3
"""psycopg 3 driver compatibility checks.

Usage: python3 tests/drivers/psycopg_test.py HOST PORT

Connects as root to defaultdb (no TLS, no password), prints "ok: ..." per
passed check, exits 0 if all pass; otherwise prints one "FAIL: ..." line and
exits 1. Avoids catalog-introspecting features (TypeInfo.fetch, register_*).
"""
import datetime as dt
import uuid
from decimal import Decimal

import psycopg
from psycopg.types.json import Jsonb

from checks import check, main, stage


def connect(host, port):
    return psycopg.connect(host=host, port=port, user="root", dbname="defaultdb",
                           sslmode="disable", autocommit=True, connect_timeout=10)


COLS = ["id", "b", "i2", "i4", "i8", "f4", "f8", "n", "vc", "c", "t", "by",
        "d", "ts", "tstz", "iv", "u", "j"]
JSON_DOC = {"a": 1, "b": [True, None, "x"], "nested": {"k": "v"}}
ROW = [1, True, -32768, 2147483647, 9223372036854775807, 1.5, 2.25,
       Decimal("12345678.1234"), "hello varchar", "ab", "text \u00e9\u4e2d",
       b"\x00\x01\xfe\xff", dt.date(2024, 2, 29),
       dt.datetime(2024, 1, 2, 3, 4, 5, 123456),
       dt.datetime(2024, 1, 2, 3, 4, 5, 654321, tzinfo=dt.timezone.utc),
       dt.timedelta(days=3, hours=4, microseconds=5),
       uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"), Jsonb(JSON_DOC)]
EXPECTED = ROW[:9] + ["ab   "] + ROW[10:17] + [JSON_DOC]


def run(host, port):
    conn = connect(host, port)
    conn2 = connect(host, port)

    # a. connect + version()
    stage("SELECT version()")
    v = conn.execute("SELECT version()").fetchone()[0]
    check("SELECT version() returns a string", True, isinstance(v, str) and len(v) > 0)

    # b. DDL
    stage("DDL")
    conn.execute("DROP TABLE IF EXISTS psycopg_types")
    conn.execute("DROP TABLE IF EXISTS psycopg_serial")
    conn.execute("""CREATE TABLE psycopg_types (id INT8 PRIMARY KEY, b BOOL, i2 INT2,
        i4 INT4, i8 INT8, f4 FLOAT4, f8 FLOAT8, n NUMERIC(12,4), vc VARCHAR(20),
        c CHAR(5), t TEXT, by BYTEA, d DATE, ts TIMESTAMP, tstz TIMESTAMPTZ,
        iv INTERVAL, u UUID, j JSONB)""")
    conn.execute("CREATE TABLE psycopg_serial (id SERIAL PRIMARY KEY, name TEXT)")
    print("ok: CREATE TABLE psycopg_types, psycopg_serial", flush=True)

    # c. parameters of every type, round trip
    stage("typed insert/select round trip")
    insert = (f"INSERT INTO psycopg_types ({', '.join(COLS)}) "
              f"VALUES ({', '.join(['%s'] * len(COLS))})")
    select = f"SELECT {', '.join(COLS)} FROM psycopg_types WHERE id = %s"
    conn.execute(insert, ROW)
    got = conn.execute(select, [1]).fetchone()
    check("typed row read back: column count", len(COLS), len(got))
    for col, exp, act in zip(COLS, EXPECTED, got):
        check(f"typed row column {col}", exp, act)
    conn.execute(insert, [2] + [None] * (len(COLS) - 1))
    got = conn.execute(select, [2]).fetchone()
    check("NULL row read back", (2,) + (None,) * (len(COLS) - 1), tuple(got))

    # d. prepared statement executed several times; WHERE with parameters
    stage("prepared statement reuse / WHERE params")
    ids = []
    for name in ["alpha", "beta", "gamma", "beta", "delta"]:
        cur = conn.execute("INSERT INTO psycopg_serial (name) VALUES (%s) RETURNING id",
                           [name], prepare=True)
        ids.append(cur.fetchone()[0])
    check("SERIAL ids via RETURNING are 5 distinct ints",
          (5, True), (len(set(ids)), all(isinstance(i, int) for i in ids)))
    n = conn.execute("SELECT count(*) FROM psycopg_serial WHERE name = %s", ["beta"]).fetchone()[0]
    check("count(*) WHERE name = $1", 2, n)
    ids.sort()
    rows = conn.execute("SELECT id, name FROM psycopg_serial WHERE id > %s ORDER BY id LIMIT %s",
                        [ids[0], 2]).fetchall()
    check("WHERE id > $1 ORDER BY id LIMIT $2", [(ids[1], "beta"), (ids[2], "gamma")], rows)

    # e. transactions: commit visible from second connection, rollback not
    stage("transactions")
    with conn.transaction():
        conn.execute("INSERT INTO psycopg_serial (name) VALUES (%s)", ["committed"])
    n = conn2.execute("SELECT count(*) FROM psycopg_serial WHERE name = %s", ["committed"]).fetchone()[0]
    check("committed row visible from second connection", 1, n)
    with conn.transaction():
        conn.execute("INSERT INTO psycopg_serial (name) VALUES (%s)", ["rolled back"])
        raise psycopg.Rollback()
    n = conn2.execute("SELECT count(*) FROM psycopg_serial WHERE name = %s", ["rolled back"]).fetchone()[0]
    check("rolled-back row not visible", 0, n)

    # f. errors carry SQLSTATE; connection stays usable
    stage("error SQLSTATEs")
    for label, sql, params, state in [
        ("duplicate primary key", "INSERT INTO psycopg_types (id) VALUES (%s)", [1], "23505"),
        ("missing table", "SELECT * FROM psycopg_no_such_table", None, "42P01"),
        ("division by zero", "SELECT 1/0", None, "22012"),
        ("syntax error", "SELEC 1", None, "42601"),
    ]:
        try:
            conn.execute(sql, params)
            actual = "no error"
        except psycopg.Error as e:
            actual = e.sqlstate
        check(f"{label} -> SQLSTATE {state}", state, actual)
        check(f"connection usable after {label}", 1, conn.execute("SELECT 1").fetchone()[0])

    conn.close()
    conn2.close()


if __name__ == "__main__":
    main("psycopg", run)
