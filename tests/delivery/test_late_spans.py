"""A span queued after the exit's work took the queue (another thread finished it while exit
ran, or after): no thread is left to send it, so it is spooled, else counted dropped, never left
pending."""

from __future__ import annotations

from pathlib import Path

from tracer.delivery import Pipeline
from tracer.delivery.spool import Spool
from tracer.reporters.memory import MemoryReporter
from tracer.span import CLIENT, LocalTrace, Span


def _span(name: str) -> Span:
    span = Span(CLIENT, name, "a" * 32, "r", None, LocalTrace(True), True)
    span.finish()
    return span


def test_a_span_queued_after_exit_is_spooled_by_the_next_stop(tmp_path: Path) -> None:
    spool = tmp_path / "late.sqlite"
    reporter = MemoryReporter()
    pipeline = Pipeline(reporter, "late", "host", spool_path=spool, exit_timeout=2.0)
    pipeline.start()
    pipeline.submit(_span("in-time"))
    assert pipeline.stop()
    assert [s["name"] for s in reporter.spans] == ["in-time"]
    pipeline.submit(_span("late"))
    pipeline.stop()
    stats = pipeline.stats()
    assert (stats["created"], stats["delivered"], stats["spooled"]) == (2, 1, 1), stats
    assert stats["pending"] == 0, stats
    assert Spool(spool).pending()[1] == 1


def test_a_span_queued_after_exit_without_a_spool_is_counted_dropped() -> None:
    pipeline = Pipeline(MemoryReporter(), "late", "host", exit_timeout=2.0)
    pipeline.start()
    assert pipeline.stop()
    pipeline.submit(_span("late"))
    pipeline.stop()
    stats = pipeline.stats()
    assert stats["pending"] == 0 and stats["dropped_by_reason"] == {"exit": 1}, stats
