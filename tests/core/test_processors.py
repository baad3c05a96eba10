"""Span processors: the runtime's ordered list that every span goes through (on_start, on_end)."""

from __future__ import annotations

import http.client
import logging
from typing import Any

import pytest

import reporters
import tracer
from reporters.memory import MemoryReporter
from tests.conftest import Server
from tracer import installer, safety
from tracer.context import suppressed
from tracer.metrics.recording import Recorder
from tracer.runtime import Runtime
from tracer.sampling import Collector
from tracer.span import SERVER, Span, SpanProcessor


class Seen(SpanProcessor):
    """Writes down what it is called with, and tags each finished span with its name."""

    def __init__(self, name: str, log: list[tuple[str, str, Span]]) -> None:
        self.name = name
        self.log = log

    def on_start(self, span: Span) -> None:
        self.log.append((self.name, "start", span))

    def on_end(self, span: Span) -> None:
        self.log.append((self.name, "end", span))
        span.set_tag(f"seen_by_{self.name}", span.duration_us >= 0)


class Raises(SpanProcessor):
    def on_end(self, span: Span) -> None:
        raise RuntimeError("processor failed")


def _runtime() -> Runtime:
    rt = installer.runtime
    assert rt is not None
    return rt


def _get(port: int, path: str) -> int:
    # The caller stands for another process: its http.client call makes no client span here.
    with suppressed():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            return response.status
        finally:
            conn.close()


def test_processors_run_in_order_and_the_collector_last(
    memory: MemoryReporter, server: Server
) -> None:
    rt = _runtime()
    log: list[tuple[str, str, Span]] = []
    first, second = Seen("first", log), Seen("second", log)
    rt.add_processor(first)
    rt.add_processor(second)
    rt.add_processor(first)  # a second add changes nothing
    assert rt.processors[-1] is rt.collector
    assert rt.processors.index(first) < rt.processors.index(second)

    assert _get(server.port, "/hello") == 200
    (record,) = memory.wait_for(1)
    # Both saw the server span start and end, in the order they were added.
    assert [(name, what) for name, what, _ in log] == [
        ("first", "start"),
        ("second", "start"),
        ("first", "end"),
        ("second", "end"),
    ]
    span = log[0][2]
    assert span.kind == SERVER and all(s is span for _, _, s in log)
    # The collector came after them: what they put on the span is in the record delivered.
    assert record["tags"] == {"seen_by_first": True, "seen_by_second": True}

    rt.remove_processor(first)
    rt.remove_processor(first)  # one not in the list is ignored
    log.clear()
    with tracer.span("internal"):
        pass
    assert [(name, what) for name, what, _ in log] == [("second", "start"), ("second", "end")]


def test_client_spans_start_with_their_url_set(memory: MemoryReporter, server: Server) -> None:
    import requests

    rt = _runtime()
    started: list[tuple[str | None, str | None]] = []

    class Urls(SpanProcessor):
        def on_start(self, span: Span) -> None:
            started.append((span.kind, span.url))

    rt.add_processor(Urls())
    assert requests.get(f"http://127.0.0.1:{server.port}/x", timeout=10).status_code == 200
    assert ("client", f"http://127.0.0.1:{server.port}/x") in started


def test_a_processor_that_raises_is_counted_logged_once_and_the_request_goes_on(
    memory: MemoryReporter, server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    rt = _runtime()
    log: list[tuple[str, str, Span]] = []
    rt.add_processor(Raises())
    rt.add_processor(Seen("after", log))
    with caplog.at_level(logging.WARNING, logger="tracer"):
        assert _get(server.port, "/one") == 200
        assert _get(server.port, "/two") == 200
        memory.wait_for(2)
    errors = safety.take_strict_errors()
    assert len(errors) == 2 and all(isinstance(e, RuntimeError) for e in errors)
    # The processors after it ran, and the spans were delivered.
    assert [what for _, what, _ in log].count("end") == 2
    assert len(memory.find(kind="server")) == 2
    assert safety._counts["processor Raises.on_end"] == 2
    warnings = [r for r in caplog.records if "processor Raises.on_end" in r.getMessage()]
    assert len(warnings) == 1


def test_the_chain_is_built_when_the_list_changes_not_per_span(memory: MemoryReporter) -> None:
    rt = _runtime()
    on_end = rt.chain.on_end
    for _ in range(3):
        with tracer.span("s") as s:
            assert s is not None and s.local.chain is rt.chain
    assert rt.chain.on_end is on_end
    rt.add_processor(Seen("x", []))
    assert rt.chain.on_end is not on_end


def test_metrics_record_through_a_processor_and_leave_with_uninstall() -> None:
    tracer.install(app_name="processors", reporter=reporters.create("memory"), metrics=True)
    rt = _runtime()
    recorders = [p for p in rt.processors if isinstance(p, Recorder)]
    assert len(recorders) == 1 and rt.processors[-1] is rt.collector
    with tracer.span("x"):
        pass
    tracer.uninstall()
    assert rt.processors == ()
    # Nothing is set on the runtime or the collector from outside any more.
    assert not hasattr(rt, "metrics_started") and not hasattr(rt.collector, "record")

    tracer.install(
        app_name="processors",
        reporter=reporters.create("memory"),
        metrics=False,
        n_plus_one_threshold=None,
    )
    rt = _runtime()
    assert rt.processors == (rt.collector,) and rt.chain.on_start is None


def test_a_span_that_ends_after_uninstall_goes_nowhere() -> None:
    reporter = reporters.create("memory")
    tracer.install(app_name="processors", reporter=reporter)
    rt = _runtime()
    log: list[tuple[str, str, Span]] = []
    rt.add_processor(Seen("late", log))
    late = tracer.span("late")
    late.__enter__()
    tracer.uninstall()
    late.__exit__(None, None, None)
    assert [what for _, what, _ in log] == ["start"]
    assert reporter.find(name="late") == []


def test_stats_before_install_has_the_shape_of_stats_after() -> None:
    before = tracer.stats()
    tracer.install(app_name="stats", reporter=reporters.create("memory"))
    after = tracer.stats()
    tracer.uninstall()

    def shape(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: shape(v) for k, v in value.items()}
        return type(value)

    assert shape(before) == shape(after)
    assert "reports" in before
    assert before["created"] == before["delivered"] == before["pending"] == 0
    assert before["sample_probability"] == 1.0


def test_the_collector_is_a_processor() -> None:
    submitted: list[Span] = []
    collector = Collector(submitted.append)
    assert isinstance(collector, SpanProcessor)
    assert collector.on_finish == collector.on_end
