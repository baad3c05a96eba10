"""N+1 queries: a server span whose request ran one statement more than n_plus_one_threshold times
is tagged, with the statement and the count (sqlite3 inside a real http.server request)."""

from __future__ import annotations

import http.client
import io
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest

import reporters
import tracer
from reporters.memory import MemoryReporter
from tests.support.servers import HttpServer, QuietHandler
from tests.support.waiting import eventually
from tracer.context import suppressed
from tracer.reporters.stdout import render_trace


class Queries(QuietHandler):
    """``/same/N``: N identical SELECTs with different literals; ``/mixed/N``: N of each of two
    statements; ``/none``: no query but the table's creation; ``/plain``: no database at all."""

    def do_GET(self) -> None:
        kind, _, count = self.path.strip("/").partition("/")
        if kind == "plain":
            self.reply(200, body=b"ok")
            return
        n = int(count or 0)
        conn = sqlite3.connect(":memory:")
        try:
            conn.execute("CREATE TABLE users (id INTEGER, name TEXT)")
            for i in range(n):
                conn.execute(f"SELECT name FROM users WHERE id = {i} AND name = 'user-{i}'")
                if kind == "mixed":
                    conn.execute(f"SELECT id FROM users WHERE name = 'other-{i}'")
        finally:
            conn.close()
        self.reply(200, body=b"ok")


@pytest.fixture(scope="module")
def server() -> Iterator[HttpServer]:
    served = HttpServer(Queries)
    yield served
    served.close()


def get(server: HttpServer, path: str) -> None:
    # The test's own call stands for another process: it is not traced here.
    with suppressed():
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            assert response.status == 200
            response.read()
        finally:
            conn.close()


def server_span(memory: MemoryReporter) -> dict[str, Any]:
    # The response may reach the test before the handler's thread has ended the span.
    (span,) = eventually(lambda: memory.find(kind="server"), what="the server span")
    return span


def test_eleven_identical_selects_tag_the_server_span(
    memory: MemoryReporter, server: HttpServer
) -> None:
    get(server, "/same/11")
    span = server_span(memory)
    assert span["tags"]["n_plus_one"] == {
        "statement": "SELECT name FROM users WHERE id = ? AND name = ?",
        "count": 11,
        "system": "sqlite",
    }
    # The calls themselves are the server span's children.
    selects = [s for s in memory.spans if s["name"] == "SELECT users"]
    assert len(selects) == 11
    assert {s["parent_id"] for s in selects} == {span["span_id"]}


def test_ten_are_not_more_than_the_threshold(memory: MemoryReporter, server: HttpServer) -> None:
    get(server, "/same/10")
    assert "n_plus_one" not in server_span(memory)["tags"]


def test_different_statements_are_counted_apart(memory: MemoryReporter, server: HttpServer) -> None:
    get(server, "/mixed/6")
    span = server_span(memory)
    assert len([s for s in memory.spans if s["kind"] == "client"]) == 13
    assert "n_plus_one" not in span["tags"]


def test_a_request_without_queries_has_no_tag(memory: MemoryReporter, server: HttpServer) -> None:
    get(server, "/none")
    assert "n_plus_one" not in server_span(memory)["tags"]


def install(**options: Any) -> MemoryReporter:
    reporter: MemoryReporter = reporters.create("memory")
    tracer.install(app_name="test-service", reporter=reporter, flush_interval=0.02, **options)
    return reporter


@pytest.mark.parametrize("off", [None, 0])
def test_the_check_is_off_with_none_or_zero(server: HttpServer, off: int | None) -> None:
    memory = install(n_plus_one_threshold=off)
    get(server, "/same/30")
    assert "n_plus_one" not in server_span(memory)["tags"]


def test_the_threshold_is_the_option(server: HttpServer) -> None:
    memory = install(n_plus_one_threshold=2)
    get(server, "/same/3")
    assert server_span(memory)["tags"]["n_plus_one"]["count"] == 3


def test_without_recorded_queries_the_tag_names_the_span_not_the_text(server: HttpServer) -> None:
    memory = install(record_queries=False)
    get(server, "/same/11")
    assert server_span(memory)["tags"]["n_plus_one"] == {
        "statement": "SELECT users",
        "count": 11,
        "system": "sqlite",
    }
    assert "user-" not in repr(memory.spans) and "WHERE" not in repr(memory.spans)


def test_the_stdout_reporter_shows_it_on_the_first_line(server: HttpServer) -> None:
    memory = install()
    get(server, "/same/12")
    server_span(memory)
    first = render_trace(memory.spans).splitlines()[0]
    assert "N+1: 12 x SELECT name FROM users WHERE id = ? AND name = ?" in first
    out = io.StringIO()
    tracer.uninstall()
    # The reporter itself, as a service's stdout gets it.
    stdout = reporters.create("stdout", format="pretty", stream=out)
    tracer.install(app_name="test-service", reporter=stdout, flush_interval=0.02)
    get(server, "/same/11")

    def first_lines() -> list[str]:
        return [line for line in out.getvalue().splitlines() if line.startswith("trace ")]

    lines = eventually(first_lines, what="the trace printed")
    assert len(lines) == 1
    assert lines[0].endswith("N+1: 11 x SELECT name FROM users WHERE id = ? AND name = ?")


def test_the_check_joins_the_processors_only_at_the_first_database_call(
    memory: MemoryReporter, server: HttpServer
) -> None:
    from tracer import installer
    from tracer.instrumentation.nplusone import NPlusOne

    runtime = installer.runtime
    assert runtime is not None

    def checking() -> bool:
        return any(isinstance(p, NPlusOne) for p in runtime.processors)

    # A request without a database call: its spans pay nothing for the check.
    get(server, "/plain")
    server_span(memory)
    assert not checking()
    get(server, "/same/11")
    assert checking()
    assert len(runtime.database_processors) == 0
