"""Sampling across three real services: A calls B calls C, all on 127.0.0.1.

All three run in this process, but each request starts its own local trace and follows only
what arrives in its headers, as separate processes would.
"""

from __future__ import annotations

import http.client
import http.server
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
import requests

import reporters
import tracer
from reporters.memory import MemoryReporter
from tests.conftest import Server
from tracer.context import suppressed


def _chain_handler(downstream: str | None) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            code = int(self.path.split("?")[0].rsplit("/", 1)[1])
            if downstream is not None:
                # A caller that handles its callee's failure and answers 200 all the same.
                requests.get(f"{downstream}{self.path}", timeout=10)
                code = 200
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Handler


@pytest.fixture
def chain() -> Iterator[tuple[Server, Server, Server]]:
    c = Server(_chain_handler(None))
    b = Server(_chain_handler(c.url))
    a = Server(_chain_handler(b.url))
    yield a, b, c
    for s in (a, b, c):
        s.close()


def _install(**options: Any) -> MemoryReporter:
    reporter = reporters.create("memory")
    tracer.install(app_name="svc", reporter=reporter, flush_interval=0.02, **options)
    return reporter


def _call(server: Server, path: str, headers: dict[str, str] | None = None) -> Any:
    # The caller stands for another process: its http.client call makes no client span here.
    with suppressed():
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        try:
            conn.request("GET", path, headers=headers or {})
            response = conn.getresponse()
            response.read()
            return response
        finally:
            conn.close()


def settle(finished: int, timeout: float = 5.0) -> None:
    """Wait until ``finished`` spans ended (kept or dropped), then flush.

    A server span ends after its response was flushed, so the client may see the response first.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = tracer.stats()
        if stats["created"] + stats["unsampled_dropped"] >= finished:
            break
        time.sleep(0.005)
    tracer.flush()


def _by_trace(spans: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in spans:
        out[s["trace_id"]].append(s)
    return out


@pytest.mark.parametrize("formats", [["trace", "tracecontext", "b3"], ["trace"], ["b3multi"]])
def test_parent_based_consistency_across_three_services(
    chain: tuple[Server, Server, Server], formats: list[str]
) -> None:
    a, _, _ = chain
    reporter = _install(sample_rate=0.5, propagation=formats)
    n = 60
    for _ in range(n):
        assert _call(a, "/chain/200").status == 200
    settle(5 * n)
    traces = _by_trace(reporter.spans)
    # Either every span of a trace is kept (A server, A client, B server, B client, C server)
    # or none: each service followed its caller's decision, or derived the same one from the
    # trace id when only the trace headers (which carry no sampled flag) were propagated.
    assert {len(spans) for spans in traces.values()} == {5}
    assert 10 <= len(traces) <= n - 10
    for spans in traces.values():
        assert sorted(s["kind"] for s in spans) == [
            "client",
            "client",
            "server",
            "server",
            "server",
        ]
        assert all(s["sampled"] for s in spans)
    stats = tracer.stats()
    assert stats["unsampled_dropped"] == 5 * (n - len(traces))


def test_keep_on_error_travels_back_two_hops(chain: tuple[Server, Server, Server]) -> None:
    a, b, c = chain
    reporter = _install(sample_rate=0)
    ok = _call(a, "/chain/200")
    assert ok.status == 200 and ok.getheader("x-must-collect") is None
    failed = _call(a, "/chain/503")
    # B answered A with 200, yet A learnt from B's x-must-collect that the trace must be kept,
    # and says so to its own caller.
    assert failed.status == 200 and failed.getheader("x-must-collect") == "1"
    settle(10)
    spans = reporter.spans
    assert len(spans) == 5 and len({s["trace_id"] for s in spans}) == 1
    assert all(s["must_collect"] and not s["sampled"] for s in spans)
    servers = {s["http"]["url"].split("/")[2]: s for s in spans if s["kind"] == "server"}
    assert servers[f"127.0.0.1:{c.port}"]["http"]["status_code"] == 503
    assert servers[f"127.0.0.1:{b.port}"]["http"]["status_code"] == 200
    assert servers[f"127.0.0.1:{a.port}"]["http"]["status_code"] == 200
    stats = tracer.stats()
    assert stats["unsampled_dropped"] == 5 and stats["forced_kept"] == 3


def test_error_status_from_config(chain: tuple[Server, Server, Server]) -> None:
    a, _, _ = chain
    reporter = _install(sample_rate=0, error_status=400)
    assert _call(a, "/chain/404").getheader("x-must-collect") == "1"
    settle(5)
    assert len(reporter.spans) == 5


def test_inbound_must_collect_forces_collection(chain: tuple[Server, Server, Server]) -> None:
    _, _, c = chain
    reporter = _install(sample_rate=0)
    _call(c, "/leaf/200", {"x-must-collect": "1"})
    _call(c, "/leaf/200")
    settle(2)
    (span,) = reporter.spans
    assert span["must_collect"] is True and span["sampled"] is False


def test_inbound_sampled_flags_are_followed(chain: tuple[Server, Server, Server]) -> None:
    _, _, c = chain
    reporter = _install(sample_rate=1)
    tid = "4bf92f3577b34da6a3ce929d0e0e4736"
    _call(c, "/leaf/200", {"traceparent": f"00-{tid}-00f067aa0ba902b7-00"})
    _call(c, "/leaf/200", {"b3": f"{tid}-00f067aa0ba902b7-0"})
    _call(c, "/leaf/200", {"X-B3-TraceId": tid, "X-B3-SpanId": "1" * 16, "X-B3-Sampled": "0"})
    settle(3)
    assert reporter.spans == []
    reporter_zero = reporter
    tracer.uninstall()
    reporter = _install(sample_rate=0)
    _call(c, "/leaf/200", {"traceparent": f"00-{tid}-00f067aa0ba902b7-01"})
    settle(1)
    assert len(reporter.spans) == 1 and reporter_zero.spans == []


def test_forced_keeps_are_rate_limited_over_the_wire(chain: tuple[Server, Server, Server]) -> None:
    _, _, c = chain
    # A bucket of one token that refills once in 1,000 s: however slow the calls, one is kept.
    reporter = _install(sample_rate=0, max_forced_per_second=0.001)
    statuses = [_call(c, "/leaf/500").status for _ in range(6)]
    assert statuses == [500] * 6
    settle(6)
    stats = tracer.stats()
    assert len(reporter.spans) == stats["forced_kept"] == 1
    assert stats["forced_rate_limited"] == 5


def test_ignored_paths_produce_nothing(chain: tuple[Server, Server, Server]) -> None:
    _, _, c = chain
    reporter = _install(ignore_paths=["/leaf/204", "/internal/*"])
    assert _call(c, "/leaf/204").status == 204
    assert _call(c, "/internal/x/200").status == 200
    assert _call(c, "/leaf/204?probe=1").status == 204
    ignored = _call(c, "/leaf/204")
    assert ignored.getheader("x-parent") is None
    _call(c, "/leaf/200")
    settle(1)
    assert [s["http"]["path"] for s in reporter.spans] == ["/leaf/200"]
    stats = tracer.stats()
    assert stats["created"] == 1 and stats["unsampled_dropped"] == 0
