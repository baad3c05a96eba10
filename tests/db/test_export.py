"""What a database call exports: OTLP attributes, Zipkin tags, the duration histogram, and never
a statement's literal or parameter, in any byte a reporter sends."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest

import reporters
import tracer
from tests.export.raw_receiver import PATHS, make
from tests.metrics.helpers import local_text, samples
from tests.support.receivers import RawReceiver
from tests.support.waiting import eventually

SECRET = "hunter2-s3cr3t"
DB_METRIC = "db_client_operation_duration_seconds"


@pytest.fixture
def receiver() -> Iterator[RawReceiver]:
    peer = RawReceiver().start()
    yield peer
    peer.stop()


def run_queries() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE accounts (id INTEGER, password TEXT, pin INTEGER)")
    conn.execute(f"INSERT INTO accounts VALUES (1, '{SECRET}', 987654321)")
    conn.execute("INSERT INTO accounts VALUES (?, ?, ?)", (2, SECRET, 123456789))
    conn.execute(f"SELECT id FROM accounts WHERE password IN ('{SECRET}', 'x') OR pin = 0x2A")
    with pytest.raises(sqlite3.OperationalError):
        conn.execute(f"SELECT * FROM missing WHERE password = '{SECRET}'")


def sent(kind: str, receiver: RawReceiver, count: int) -> bytes:
    """Every byte of every request the reporter sent, once ``count`` database calls arrived."""

    def enough() -> bytes | None:
        raw = b"".join(
            repr(r.headers).encode() + r.path.encode() + r.body
            for r in receiver.accepted(PATHS[kind])
        )
        return raw if raw.count(b"accounts") + raw.count(b"missing") >= count else None

    raw = eventually(enough, what=f"{count} database spans at the {kind} receiver")
    assert raw is not None
    return raw


@pytest.mark.parametrize("kind", ["http", "otlp", "zipkin"])
def test_no_literal_or_parameter_reaches_a_reporter(kind: str, receiver: RawReceiver) -> None:
    tracer.install(app_name="secrets", reporter=make(kind, receiver.url), flush_interval=0.02,
                   sample_rate=1, memory_watch=False, metrics_interval=None)  # fmt: skip
    run_queries()
    raw = sent(kind, receiver, 5)
    assert SECRET.encode() not in raw
    for number in (b"987654321", b"123456789", b"0x2A"):
        assert number not in raw
    # The statements themselves did arrive, normalized.
    assert b"INSERT INTO accounts VALUES (?, ?, ?)" in raw
    assert b"password IN (?) OR pin = ?" in raw


def one_span(kind: str, raw_receiver: RawReceiver, name: str) -> dict[str, Any]:
    documents = [r.json() for r in raw_receiver.accepted(PATHS[kind])]
    if kind == "otlp":
        spans = [
            span
            for document in documents
            for rs in document["resourceSpans"]
            for ss in rs["scopeSpans"]
            for span in ss["spans"]
        ]
    else:
        spans = [span for document in documents for span in document]
    (found,) = [s for s in spans if s["name"] == name]
    return found


def test_otlp_attributes_and_zipkin_tags(receiver: RawReceiver) -> None:
    other = RawReceiver().start()
    try:
        tracer.install(app_name="attrs", reporter=make("otlp", receiver.url), flush_interval=0.02,
                       sample_rate=1, memory_watch=False, metrics_interval=None)  # fmt: skip
        run_queries()
        sent("otlp", receiver, 5)
        tracer.uninstall()
        tracer.install(app_name="attrs", reporter=make("zipkin", other.url), flush_interval=0.02,
                       sample_rate=1, memory_watch=False, metrics_interval=None)  # fmt: skip
        run_queries()
        sent("zipkin", other, 5)
        otlp_span = one_span("otlp", receiver, "SELECT missing")
        zipkin_span = one_span("zipkin", other, "SELECT missing")
    finally:
        other.stop()
    attributes = {a["key"]: next(iter(a["value"].values())) for a in otlp_span["attributes"]}
    assert otlp_span["kind"] == 3  # CLIENT
    assert attributes["db.system.name"] == "sqlite"
    assert attributes["db.namespace"] == ":memory:"
    assert attributes["db.operation.name"] == "SELECT"
    assert attributes["db.collection.name"] == "missing"
    assert attributes["db.query.text"] == "SELECT * FROM missing WHERE password = ?"
    assert attributes["error.type"] == "OperationalError"
    assert zipkin_span["kind"] == "CLIENT"
    assert zipkin_span["tags"]["db.system.name"] == "sqlite"
    assert zipkin_span["tags"]["db.query.text"] == "SELECT * FROM missing WHERE password = ?"
    assert "error" in zipkin_span["tags"]


def test_zipkin_remote_endpoint_is_the_database_server() -> None:
    from tracer.reporters.zipkin_encode import span_json

    record = {
        "trace_id": "1" * 32,
        "span_id": "2" * 16,
        "kind": "client",
        "name": "SELECT users",
        "start_us": 1,
        "duration_us": 2,
        "db": {"db.system.name": "postgresql", "server.address": "10.0.0.5", "server.port": 5432},
    }
    span = span_json(record, "svc")
    assert span is not None
    assert span["remoteEndpoint"] == {"ipv4": "10.0.0.5", "port": 5432}
    assert span["tags"]["server.port"] == "5432"


def test_the_duration_histogram_has_the_conventions_labels() -> None:
    tracer.install(app_name="metered", reporter=reporters.create("memory"), flush_interval=0.02,
                   memory_watch=False, metrics_interval=None)  # fmt: skip
    run_queries()
    rows = samples(local_text(), f"{DB_METRIC}_count")
    counts = {
        (
            labels.get("db_system_name"),
            labels.get("db_operation_name"),
            labels.get("db_collection_name"),
            labels.get("error_type"),
        ): value
        for labels, value in rows
    }
    assert counts == {
        ("sqlite", "CREATE", "accounts", None): 1.0,
        ("sqlite", "INSERT", "accounts", None): 2.0,
        ("sqlite", "SELECT", "accounts", None): 1.0,
        ("sqlite", "SELECT", "missing", "OperationalError"): 1.0,
    }
    # A database call is not an HTTP client request.
    assert not samples(local_text(), "http_client_request_duration_seconds_count")


def test_table_names_past_the_cap_become_other() -> None:
    from tracer.metrics.recording import MAX_SERIES, OTHER, OVERFLOW_SERIES, Recorder
    from tracer.span import CLIENT, LocalTrace, Span

    recorder = Recorder((0.1, 1.0))
    for n in range(MAX_SERIES):
        span = Span(CLIENT, "SELECT", "a" * 32, "r", None, LocalTrace(True), True)
        span.db = (("sqlite", None, None, None), (None, "SELECT", f"t{n}", "SELECT", ""))
        span.finish()
        recorder.record(span)
    keys = set(recorder.db)
    assert len(keys) <= MAX_SERIES
    assert (OTHER, OTHER, "sqlite", "") in keys
    assert len(keys) == MAX_SERIES - OVERFLOW_SERIES + 1
