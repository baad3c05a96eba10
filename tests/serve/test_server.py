"""``tracer serve``'s HTTP server: the command's output, every receiver fed by a real sender
(tracer itself, the OpenTelemetry SDK's OTLP exporters, Zipkin v2 JSON, OTLP JSON), the refusals
(400, 401, 403, 404, 405, 413), the pages' headers, the JSON API, the token, a restart on the
same database, and ``tracer demo --serve``.

One ``tracer serve`` child serves the module; the token, the internal-error and the suppression
tests use :class:`tracer.serve.Viewer` in this process.
"""

from __future__ import annotations

import datetime
import gzip
import http.client
import json
import re
import secrets
import signal
import socket
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tracer
from tests.support.children import Child
from tests.support.waiting import eventually
from tracer import cli, reporters
from tracer.serve import Viewer
from tracer.serve.server import DEFAULT_OTLP_PORT, DEFAULT_PORT, MAX_BODY, parse_size


class Answer:
    def __init__(self, status: int, headers: http.client.HTTPMessage, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    base: str,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    """One request with http.client (this process has no tracer installed): the answer."""
    parts = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return Answer(response.status, response.headers, response.read())
    finally:
        conn.close()


def post_json(base: str, path: str, doc: Any, **headers: str) -> Answer:
    return call(
        base,
        "POST",
        path,
        json.dumps(doc).encode(),
        {"Content-Type": "application/json", **headers},
    )


def now_us() -> int:
    return time.time_ns() // 1000


def record(trace_id: str, name: str, service: str, **fields: Any) -> dict[str, Any]:
    """A tracer span record (docs/reporters.md) of a server span, with its two events."""
    start = fields.pop("start_us", now_us())
    duration = fields.pop("duration_us", 1500)
    span = {
        "trace_id": trace_id,
        "request_id": None,
        "span_id": secrets.token_hex(8),
        "parent_id": None,
        "kind": "server",
        "name": name,
        "service": service,
        "host": "box",
        "pid": 4242,
        "start_us": start,
        "duration_us": duration,
        "events": [
            {"type": "sr", "time_us": start},
            {"type": "ss", "time_us": start + duration},
        ],
        "http": {"method": "GET", "url": "/x", "path": "/x", "status_code": 200, "route": "/x"},
        "error": None,
        "annotations": [],
        "tags": {},
        "sampled": True,
        "must_collect": False,
        "tracestate": None,
    }
    span.update(fields)
    return span


def batch(service: str, **content: Any) -> dict[str, Any]:
    return {"service": service, "host": "box", "pid": 4242, "sent_at_us": now_us(), **content}


def trace_spans(base: str, trace_id: str, count: int = 1) -> list[dict[str, Any]]:
    """The spans of ``trace_id`` once the API has ``count`` of them."""

    def stored() -> list[dict[str, Any]]:
        answer = call(base, "GET", f"/api/traces/{trace_id}")
        if answer.status != 200:
            return []
        spans: list[dict[str, Any]] = answer.json()["spans"]
        return spans if len(spans) >= count else []

    return eventually(stored, what=f"{count} span(s) of trace {trace_id}")


class Served:
    """A ``python -m tracer serve`` child on free ports with its own database."""

    def __init__(self, db: Path, cwd: Path, *args: str) -> None:
        self.db = db
        self.child = Child(
            "serve", "--port", "0", "--otlp-port", "0", "--db", str(db), *args, cwd=cwd
        )
        self.first = self.child.wait_for("http://")
        self.second = self.child.wait_for("receiver http://")
        self.url = self.first.strip()
        self.base = self.url.split("?", 1)[0].rstrip("/")
        self.receiver = self.second.split()[1]

    def stop(self, sig: int = signal.SIGINT) -> int:
        return self.child.stop(sig)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("serve")
    child = Served(folder / "serve.db", folder)
    try:
        yield child
    finally:
        child.stop()


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Viewer]:
    """An in-process viewer with a token."""
    viewer = Viewer(tmp_path_factory.mktemp("guarded") / "serve.db", token="s3cret-token-1")
    with viewer:
        yield viewer


# -- the command -------------------------------------------------------------------------------


def test_the_first_line_is_the_url_and_the_second_the_receiver_and_database(
    served: Served,
) -> None:
    assert served.child.stdout[0] == served.first
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/\n", served.first), served.first
    assert re.match(r"receiver http://127\.0\.0\.1:\d+ ", served.second), served.second
    assert str(served.db) in served.second
    for path in ("/v1/traces", "/v1/metrics", "/api/v2/spans", "/api/v1/batches"):
        assert path in served.second
    # The two ports are real, different, and both answer.
    assert served.base != served.receiver
    for base in (served.base, served.receiver):
        assert call(base, "GET", "/api/services").status == 200


def test_help_lists_every_option_with_its_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        cli.main(["serve", "--help"])
    assert exit.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for option, default in (
        ("--db PATH", "$XDG_DATA_HOME/tracer/serve.db"),
        ("--host HOST", "(default: 127.0.0.1)"),
        ("--port P", f"(default: {DEFAULT_PORT})"),
        ("--otlp-port P", f"(default: {DEFAULT_OTLP_PORT})"),
        ("--max-size SIZE", "(default: 1GB)"),
        ("--token T", "(default: none on 127.0.0.1"),
    ):
        assert option in out and default in out, (option, out)


@pytest.mark.parametrize(
    "args, says",
    [
        (["--max-size", "12X"], "invalid size: '12X'"),
        (["--max-size", "10"], "at least 1MB"),
        (["--port", "70000"], "invalid port: '70000'"),
        (["--otlp-port", "x"], "invalid port: 'x'"),
        (["--token", "short"], "invalid token"),
    ],
)
def test_a_bad_option_is_one_line_and_exit_status_2(
    args: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit:
        cli.main(["serve", *args])
    assert exit.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and says in errors[0], errors


def test_sizes_take_units_of_1024() -> None:
    assert parse_size("1GB") == 1 << 30
    assert parse_size("500MB") == 500 << 20
    assert parse_size("2G") == 2 << 30
    assert parse_size("64KiB") == 64 << 10
    assert parse_size("123456") == 123456
    assert parse_size("1.5gb") == 3 << 29
    for bad in ("", "GB", "1XB", "-1MB", "1 M B"):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_a_wildcard_address_without_a_token_gets_one_in_its_url(tmp_path: Path) -> None:
    viewer = Viewer(tmp_path / "serve.db", host="0.0.0.0")
    assert viewer.token and len(viewer.token) >= 20
    assert viewer.url.endswith(f"/?token={viewer.token}")
    assert viewer.url.startswith("http://127.0.0.1:")
    assert Viewer(tmp_path / "serve.db").token is None


# -- receivers, with real senders --------------------------------------------------------------


def test_tracer_spans_memory_and_metrics_arrive_through_its_http_reporter(
    served: Served, tmp_path: Path
) -> None:
    service = f"files-{secrets.token_hex(3)}"
    app = Child(
        "run",
        "-m",
        "http.server",
        "0",
        "--bind",
        "127.0.0.1",
        cwd=tmp_path,
        TRACE_APP_NAME=service,
        TRACE_REPORTER_TYPE="http",
        TRACE_REPORTER_CONFIG=json.dumps({"url": f"{served.receiver}/api/v1/batches"}),
        TRACE_FLUSH_INTERVAL="0.05",
        TRACE_METRICS_INTERVAL="0.2",
        TRACE_MEMORY_INTERVAL="0.2",
    )
    try:
        line = app.wait_for("Serving HTTP on")
        port = int(re.search(r"port (\d+)", line).group(1))  # type: ignore[union-attr]
        for path in ("/", "/missing"):
            call(f"http://127.0.0.1:{port}", "GET", path)

        def listed() -> list[dict[str, Any]]:
            found = call(served.base, "GET", f"/api/traces?service={service}").json()["traces"]
            return found if len(found) >= 2 else []

        traces = eventually(listed, what="the service's two traces")
        (span,) = trace_spans(served.base, traces[0]["trace_id"])
        assert span["service"] == service and span["kind"] == "server"
        assert span["source"] == "tracer"
        assert {e["type"] for e in span["events"]} == {"sr", "ss"}
        assert span["pid"] == app.proc.pid
        assert service in call(served.base, "GET", "/api/services").json()["services"]

        def memory() -> list[dict[str, Any]]:
            doc = call(served.base, "GET", f"/api/memory?service={service}").json()
            return [p for p in doc["processes"] if p["pid"] == app.proc.pid and p["points"]]

        eventually(memory, what="a memory reading of the service")

        def dashboard() -> dict[str, Any] | None:
            doc = call(served.base, "GET", f"/api/dashboard?service={service}").json()
            return doc if doc["source"] == "metrics" and doc["routes"] else None

        eventually(dashboard, what="the service's dashboard from its metrics batches")
    finally:
        app.stop()


def test_the_opentelemetry_sdk_exports_traces_and_metrics_in_protobuf(served: Served) -> None:
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace import SpanKind

    service = f"otel-{secrets.token_hex(3)}"
    resource = Resource.create({"service.name": service})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{served.receiver}/v1/traces"))
    )
    otel = provider.get_tracer("test")
    with otel.start_as_current_span("GET /orders", kind=SpanKind.SERVER) as root:
        root.set_attribute("http.request.method", "GET")
        root.set_attribute("http.route", "/orders")
        root.set_attribute("http.response.status_code", 200)
        with otel.start_as_current_span("SELECT orders", kind=SpanKind.CLIENT):
            pass
    trace_id = format(root.get_span_context().trace_id, "032x")
    provider.shutdown()
    spans = trace_spans(served.base, trace_id, 2)
    by_name = {s["name"]: s for s in spans}
    assert by_name["SELECT orders"]["parent_id"] == by_name["GET /orders"]["span_id"]
    assert {s["source"] for s in spans} == {"otlp"} and {s["service"] for s in spans} == {service}

    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=f"{served.receiver}/v1/metrics"),
        export_interval_millis=3_600_000,
    )
    meters = MeterProvider(resource=resource, metric_readers=[reader])
    duration = meters.get_meter("test").create_histogram("http.server.request.duration", unit="s")
    for seconds in (0.01, 0.02, 0.5):
        duration.record(
            seconds,
            {
                "http.request.method": "GET",
                "http.route": "/orders",
                "http.response.status_code": 200,
            },
        )
    assert meters.force_flush()
    meters.shutdown()
    doc = call(served.base, "GET", f"/api/dashboard?service={service}").json()
    assert doc["source"] == "metrics"
    assert [r["route"] for r in doc["routes"]] == ["/orders"]
    assert doc["routes"][0]["requests"] == 3


def test_zipkin_v2_json_is_taken_with_202(served: Served) -> None:
    trace_id = secrets.token_hex(16)
    root, child = secrets.token_hex(8), secrets.token_hex(8)
    start = now_us()
    spans = [
        {
            "traceId": trace_id,
            "id": root,
            "kind": "SERVER",
            "name": "get /cart",
            "timestamp": start,
            "duration": 3000,
            "localEndpoint": {"serviceName": "zipkin-cart"},
            "tags": {"http.method": "GET", "http.path": "/cart"},
        },
        {
            "traceId": trace_id,
            "id": child,
            "parentId": root,
            "kind": "CLIENT",
            "name": "get /stock",
            "timestamp": start + 500,
            "duration": 1000,
            "localEndpoint": {"serviceName": "zipkin-cart"},
            "tags": {"error": "boom"},
        },
    ]
    body = gzip.compress(json.dumps(spans).encode())
    answer = call(
        served.receiver,
        "POST",
        "/api/v2/spans",
        body,
        {"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert answer.status == 202, answer.body
    stored = trace_spans(served.base, trace_id, 2)
    assert {s["source"] for s in stored} == {"zipkin"}
    failed = [s for s in stored if s["span_id"] == child]
    assert failed and failed[0]["error"] is not None


def test_otlp_json_is_answered_in_json(served: Served) -> None:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    start_ns = time.time_ns()
    doc = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "json-svc"}}]
                },
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": trace_id,
                                "spanId": span_id,
                                "name": "GET /json",
                                "kind": 2,
                                "startTimeUnixNano": str(start_ns),
                                "endTimeUnixNano": str(start_ns + 2_000_000),
                            }
                        ]
                    }
                ],
            }
        ]
    }
    # Chunked, as some senders stream their bodies.
    parts = urllib.parse.urlsplit(served.receiver)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=60)
    try:
        conn.request(
            "POST",
            "/v1/traces",
            body=iter([json.dumps(doc).encode()]),
            headers={"Content-Type": "application/json; charset=utf-8"},
            encode_chunked=True,
        )
        response = conn.getresponse()
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/json"
        assert json.loads(response.read()) == {}
    finally:
        conn.close()
    (span,) = trace_spans(served.base, trace_id)
    assert span["service"] == "json-svc" and span["duration_us"] == 2000


@pytest.mark.parametrize(
    "path, content_type, body",
    [
        ("/v1/traces", "application/json", b'{"resourceSpans": [{'),
        ("/v1/traces", "application/x-protobuf", b"\xff\xff\xff\xff\x0f"),
        ("/v1/metrics", "application/json", b'{"resourceMetrics": 7}'),
        ("/v1/metrics", "application/x-protobuf", b"\x0a\xff\xff\xff"),
        ("/api/v2/spans", "application/json", b'[{"traceId": "xyz"}]'),
        ("/api/v1/batches", "application/json", b"not json"),
    ],
)
def test_a_malformed_body_is_a_400_with_a_reason(
    served: Served, path: str, content_type: str, body: bytes
) -> None:
    answer = call(served.receiver, "POST", path, body, {"Content-Type": content_type})
    assert answer.status == 400
    reason = answer.json()["error"]
    assert isinstance(reason, str) and reason and "\n" not in reason
    # Still serving.
    assert call(served.receiver, "GET", "/api/stats").status == 200


def test_an_unknown_content_type_or_encoding_is_a_415(served: Served) -> None:
    answer = call(served.receiver, "POST", "/v1/traces", b"x", {"Content-Type": "text/plain"})
    assert answer.status == 415 and "application/json" in answer.json()["error"]
    answer = call(
        served.receiver,
        "POST",
        "/api/v2/spans",
        b"[]",
        {"Content-Type": "application/json", "Content-Encoding": "br"},
    )
    assert answer.status == 415 and "gzip" in answer.json()["error"]


def test_an_oversized_body_is_a_413_unread(served: Served) -> None:
    parts = urllib.parse.urlsplit(served.receiver)
    with socket.create_connection((parts.hostname, parts.port), timeout=60) as sock:
        sock.sendall(
            b"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\n"
            + f"Content-Length: {MAX_BODY + 1}\r\n\r\n".encode()
        )
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]


def test_a_gzip_bomb_is_a_413(served: Served) -> None:
    bomb = gzip.compress(b"\0" * (MAX_BODY + 1024), compresslevel=9)
    assert len(bomb) < MAX_BODY // 100
    answer = call(
        served.receiver,
        "POST",
        "/api/v1/batches",
        bomb,
        {"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert answer.status == 413 and "decompressed" in answer.json()["error"]


@pytest.mark.parametrize("path", ["/v1/traces", "/v1/metrics", "/api/v2/spans", "/api/v1/batches"])
def test_a_get_on_a_receiver_is_a_405(served: Served, path: str) -> None:
    answer = call(served.receiver, "GET", path)
    assert answer.status == 405 and answer.headers["Allow"] == "POST"


def test_unknown_paths_traces_and_profiles_are_404(served: Served) -> None:
    for path in (
        "/nothing",
        "/api/nothing",
        "/trace/a/b",
        f"/api/traces/{secrets.token_hex(16)}",
        "/api/traces/not-hex",
        "/api/profiles/999999999",
        "/api/profiles/x",
    ):
        answer = call(served.base, "GET", path)
        assert answer.status == 404, path
        assert answer.json()["error"]


def test_other_methods_are_405(served: Served) -> None:
    assert call(served.base, "DELETE", "/api/traces").status == 405
    assert call(served.base, "PUT", "/v1/traces", b"{}").status == 405
    assert call(served.base, "POST", "/api/services", b"{}").status == 405


# -- pages -------------------------------------------------------------------------------------


def test_every_page_answers_the_single_page_with_the_csp(served: Served) -> None:
    index = call(served.base, "GET", "/")
    assert index.status == 200
    for path in ("/search", "/map", "/dashboard", "/memory", "/heap", "/profiles"):
        answer = call(served.base, "GET", path)
        assert answer.status == 200 and answer.body == index.body, path
    for path in ("/", f"/trace/{secrets.token_hex(16)}", "/profiles/3"):
        answer = call(served.base, "GET", path)
        assert answer.status == 200
        assert answer.headers["Content-Type"] == "text/html; charset=utf-8"
        csp = answer.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp
        assert "object-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.headers["Cache-Control"] == "no-cache"


def test_static_files_are_served_from_the_package_and_nothing_else(served: Served) -> None:
    answer = call(served.base, "GET", "/static/index.html")
    assert answer.status == 200 and answer.headers["Cache-Control"] == "no-cache"
    for path in (
        "/static/../server.py",
        "/static/%2e%2e/server.py",
        "/static/..%2fserver.py",
        "/static/..%5cserver.py",
        "/static//etc/passwd",
        "/static/../../../../etc/passwd",
        "/static/",
        "/static/.",
        "/static/__init__.py",
    ):
        answer = call(served.base, "GET", path)
        assert answer.status == 404, path
        assert b"import" not in answer.body and b"root:" not in answer.body


# -- the JSON API ------------------------------------------------------------------------------


def test_the_json_api_answers_each_endpoint(served: Served) -> None:
    trace_id = secrets.token_hex(16)
    service, callee = f"api-{secrets.token_hex(3)}", f"api-db-{secrets.token_hex(3)}"
    root = record(trace_id, "GET /orders", service, duration_us=40_000)
    client = record(
        trace_id,
        "GET /rows",
        service,
        kind="client",
        parent_id=root["span_id"],
        events=[],
        tags={"table": "orders"},
    )
    down = record(
        trace_id,
        "GET /rows",
        callee,
        parent_id=client["span_id"],
        error={"type": "ValueError", "message": "bad row", "stack": ""},
        http={
            "method": "GET",
            "url": "/rows",
            "path": "/rows",
            "status_code": 500,
            "route": "/rows",
        },
    )
    assert (
        post_json(served.base, "/api/v1/batches", batch(service, spans=[root, client])).status
        == 200
    )
    assert post_json(served.base, "/api/v1/batches", [batch(callee, spans=[down])]).status == 200
    trace_spans(served.base, trace_id, 3)

    assert {service, callee} <= set(call(served.base, "GET", "/api/services").json()["services"])
    operations = call(served.base, "GET", f"/api/operations?service={service}").json()
    assert {"name": "GET /orders", "kind": "server"} in operations["operations"]

    found = call(
        served.base,
        "GET",
        f"/api/traces?service={service}&min_duration_ms=10&errors=1&tag=table%3Dorders&limit=5",
    ).json()["traces"]
    assert [t["trace_id"] for t in found] == [trace_id]
    summary = found[0]
    assert summary["root_service"] == service and summary["spans"] == 3
    assert summary["errors"] == 1 and summary["services"] == {service: 2, callee: 1}
    assert call(served.base, "GET", f"/api/traces?service={service}&min_duration_ms=60").json() == {
        "traces": []
    }
    assert call(served.base, "GET", "/api/traces?limit=x").status == 400
    assert call(served.base, "GET", "/api/traces?tag=novalue").status == 400

    doc = call(served.base, "GET", f"/api/traces/{trace_id.upper()}").json()
    assert doc["trace_id"] == trace_id and len(doc["spans"]) == 3

    deps = call(served.base, "GET", "/api/dependencies").json()
    edges = [e for e in deps["edges"] if e["from"] == service and e["to"] == callee]
    assert edges and edges[0]["calls"] == 1 and edges[0]["errors"] == 1

    dashboard = call(served.base, "GET", f"/api/dashboard?service={service}&step_s=60").json()
    assert dashboard["service"] == service and dashboard["source"] == "spans"
    assert call(served.base, "GET", "/api/dashboard").status == 400

    memory = {
        "event": "stats",
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "rss_bytes": 50_000_000,
        "allocated_blocks": 1000,
    }
    assert post_json(served.base, "/api/v1/batches", batch(service, memory=memory)).status == 200
    processes = call(served.base, "GET", f"/api/memory?service={service}").json()["processes"]
    assert [p["pid"] for p in processes] == [4242]

    profile = {
        "format": "tracer-profile",
        "version": 1,
        "reason": "manual",
        "started_at_us": now_us(),
        "duration_s": 1.0,
        "samples": 2,
        "routes": {},
        "collapsed": ["main;work 2"],
    }
    assert post_json(served.base, "/api/v1/batches", batch(service, profile=profile)).status == 200
    (listed,) = call(served.base, "GET", f"/api/profiles?service={service}").json()["profiles"]
    assert listed["service"] == service
    whole = call(served.base, "GET", f"/api/profiles/{listed['id']}").json()
    assert whole["collapsed"] == ["main;work 2"]

    stats = call(served.base, "GET", "/api/stats").json()
    assert stats["spans"] >= 3 and stats["traces"] >= 1
    assert stats["receiver_url"] == served.receiver


def test_a_downloaded_trace_uploads_back_the_same(served: Served) -> None:
    trace_id = secrets.token_hex(16)
    root = record(trace_id, "GET /up", "uploader")
    assert post_json(served.base, "/api/v1/batches", batch("uploader", spans=[root])).status == 200
    downloaded = call(served.base, "GET", f"/api/traces/{trace_id}").json()
    # Uploaded under another id, as another viewer would get it.
    other = secrets.token_hex(16)
    copy = {
        "trace_id": other,
        "spans": [{**s, "trace_id": other} for s in downloaded["spans"]],
    }
    answer = post_json(served.base, "/api/traces", copy)
    assert answer.status == 200 and answer.json() == {"trace_id": other}
    back = call(served.base, "GET", f"/api/traces/{other}").json()
    assert back["spans"] == copy["spans"]
    for bad in (
        {"spans": []},
        {"trace_id": other, "spans": [{"span_id": "zz"}]},
        {"trace_id": other, "spans": [{**root, "trace_id": secrets.token_hex(16)}]},
        [1, 2],
    ):
        answer = post_json(served.base, "/api/traces", bad)
        assert answer.status == 400 and answer.json()["error"], bad


def test_a_heap_diff_of_two_snapshots(served: Served) -> None:
    def snapshot(count: int) -> dict[str, Any]:
        return {
            "format": "tracer-heap-snapshot",
            "version": 1,
            "time_us": now_us(),
            "census": {
                "nodes": count,
                "size_bytes": count * 64,
                "types": [{"what": "dict", "count": count, "size_bytes": count * 64}],
            },
        }

    answer = post_json(
        served.base, "/api/heap/diff", {"before": snapshot(10), "after": snapshot(30)}
    )
    assert answer.status == 200
    (grown,) = answer.json()["types"]
    assert grown["what"] == "dict" and grown["+"] == 20 and grown["size_bytes"] == 1280
    for bad in ({"before": {}, "after": {}}, {"before": snapshot(1), "after": {"census": 1}}):
        assert post_json(served.base, "/api/heap/diff", bad).status == 400
    broken = snapshot(1)
    broken["census"]["types"] = [{"count": 1}]
    answer = post_json(served.base, "/api/heap/diff", {"before": broken, "after": snapshot(2)})
    assert answer.status == 400


# -- security ----------------------------------------------------------------------------------


def test_a_cross_site_post_is_refused(served: Served) -> None:
    doc = batch("origin-check", spans=[record(secrets.token_hex(16), "GET /o", "origin-check")])
    for origin in ("http://evil.example", "null", f"{served.base}.evil.example"):
        answer = post_json(served.base, "/api/v1/batches", doc, Origin=origin)
        assert answer.status == 403, origin
    assert (
        post_json(served.base, "/api/v1/batches", doc, **{"Sec-Fetch-Site": "cross-site"}).status
        == 403
    )
    assert post_json(served.base, "/api/v1/batches", doc, Origin=served.base).status == 200


def test_a_request_for_another_host_name_is_refused_on_loopback(served: Served) -> None:
    assert call(served.base, "GET", "/api/services", headers={"Host": "evil.example"}).status == 403
    for host in ("localhost:1", "127.0.0.1", "[::1]:8686"):
        assert call(served.base, "GET", "/api/services", headers={"Host": host}).status == 200


def test_with_a_token_every_request_needs_it(guarded: Viewer) -> None:
    base = guarded.base_url
    assert guarded.url == f"{base}/?token=s3cret-token-1"
    for path in ("/", "/api/services", "/static/index.html"):
        answer = call(base, "GET", path)
        assert answer.status == 401 and answer.headers["WWW-Authenticate"] == "Bearer", path
    answer = call(
        guarded.receiver_url, "POST", "/v1/traces", b"{}", {"Content-Type": "application/json"}
    )
    assert answer.status == 401
    assert (
        call(base, "GET", "/api/services", headers={"Authorization": "Bearer wrong-token"}).status
        == 401
    )
    assert (
        call(base, "GET", "/api/services", headers={"Cookie": "tracer_token=wrong"}).status == 401
    )

    bearer = {"Authorization": "Bearer s3cret-token-1"}
    assert call(base, "GET", "/api/services", headers=bearer).status == 200
    answer = call(
        guarded.receiver_url,
        "POST",
        "/v1/traces",
        b"{}",
        {"Content-Type": "application/json", **bearer},
    )
    assert answer.status == 200

    wrong = call(base, "GET", "/?token=s3cret-token-2")
    assert wrong.status == 401 and "Set-Cookie" not in wrong.headers
    page = call(base, "GET", "/?token=s3cret-token-1")
    assert page.status == 200
    cookie = page.headers["Set-Cookie"]
    assert cookie.startswith("tracer_token=s3cret-token-1;")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    jar = {"Cookie": cookie.split(";", 1)[0]}
    assert call(base, "GET", "/api/services", headers=jar).status == 200
    # The query token opens a page, never a POST.
    answer = call(base, "POST", "/api/traces?token=s3cret-token-1", b"{}")
    assert answer.status == 401


# -- robustness --------------------------------------------------------------------------------


def test_garbage_on_the_wire_never_stops_the_server(served: Served) -> None:
    parts = urllib.parse.urlsplit(served.base)
    for garbage in (
        b"\x00\xff\x16\x03\x01 not http\r\n\r\n",
        b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n",
        b"POST /v1/traces HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
        b"POST /v1/traces HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: application/json\r\n\r\nzz\r\n",
        b"POST /v1/traces HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc",
        b"GET /api/traces?" + b"a=1&" * 1000 + b" HTTP/1.1\r\n\r\n",
    ):
        with socket.create_connection((parts.hostname, parts.port), timeout=60) as sock:
            sock.sendall(garbage)
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):
                pass
    assert call(served.base, "GET", "/api/services").status == 200


def test_an_internal_error_is_a_500_and_the_server_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Viewer(tmp_path / "serve.db") as viewer:
        # The store closed under the server: every call into it fails, as a bug of ours would.
        viewer.store.close()
        answer = call(viewer.base_url, "GET", "/api/services")
        assert answer.status == 500 and answer.json()["error"].startswith("internal error")
        logged = [r for r in caplog.records if r.name == "tracer.serve"]
        assert len(logged) == 1 and "/api/services" in logged[0].getMessage()
        assert call(viewer.base_url, "GET", "/static/index.html").status == 200


def test_receiving_makes_no_span_when_tracer_is_installed_in_the_process(tmp_path: Path) -> None:
    collected = reporters.create("memory")
    tracer.install(app_name="host-process", reporter=collected, flush_interval=0.02)
    try:
        with Viewer(tmp_path / "serve.db") as viewer:
            trace_id = secrets.token_hex(16)
            doc = batch("inside", spans=[record(trace_id, "GET /in", "inside")])
            with tracer.context.suppressed():  # the test's own call makes no client span
                assert post_json(viewer.receiver_url, "/api/v1/batches", doc).status == 200
                assert call(viewer.base_url, "GET", f"/api/traces/{trace_id}").status == 200
        assert tracer.flush()
        assert collected.spans == []
    finally:
        tracer.uninstall()


# -- restart, signals, the demo ----------------------------------------------------------------


def test_a_restart_on_the_same_database_keeps_the_traces_and_sigterm_exits_0(
    tmp_path: Path,
) -> None:
    db = tmp_path / "kept.db"
    trace_id = secrets.token_hex(16)
    first = Served(db, tmp_path)
    try:
        doc = batch("kept", spans=[record(trace_id, "GET /kept", "kept")])
        assert post_json(first.receiver, "/api/v1/batches", doc).status == 200
    finally:
        assert first.stop(signal.SIGTERM) == 0
    second = Served(db, tmp_path)
    try:
        (span,) = call(second.base, "GET", f"/api/traces/{trace_id}").json()["spans"]
        assert span["name"] == "GET /kept"
    finally:
        assert second.stop(signal.SIGINT) == 0


def test_the_demo_serves_its_traces_until_interrupted(tmp_path: Path) -> None:
    demo = Child(
        "demo", "--serve", "--requests", "3", "--port", "0", "--otlp-port", "0", cwd=tmp_path
    )
    try:
        first = demo.wait_for("http://", timeout=120)
        assert demo.stdout[0] == first and re.fullmatch(r"http://127\.0\.0\.1:\d+/\n", first)
        base = first.strip().rstrip("/")
        demo.wait_for("Ctrl-C stops it", timeout=120)
        # The trees are printed as without --serve.
        assert sum(line.startswith("trace ") for line in demo.stdout) == 3, demo.stdout
        found = call(base, "GET", "/api/traces?service=demo-client&limit=50").json()["traces"]
        assert len(found) >= 3
        failing = [t for t in found if t["errors"]]
        assert failing and set(failing[0]["services"]) >= {"demo-client", "frontend", "inventory"}
        services = set(call(base, "GET", "/api/services").json()["services"])
        assert {"demo-client", "frontend", "users", "inventory"} <= services

        def memory() -> bool:
            doc = call(base, "GET", "/api/memory?service=frontend").json()
            return any(p["points"] for p in doc["processes"])

        eventually(memory, what="the frontend's memory readings")

        def dashboard() -> bool:
            doc = call(base, "GET", "/api/dashboard?service=frontend").json()
            return doc["source"] == "metrics" and bool(doc["routes"])

        eventually(dashboard, what="the frontend's dashboard from its metrics")
    finally:
        assert demo.stop(signal.SIGINT) == 0, "".join(demo.stderr)
    assert "Traceback" not in "".join(demo.stderr), "".join(demo.stderr)


def test_the_demo_without_serve_refuses_its_ports(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        cli.main(["demo", "--port", "0"])
    assert exit.value.code == 2
    assert "--port and --otlp-port go with --serve" in capsys.readouterr().err
