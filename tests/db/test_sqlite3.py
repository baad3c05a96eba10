"""sqlite3: a client span per statement, with its db part, under the span that made it."""

from __future__ import annotations

import sqlite3
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import reporters
import tracer
from reporters.memory import MemoryReporter
from tests.db.conftest import db_spans
from tests.support.servers import HttpServer, QuietHandler
from tracer import installer
from tracer.instrumentation.dbapi import TracedConnection
from tracer.span import Span, SpanProcessor


def setup_table(conn: Any) -> None:
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    conn.executemany("INSERT INTO users (id, name) VALUES (?, ?)", [(1, "ann"), (2, "bob")])


def test_each_statement_is_a_client_span_with_its_db_part(traced: MemoryReporter) -> None:
    conn = sqlite3.connect(":memory:")
    setup_table(conn)
    cursor = conn.cursor()
    rows = cursor.execute("SELECT name FROM users WHERE id = 2 AND name = 'bob'").fetchall()
    assert rows == [("bob",)]
    create, insert, select = db_spans(traced.wait_for(3))
    assert [s["name"] for s in (create, insert, select)] == [
        "CREATE users",
        "INSERT users",
        "SELECT users",
    ]
    assert select["kind"] == "client"
    assert select["db"] == {
        "db.system.name": "sqlite",
        "db.namespace": ":memory:",
        "db.operation.name": "SELECT",
        "db.collection.name": "users",
        "db.query.text": "SELECT name FROM users WHERE id = ? AND name = ?",
    }
    assert select["error"] is None
    # executemany is one call: one span for all its rows.
    assert insert["db"]["db.query.text"] == "INSERT INTO users (id, name) VALUES (?, ?)"


def test_a_file_database_is_the_namespace(traced: MemoryReporter, tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        setup_table(conn)
    conn.close()
    assert sqlite3.connect(str(path)).execute("SELECT count(*) FROM users").fetchone() == (2,)
    spans = db_spans(traced.wait_for(3))
    assert {s["db"]["db.namespace"] for s in spans} == {str(path)}
    assert spans[-1]["name"] == "SELECT users"


def test_the_proxy_is_still_a_connection_and_its_cursor_a_cursor(traced: MemoryReporter) -> None:
    conn = sqlite3.connect(":memory:")
    assert isinstance(conn, sqlite3.Connection)
    assert isinstance(conn.cursor(), sqlite3.Cursor)
    with conn as entered:
        # The traced connection, not the one it wraps: its statements are still traced.
        assert entered is conn
        entered.execute("SELECT 1")
    with conn:
        conn.execute("SELECT 2")
    assert len(db_spans(traced.wait_for(2))) == 2


def test_a_failed_statement_raises_the_drivers_own_exception(traced: MemoryReporter) -> None:
    conn = sqlite3.connect(":memory:")
    with pytest.raises(sqlite3.OperationalError) as raised:
        conn.execute("SELECT * FROM missing_table")
    assert type(raised.value) is sqlite3.OperationalError
    assert str(raised.value) == "no such table: missing_table"
    (span,) = db_spans(traced.wait_for(1))
    assert span["error"]["type"] == "OperationalError"
    assert span["db"]["error.type"] == "OperationalError"
    assert span["name"] == "SELECT missing_table"


def test_transactions_and_executescript(traced: MemoryReporter) -> None:
    conn = sqlite3.connect(":memory:")
    conn.executescript("CREATE TABLE t (v INTEGER); CREATE TABLE u (v INTEGER);")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.rollback()
    with conn:
        conn.execute("INSERT INTO t VALUES (2)")
    with pytest.raises(ZeroDivisionError), conn:
        conn.execute("INSERT INTO t VALUES (3)")
        raise ZeroDivisionError
    assert conn.execute("SELECT v FROM t").fetchall() == [(2,)]
    spans = db_spans(traced.wait_for(5))
    assert [s["name"] for s in spans] == [
        "CREATE t",
        "INSERT t",
        "INSERT t",
        "INSERT t",
        "SELECT t",
    ]
    assert spans[0]["db"]["db.query.text"] == (
        "CREATE TABLE t (v INTEGER); CREATE TABLE u (v INTEGER);"
    )


def test_rows_after_the_first_are_stepped_outside_the_span(traced: MemoryReporter) -> None:
    """sqlite3 steps lazily: execute() computes the first row, each fetch the next ones. A SQL
    function called once per row tells which ran while the span was open."""
    ended: list[Span] = []

    class Ends(SpanProcessor):
        def on_end(self, span: Span) -> None:
            ended.append(span)

    runtime = installer.runtime
    assert runtime is not None
    runtime.add_processor(Ends())
    conn = sqlite3.connect(":memory:")
    open_then: list[bool] = []
    conn.create_function("probe", 0, lambda: open_then.append(not ended) or 1)
    cursor = conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3) "
        "SELECT probe() FROM n"
    )
    assert len(ended) == 1
    assert cursor.fetchall() == [(1,), (1,), (1,)]
    assert open_then == [True, False, False]
    (span,) = db_spans(traced.wait_for(1))
    assert span["db"]["db.operation.name"] == "WITH"


class QueryHandler(QuietHandler):
    """Runs a query per request, inside tracer's http.server span."""

    database = ""

    def do_GET(self) -> None:
        conn = sqlite3.connect(self.database)
        try:
            (count,) = conn.execute("SELECT count(*) FROM users").fetchone()
        finally:
            conn.close()
        body = str(count).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_a_query_in_a_request_is_a_child_of_its_server_span(
    traced: MemoryReporter, tmp_path: Path
) -> None:
    path = tmp_path / "served.db"
    with sqlite3.connect(path) as conn:
        setup_table(conn)
    conn.close()
    handler = type("Handler", (QueryHandler,), {"database": str(path)})
    server = HttpServer(handler)
    try:
        with urllib.request.urlopen(f"{server.url}/count", timeout=10) as answer:
            assert answer.read() == b"2"
    finally:
        server.close()
    spans = traced.wait_for(5)
    (served,) = [s for s in spans if s["kind"] == "server"]
    (query,) = [s for s in db_spans(spans) if s["name"] == "SELECT users"]
    assert query["parent_id"] == served["span_id"]
    assert query["trace_id"] == served["trace_id"]


def test_record_queries_false_leaves_the_text_out() -> None:
    memory = reporters.create("memory")
    tracer.install(app_name="quiet", reporter=memory, flush_interval=0.02, sample_rate=1,
                   record_queries=False, memory_watch=False, metrics_interval=None)  # fmt: skip
    sqlite3.connect(":memory:").execute("SELECT 'secret-literal'")
    (span,) = db_spans(memory.wait_for(1))
    assert "db.query.text" not in span["db"]
    assert span["db"]["db.operation.name"] == "SELECT"


def test_uninstall_puts_back_every_connect() -> None:
    original = sqlite3.connect
    in_dbapi2 = sqlite3.dbapi2.connect
    tracer.install(app_name="undo", reporter=reporters.create("memory"), memory_watch=False,
                   metrics_interval=None)  # fmt: skip
    assert sqlite3.connect is not original
    assert isinstance(sqlite3.connect(":memory:"), TracedConnection)
    assert isinstance(sqlite3.dbapi2.connect(":memory:"), TracedConnection)
    tracer.uninstall()
    assert sqlite3.connect is original
    assert sqlite3.dbapi2.connect is in_dbapi2
    assert not isinstance(sqlite3.connect(":memory:"), TracedConnection)


def test_nothing_is_traced_inside_suppressed_code(traced: MemoryReporter) -> None:
    from tracer.context import suppressed

    conn = sqlite3.connect(":memory:")
    with suppressed():
        conn.execute("SELECT 1")
    conn.execute("SELECT 2")
    spans = db_spans(traced.wait_for(1))
    assert [s["db"]["db.query.text"] for s in spans] == ["SELECT ?"]
