"""PostgreSQL through psycopg (sync and async), psycopg2 and asyncpg, against a real server."""

from __future__ import annotations

import asyncio
import urllib.request
from typing import Any

import asyncpg
import psycopg
import psycopg2
import pytest
from aiohttp import web

import reporters
import tracer
from reporters.memory import MemoryReporter
from tests.db.conftest import db_spans
from tests.support.aio import AioServer
from tests.support.postgres import PostgresServer
from tests.support.servers import HttpServer, QuietHandler


def target(server: PostgresServer) -> dict[str, Any]:
    return {
        "db.system.name": "postgresql",
        "db.namespace": server.database,
        "server.address": server.host,
        "server.port": server.port,
    }


def with_target(server: PostgresServer, **db: Any) -> dict[str, Any]:
    return {**target(server), **db}


# -- psycopg (3) ----------------------------------------------------------------------------------


def test_psycopg_statements_are_spans(traced: MemoryReporter, postgres_server: Any) -> None:
    with psycopg.connect(postgres_server.dsn()) as conn:
        conn.execute("CREATE TEMP TABLE items (id int, name text)")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO items VALUES (%s, %s)", [(1, "a"), (2, "b")])
            cur.execute("SELECT name FROM items WHERE id = %s AND name <> 'secret'", (2,))
            assert cur.fetchall() == [("b",)]
    create, insert, select = db_spans(traced.wait_for(3))
    assert create["name"] == "CREATE items"
    assert insert["db"] == with_target(
        postgres_server,
        **{
            "db.operation.name": "INSERT",
            "db.collection.name": "items",
            "db.query.text": "INSERT INTO items VALUES (%s, %s)",
        },
    )
    assert select["db"]["db.query.text"] == "SELECT name FROM items WHERE id = %s AND name <> ?"
    assert select["name"] == "SELECT items"


def test_psycopg_errors_and_transactions(traced: MemoryReporter, postgres_server: Any) -> None:
    with psycopg.connect(postgres_server.dsn()) as conn:
        with pytest.raises(psycopg.errors.UndefinedTable) as raised:
            conn.execute("SELECT * FROM no_such_table")
        assert type(raised.value) is psycopg.errors.UndefinedTable
        conn.rollback()
        with conn.transaction():
            conn.execute("CREATE TEMP TABLE tx (v int)")
            conn.execute("INSERT INTO tx VALUES (1)")
        with conn.cursor(name="server_side") as server_cursor:
            server_cursor.execute("SELECT v FROM tx")
            assert server_cursor.fetchall() == [(1,)]
    spans = db_spans(traced.wait_for(4))
    failed = spans[0]
    assert failed["error"]["type"] == "UndefinedTable"
    assert failed["db"]["error.type"] == "UndefinedTable"
    names = [s["name"] for s in spans]
    # conn.transaction() sends its own BEGIN and COMMIT through the connection, not a cursor.
    assert names[1:] == ["CREATE tx", "INSERT tx", "SELECT tx"]


def test_psycopg_composed_queries_are_normalized(
    traced: MemoryReporter, postgres_server: Any
) -> None:
    from psycopg import sql

    query = sql.SQL("SELECT {} AS v WHERE {} = {}").format(
        sql.Literal("secret"), sql.Identifier("x"), sql.Literal(7)
    )
    with psycopg.connect(postgres_server.dsn()) as conn:
        with pytest.raises(psycopg.errors.UndefinedColumn):
            conn.execute(query)
    (span,) = db_spans(traced.wait_for(1))
    assert span["db"]["db.query.text"] == 'SELECT ? AS v WHERE "x" = ?'


def test_psycopg_async(traced: MemoryReporter, postgres_server: Any) -> None:
    async def main() -> list[Any]:
        async with await psycopg.AsyncConnection.connect(postgres_server.dsn()) as conn:
            await conn.execute("CREATE TEMP TABLE a (v int)")
            async with conn.cursor() as cur:
                await cur.executemany("INSERT INTO a VALUES (%s)", [(1,), (2,)])
                await cur.execute("SELECT v FROM a ORDER BY v")
                return await cur.fetchall()

    with tracer.span("job") as job:
        assert job is not None
        assert asyncio.run(main()) == [(1,), (2,)]
    spans = db_spans(traced.wait_for(4))
    assert [s["name"] for s in spans] == ["CREATE a", "INSERT a", "SELECT a"]
    assert {s["parent_id"] for s in spans} == {job.span_id}
    assert spans[2]["db"]["server.port"] == postgres_server.port


# -- psycopg2 ------------------------------------------------------------------------------------


def test_psycopg2_statements_errors_and_callproc(
    traced: MemoryReporter, postgres_server: Any
) -> None:
    conn = psycopg2.connect(postgres_server.dsn())
    try:
        assert isinstance(conn, psycopg2.extensions.connection)
        with conn, conn.cursor() as cur:
            cur.execute(
                "CREATE FUNCTION pg_temp.double(v int) RETURNS int AS 'SELECT v * 2' LANGUAGE sql"
            )
            cur.execute("CREATE TEMP TABLE t2 (v int)")
            cur.executemany("INSERT INTO t2 VALUES (%s)", [(1,), (2,)])
            cur.callproc("pg_temp.double", (21,))
            assert cur.fetchall() == [(42,)]
        cur = conn.cursor()
        with pytest.raises(psycopg2.errors.UndefinedTable) as raised:
            cur.execute("SELECT * FROM missing WHERE v = 'secret'")
        assert type(raised.value) is psycopg2.errors.UndefinedTable
        conn.rollback()
    finally:
        conn.close()
    spans = db_spans(traced.wait_for(5))
    assert [s["name"] for s in spans] == [
        "CREATE",
        "CREATE t2",
        "INSERT t2",
        "CALL pg_temp.double",
        "SELECT missing",
    ]
    assert spans[0]["db"]["db.query.text"] == (
        "CREATE FUNCTION pg_temp.double(v int) RETURNS int AS ? LANGUAGE sql"
    )
    assert spans[2]["db"] == with_target(
        postgres_server,
        **{
            "db.operation.name": "INSERT",
            "db.collection.name": "t2",
            "db.query.text": "INSERT INTO t2 VALUES (%s)",
        },
    )
    assert spans[4]["error"]["type"] == "UndefinedTable"
    assert spans[4]["db"]["db.query.text"] == "SELECT * FROM missing WHERE v = ?"


class CountHandler(QuietHandler):
    """Queries PostgreSQL through psycopg2 per request, inside tracer's http.server span."""

    dsn = ""

    def do_GET(self) -> None:
        conn = psycopg2.connect(self.dsn)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 40 + 2")
                (value,) = cur.fetchone()
        finally:
            conn.close()
        body = str(value).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_psycopg2_in_a_request_is_a_child_of_its_server_span(
    traced: MemoryReporter, postgres_server: Any
) -> None:
    server = HttpServer(type("Handler", (CountHandler,), {"dsn": postgres_server.dsn()}))
    try:
        with urllib.request.urlopen(f"{server.url}/n", timeout=10) as answer:
            assert answer.read() == b"42"
    finally:
        server.close()
    spans = traced.wait_for(3)
    (served,) = [s for s in spans if s["kind"] == "server"]
    (query,) = db_spans(spans)
    assert query["parent_id"] == served["span_id"]
    assert query["db"]["db.query.text"] == "SELECT ? + ?"


# -- asyncpg -------------------------------------------------------------------------------------


def test_asyncpg_calls_and_prepared_statements(
    traced: MemoryReporter, postgres_server: Any
) -> None:
    async def main() -> None:
        conn = await asyncpg.connect(
            host=postgres_server.host,
            port=postgres_server.port,
            user=postgres_server.user,
            database=postgres_server.database,
        )
        try:
            await conn.execute("CREATE TEMP TABLE p (v int, s text)")
            await conn.executemany("INSERT INTO p VALUES ($1, $2)", [(1, "x"), (2, "y")])
            assert await conn.fetchval("SELECT count(*) FROM p WHERE s <> 'secret'") == 2
            assert (await conn.fetchrow("SELECT v FROM p WHERE v = $1", 2))["v"] == 2
            async with conn.transaction():
                await conn.execute("DELETE FROM p WHERE v = 1")
            statement = await conn.prepare("SELECT v FROM p ORDER BY v")
            assert [r["v"] for r in await statement.fetch()] == [2]
            with pytest.raises(asyncpg.exceptions.UndefinedTableError) as raised:
                await conn.fetch("SELECT * FROM nowhere")
            assert type(raised.value) is asyncpg.exceptions.UndefinedTableError
        finally:
            await conn.close()

    asyncio.run(main())
    spans = db_spans(traced.wait_for(9))
    assert [s["name"] for s in spans] == [
        "CREATE p",
        "INSERT p",
        "SELECT p",
        "SELECT p",
        "BEGIN",
        "DELETE p",
        "COMMIT",
        "SELECT p",
        "SELECT nowhere",
    ]
    assert spans[2]["db"] == with_target(
        postgres_server,
        **{
            "db.operation.name": "SELECT",
            "db.collection.name": "p",
            "db.query.text": "SELECT count(*) FROM p WHERE s <> ?",
        },
    )
    assert spans[-1]["error"]["type"] == "UndefinedTableError"


def test_asyncpg_in_an_aiohttp_request_is_a_child_of_its_server_span(
    traced: MemoryReporter, postgres_server: Any
) -> None:
    async def handler(request: web.Request) -> web.Response:
        conn = await asyncpg.connect(
            host=postgres_server.host,
            port=postgres_server.port,
            user=postgres_server.user,
            database=postgres_server.database,
        )
        try:
            value = await conn.fetchval("SELECT 6 * 7")
        finally:
            await conn.close()
        return web.Response(text=str(value))

    server = AioServer(handler=handler)
    try:
        with urllib.request.urlopen(f"{server.url}/q", timeout=10) as answer:
            assert answer.read() == b"42"
    finally:
        server.close()
    spans = traced.wait_for(3)
    (served,) = [s for s in spans if s["kind"] == "server"]
    (query,) = db_spans(spans)
    assert query["parent_id"] == served["span_id"]
    assert query["name"] == "SELECT"


# -- uninstall -----------------------------------------------------------------------------------


def test_uninstall_puts_back_every_patched_object() -> None:
    connection = asyncpg.connection.Connection
    prepared = asyncpg.prepared_stmt.PreparedStatement
    patched = [
        *((psycopg.Cursor, n) for n in ("execute", "executemany")),
        *((psycopg.AsyncCursor, n) for n in ("execute", "executemany")),
        (psycopg.ServerCursor, "execute"),
        (psycopg.AsyncServerCursor, "execute"),
        (psycopg2, "connect"),
        *((connection, n) for n in ("execute", "executemany", "fetch", "fetchval", "fetchrow")),
        *((prepared, n) for n in ("fetch", "fetchval", "fetchrow", "executemany")),
    ]
    before = [vars(owner)[name] for owner, name in patched]
    tracer.install(app_name="undo", reporter=reporters.create("memory"), memory_watch=False,
                   metrics_interval=None)  # fmt: skip
    during = [vars(owner)[name] for owner, name in patched]
    assert all(now is not then for now, then in zip(during, before, strict=True))
    tracer.uninstall()
    after = [vars(owner)[name] for owner, name in patched]
    assert all(now is then for now, then in zip(after, before, strict=True))
