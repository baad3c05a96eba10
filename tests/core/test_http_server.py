"""http.server: server spans over real sockets."""

from __future__ import annotations

import http.client
import http.server
import json
import threading
from pathlib import Path
from typing import Any

import pytest

import tracer
from reporters.memory import MemoryReporter
from tests.conftest import EchoHandler, Server
from tracer.context import suppressed


def _get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    # The caller stands for another process: its http.client call makes no client span here.
    with suppressed():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", path, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()


def test_server_span_record(memory: MemoryReporter, server: Server) -> None:
    status, _ = _get(server.port, "/hello?x=1")
    assert status == 200
    memory.wait_for(1)
    (span,) = memory.find(kind="server")
    assert span["name"] == "GET /hello"
    assert span["service"] == "test-service"
    assert span["http"] == {
        "method": "GET",
        "url": f"http://127.0.0.1:{server.port}/hello?x=1",
        "path": "/hello",
        "status_code": 200,
        "route": None,
    }
    assert len(span["trace_id"]) == 32 and len(span["span_id"]) == 16
    assert span["parent_id"] is None
    assert span["request_id"] == span["trace_id"]
    types = [e["type"] for e in span["events"]]
    assert types == ["sr", "ss"]
    assert span["events"][0]["time_us"] <= span["events"][1]["time_us"]
    assert span["error"] is None and span["sampled"] is True


def test_inbound_trace_headers_are_followed(memory: MemoryReporter, server: Server) -> None:
    headers = {"request-id": "req-42", "x-span-id": "00f067aa0ba902b7", "x-parent": "caller"}
    status, body = _get(server.port, "/a", headers)
    assert status == 200
    assert json.loads(body)["transaction_id"] == "req-42"
    memory.wait_for(1)
    (span,) = memory.find(kind="server")
    assert span["request_id"] == "req-42"
    assert span["parent_id"] == "00f067aa0ba902b7"
    assert span["tags"]["parent_service"] == "caller"


def test_request_id_from_query_parameter(memory: MemoryReporter, server: Server) -> None:
    status, body = _get(server.port, "/q?requestId=from-query-7")
    assert status == 200
    assert json.loads(body)["transaction_id"] == "from-query-7"


def test_response_headers_like_the_original(memory: MemoryReporter, server: Server) -> None:
    with suppressed():
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", "/x", headers={"request-id": "r1", "x-span-id": "1111111111111111"})
        response = conn.getresponse()
        response.read()
        conn.close()
    assert response.getheader("x-parent") == "test-service"
    assert response.getheader("x-span-id") == "1111111111111111"
    assert int(response.getheader("x-client-send") or "0") > 0
    assert response.getheader("x-must-collect") is None


@pytest.mark.parametrize("code", [404, 418, 500, 503])
def test_status_codes_pass_through(memory: MemoryReporter, server: Server, code: int) -> None:
    status, _ = _get(server.port, f"/status/{code}")
    assert status == code
    memory.wait_for(1)
    (span,) = memory.find(kind="server")
    assert span["http"]["status_code"] == code
    if code >= 500:
        assert span["must_collect"] is True


def test_handler_exception_recorded_and_behaviour_unchanged(server: Server) -> None:
    # Untraced first, to know what the client sees when the handler raises.
    with pytest.raises(http.client.RemoteDisconnected) as untraced:
        _get(server.port, "/raise")
    reporter = tracer_memory()
    with pytest.raises(http.client.RemoteDisconnected) as traced:
        _get(server.port, "/raise")
    assert type(traced.value) is type(untraced.value)
    reporter.wait_for(1)
    (span,) = reporter.find(kind="server")
    assert span["error"]["type"] == "ValueError"
    assert span["error"]["message"] == "handler failed"
    assert "handler failed" in span["error"]["stack"]


def tracer_memory() -> MemoryReporter:
    import reporters

    reporter = reporters.create("memory")
    tracer.install(app_name="test-service", reporter=reporter, flush_interval=0.02)
    return reporter


def test_keep_alive_isolation(memory: MemoryReporter, server: Server) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    expected: list[str | None] = []
    seen: list[str] = []
    with suppressed():
        for i in range(40):
            headers = {"request-id": f"keepalive-{i}"} if i % 2 == 0 else {}
            expected.append(headers.get("request-id"))
            conn.request("GET", f"/n/{i}", headers=headers)
            response = conn.getresponse()
            seen.append(json.loads(response.read())["transaction_id"])
    conn.close()
    memory.wait_for(40)
    spans = sorted(
        memory.find(kind="server"), key=lambda s: int(s["http"]["path"].rsplit("/", 1)[1])
    )
    assert len(spans) == 40
    fresh_ids = set()
    for i, (want, got, span) in enumerate(zip(expected, seen, spans, strict=True)):
        assert span["http"]["path"] == f"/n/{i}"
        assert span["request_id"] == got
        if want is not None:
            assert got == want
        else:
            # A request without a request-id never inherits the previous request's id.
            assert got not in expected and got not in fresh_ids
            fresh_ids.add(got)


def test_simple_http_request_handler(memory: MemoryReporter, tmp_path: Path) -> None:
    (tmp_path / "file.txt").write_text("content")

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    srv = Server(Handler)
    try:
        assert _get(srv.port, "/file.txt") == (200, b"content")
        assert _get(srv.port, "/missing.txt")[0] == 404
    finally:
        srv.close()
    memory.wait_for(2)
    spans = memory.find(kind="server")
    assert sorted(s["http"]["status_code"] for s in spans) == [200, 404]


def test_ignore_headers_produce_no_span(server: Server) -> None:
    import reporters

    reporter = reporters.create("memory")
    tracer.install(
        app_name="svc",
        reporter=reporter,
        flush_interval=0.02,
        ignore_headers={"user-agent": ["kube-probe"], "x-health": ["*"]},
    )
    assert _get(server.port, "/healthz", {"User-Agent": "kube-probe/1.27"})[0] == 200
    assert _get(server.port, "/healthz", {"X-Health": "anything"})[0] == 200
    assert _get(server.port, "/real", {"User-Agent": "curl/8"})[0] == 200
    reporter.wait_for(1)
    assert [s["http"]["path"] for s in reporter.find(kind="server")] == ["/real"]


def test_report_annotation_in_handler(memory: MemoryReporter) -> None:
    class Handler(EchoHandler):
        def do_GET(self) -> None:
            tracer.report({"cart": 3})
            super().do_GET()

    srv = Server(Handler)
    try:
        _get(srv.port, "/cart")
    finally:
        srv.close()
    memory.wait_for(1)
    (span,) = memory.find(kind="server")
    assert [a["data"] for a in span["annotations"]] == [{"cart": 3}]


def test_threads_serving_concurrently_keep_their_own_ids(
    memory: MemoryReporter, server: Server
) -> None:
    results: dict[int, str] = {}

    def call(i: int) -> None:
        _, body = _get(server.port, f"/t/{i}", {"request-id": f"thread-{i}"})
        results[i] = json.loads(body)["transaction_id"]

    threads = [threading.Thread(target=call, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: f"thread-{i}" for i in range(20)}


def test_expect_100_continue_keeps_the_final_status(memory: MemoryReporter, server: Server) -> None:
    import socket

    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
            b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
        )
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
            if b"\r\n\r\n" in received:
                sock.sendall(b"data")
                break
        while chunk := sock.recv(65536):
            received += chunk
    interim, _, final = received.partition(b"\r\n\r\n")
    assert interim.startswith(b"HTTP/1.1 100")
    assert b"x-parent" not in interim.lower()
    assert final.startswith(b"HTTP/1.1 200")
    assert final.lower().count(b"x-parent:") == 1
    memory.wait_for(1)
    (span,) = memory.find(kind="server")
    assert span["http"]["status_code"] == 200
