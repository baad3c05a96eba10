"""The public API: install/uninstall, report, get_transaction_id, span, flush, stats."""

from __future__ import annotations

import asyncio
import http.client
import http.server
import logging

import pytest
import requests

import reporters
import tracer
from reporters.memory import MemoryReporter
from tests.conftest import Server
from tracer.patching import is_ours

PATCHED = {
    (http.server.BaseHTTPRequestHandler, "handle_one_request"),
    (http.server.BaseHTTPRequestHandler, "parse_request"),
    (http.server.BaseHTTPRequestHandler, "end_headers"),
    (requests.Session, "send"),
    (requests.adapters.HTTPAdapter, "send"),
    (http.client.HTTPConnection, "endheaders"),
}


def test_public_names() -> None:
    assert set(tracer.__all__) == {
        "ConfigError",
        "Span",
        "asgi",
        "client_call",
        "current_span",
        "flush",
        "get_transaction_id",
        "install",
        "profile",
        "report",
        "span",
        "stats",
        "uninstall",
        "wsgi",
    }


def test_uninstall_restores_the_very_same_objects() -> None:
    originals = {(owner, name): owner.__dict__[name] for owner, name in PATCHED}
    tracer.install(app_name="x", reporter=reporters.create("memory"))
    for owner, name in PATCHED:
        assert is_ours(owner.__dict__[name]), name
    tracer.uninstall()
    for (owner, name), original in originals.items():
        assert owner.__dict__[name] is original, name
    assert requests.Session.send is originals[(requests.Session, "send")]


def test_install_twice_changes_nothing() -> None:
    first = reporters.create("memory")
    tracer.install(app_name="one", reporter=first)
    wrapped = requests.Session.__dict__["send"]
    tracer.install(app_name="two", reporter=reporters.create("memory"))
    assert requests.Session.__dict__["send"] is wrapped
    from tracer import installer

    assert installer.runtime is not None and installer.runtime.service == "one"
    tracer.uninstall()
    tracer.uninstall()
    assert not is_ours(requests.Session.__dict__["send"])


def test_reinstall_after_uninstall_traces_again(server: Server) -> None:
    for _ in range(2):
        reporter = reporters.create("memory")
        tracer.install(app_name="again", reporter=reporter, flush_interval=0.02)
        requests.get(f"{server.url}/x", timeout=10)
        assert len(reporter.wait_for(2)) == 2
        tracer.uninstall()


def test_report_and_transaction_id(memory: MemoryReporter) -> None:
    with pytest.raises(TypeError):
        tracer.report("not a dict")  # type: ignore[arg-type]
    assert tracer.get_transaction_id() is None
    tracer.report({"outside": True})  # no current span: nothing happens
    with tracer.span("work", size=3) as s:
        assert s is not None
        assert tracer.get_transaction_id() == s.request_id
        assert tracer.current_span() is s
        tracer.report({"a": 1})
    assert tracer.current_span() is None
    tracer.flush()
    (span,) = memory.spans
    assert span["kind"] == "internal" and span["name"] == "work"
    assert span["tags"] == {"size": 3}
    assert [a["data"] for a in span["annotations"]] == [{"a": 1}]


def test_span_as_decorator_sync_and_async_and_errors(memory: MemoryReporter) -> None:
    @tracer.span("sync-step")
    def step(x: int) -> int:
        return x * 2

    @tracer.span("async-step")
    async def astep(x: int) -> int:
        await asyncio.sleep(0)
        return x + 1

    @tracer.span("failing")
    def fail() -> None:
        raise KeyError("k")

    with tracer.span("parent") as parent:
        assert step(2) == 4
        assert asyncio.run(astep(1)) == 2
        with pytest.raises(KeyError):
            fail()
    assert parent is not None
    tracer.flush()
    by_name = {s["name"]: s for s in memory.spans}
    assert set(by_name) == {"parent", "sync-step", "async-step", "failing"}
    for name in ("sync-step", "async-step", "failing"):
        assert by_name[name]["parent_id"] == parent.span_id
        assert by_name[name]["trace_id"] == parent.trace_id
    assert by_name["failing"]["error"]["type"] == "KeyError"
    assert by_name["parent"]["parent_id"] is None


def test_span_without_install_is_a_no_op() -> None:
    with tracer.span("nothing") as s:
        assert s is None
    assert tracer.flush() is True


def test_stats_accounting(memory: MemoryReporter) -> None:
    for i in range(25):
        with tracer.span(f"s{i}"):
            pass
    assert tracer.flush()
    stats = tracer.stats()
    assert stats["created"] == 25 and stats["delivered"] == 25
    assert stats["created"] == (
        stats["delivered"] + stats["dropped"] + stats["spooled"] + stats["pending"]
    )


def test_log_correlation(caplog: pytest.LogCaptureFixture) -> None:
    tracer.install(app_name="logs", reporter=reporters.create("memory"), log_correlation=True)
    logger = logging.getLogger("app")
    with caplog.at_level(logging.INFO, logger="app"):
        logger.info("outside")
        with tracer.span("op") as s:
            logger.info("inside")
    outside, inside = caplog.records
    assert outside.trace_id is None and outside.request_id is None  # type: ignore[attr-defined]
    assert s is not None
    assert inside.trace_id == s.trace_id  # type: ignore[attr-defined]
    assert inside.span_id == s.span_id  # type: ignore[attr-defined]
    assert inside.request_id == s.request_id  # type: ignore[attr-defined]
    tracer.uninstall()
    assert not hasattr(
        logging.getLogger("app").makeRecord("a", 20, "f", 1, "m", (), None), "trace_id"
    )


def test_suppressed_io_is_not_traced(memory: MemoryReporter, server: Server) -> None:
    from tracer.context import suppressed

    with suppressed():
        response = requests.get(f"{server.url}/quiet", timeout=10)
    assert "request-id" not in response.json()["headers"]


def test_span_tags_may_use_any_name(memory: MemoryReporter) -> None:
    with tracer.span("lookup", name="ann", tags=1, self=2):
        pass
    tracer.flush()
    (span,) = memory.spans
    assert span["name"] == "lookup"
    assert span["tags"] == {"name": "ann", "tags": 1, "self": 2}
