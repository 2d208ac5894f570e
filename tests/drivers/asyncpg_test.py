#!/usr/bin/env python3
"""asyncpg driver compatibility checks.

Usage: python3 tests/drivers/asyncpg_test.py HOST PORT

Connects as root to defaultdb (no TLS, no password), prints "ok: ..." per
passed check, exits 0 if all pass; otherwise prints one "FAIL: ..." line and
exits 1. Uses only plain fetch/fetchrow/execute with $n (no set_type_codec).
asyncpg always uses the extended protocol with named prepared statements and
takes parameter types from the server's ParameterDescription.
"""
import datetime as dt
import json
import uuid
from decimal import Decimal

import asyncpg

from checks import check, main, stage


async def connect(host, port):
    return await asyncpg.connect(host=host, port=port, user="root", database="defaultdb",
                                 ssl=False, timeout=10)


COLS = ["id", "b", "i2", "i4", "i8", "f4", "f8", "n", "vc", "c", "t", "by",
        "d", "ts", "tstz", "iv", "u", "j"]
JSON_DOC = {"a": 1, "b": [True, None, "x"], "nested": {"k": "v"}}
ROW = [1, True, -32768, 2147483647, 9223372036854775807, 1.5, 2.25,
       Decimal("12345678.1234"), "hello varchar", "ab", "text \u00e9\u4e2d",
       b"\x00\x01\xfe\xff", dt.date(2024, 2, 29),
       dt.datetime(2024, 1, 2, 3, 4, 5, 123456),
       dt.datetime(2024, 1, 2, 3, 4, 5, 654321, tzinfo=dt.timezone.utc),
       dt.timedelta(days=3, hours=4, microseconds=5),
       uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"), json.dumps(JSON_DOC)]
EXPECTED = ROW[:9] + ["ab   "] + ROW[10:17] + [JSON_DOC]


async def run(host, port):
    conn = await connect(host, port)
    conn2 = await connect(host, port)

    # a. connect + version()
    stage("SELECT version()")
    v = await conn.fetchval("SELECT version()")
    check("SELECT version() returns a string", True, isinstance(v, str) and len(v) > 0)

    # b. DDL
    stage("DDL")
    await conn.execute("DROP TABLE IF EXISTS asyncpg_types")
    await conn.execute("DROP TABLE IF EXISTS asyncpg_serial")
    await conn.execute("""CREATE TABLE asyncpg_types (id INT8 PRIMARY KEY, b BOOL, i2 INT2,
        i4 INT4, i8 INT8, f4 FLOAT4, f8 FLOAT8, n NUMERIC(12,4), vc VARCHAR(20),
        c CHAR(5), t TEXT, by BYTEA, d DATE, ts TIMESTAMP, tstz TIMESTAMPTZ,
        iv INTERVAL, u UUID, j JSONB)""")
    await conn.execute("CREATE TABLE asyncpg_serial (id SERIAL PRIMARY KEY, name TEXT)")
    print("ok: CREATE TABLE asyncpg_types, asyncpg_serial", flush=True)

    # c. parameters of every type, round trip
    stage("typed insert/select round trip")
    insert = (f"INSERT INTO asyncpg_types ({', '.join(COLS)}) "
              f"VALUES ({', '.join(f'${i + 1}' for i in range(len(COLS)))})")
    select = f"SELECT {', '.join(COLS)} FROM asyncpg_types WHERE id = $1"
    await conn.execute(insert, *ROW)
    got = await conn.fetchrow(select, 1)
    check("typed row read back: column count", len(COLS), len(got))
    for col, exp, act in zip(COLS, EXPECTED, got):
        if col == "j":  # jsonb arrives as str by default: compare parsed
            act = json.loads(act)
        check(f"typed row column {col}", exp, act)
    await conn.execute(insert, 2, *([None] * (len(COLS) - 1)))
    got = await conn.fetchrow(select, 2)
    check("NULL row read back", (2,) + (None,) * (len(COLS) - 1), tuple(got))

    # d. prepared statement executed several times; WHERE with parameters
    stage("prepared statement reuse / WHERE params")
    stmt = await conn.prepare("INSERT INTO asyncpg_serial (name) VALUES ($1) RETURNING id")
    ids = [await stmt.fetchval(name) for name in ["alpha", "beta", "gamma", "beta", "delta"]]
    check("SERIAL ids via RETURNING are 5 distinct ints",
          (5, True), (len(set(ids)), all(isinstance(i, int) for i in ids)))
    n = await conn.fetchval("SELECT count(*) FROM asyncpg_serial WHERE name = $1", "beta")
    check("count(*) WHERE name = $1", 2, n)
    ids.sort()
    rows = await conn.fetch("SELECT id, name FROM asyncpg_serial WHERE id > $1 ORDER BY id LIMIT $2",
                            ids[0], 2)
    check("WHERE id > $1 ORDER BY id LIMIT $2", [(ids[1], "beta"), (ids[2], "gamma")],
          [tuple(r) for r in rows])

    # e. transactions: commit visible from second connection, rollback not
    stage("transactions")
    async with conn.transaction():
        await conn.execute("INSERT INTO asyncpg_serial (name) VALUES ($1)", "committed")
    n = await conn2.fetchval("SELECT count(*) FROM asyncpg_serial WHERE name = $1", "committed")
    check("committed row visible from second connection", 1, n)
    tr = conn.transaction()
    await tr.start()
    await conn.execute("INSERT INTO asyncpg_serial (name) VALUES ($1)", "rolled back")
    await tr.rollback()
    n = await conn2.fetchval("SELECT count(*) FROM asyncpg_serial WHERE name = $1", "rolled back")
    check("rolled-back row not visible", 0, n)

    # f. errors carry SQLSTATE; connection stays usable
    stage("error SQLSTATEs")
    for label, sql, params, state in [
        ("duplicate primary key", "INSERT INTO asyncpg_types (id) VALUES ($1)", [1], "23505"),
        ("missing table", "SELECT * FROM asyncpg_no_such_table", [], "42P01"),
        ("division by zero", "SELECT 1/0", [], "22012"),
        ("syntax error", "SELEC 1", [], "42601"),
    ]:
        try:
            await conn.fetch(sql, *params)
            actual = "no error"
        except asyncpg.PostgresError as e:
            actual = e.sqlstate
        check(f"{label} -> SQLSTATE {state}", state, actual)
        check(f"connection usable after {label}", 1, await conn.fetchval("SELECT 1"))

    await conn.close()
    await conn2.close()


if __name__ == "__main__":
    main("asyncpg", run)
