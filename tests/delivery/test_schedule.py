"""The sender's schedule (backoff, max_backoff, Retry-After, max_retries) on a simulated clock.

The pipeline reads time from, and waits with, the clock it is given. Here that clock's ``wait``
moves simulated time on by what was asked instead of sleeping, so an outage of minutes plays out
in moments of real time, against a real HTTP receiver on 127.0.0.1 that answers 503 for as long
as its plan says. Times asserted below are simulated seconds: they follow from the schedule
alone, whatever the machine's load. One real-time outage per transport stays in test_faults.py,
test_pipeline.py and tests/export (marked ``slow``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import reporters
from tests.support.receivers import HttpSink
from tests.support.waiting import eventually
from tracer.delivery import Pipeline
from tracer.delivery.clock import Clock
from tracer.span import CLIENT, LocalTrace, Span

MAX_BACKOFF = 5.0


class SimulatedClock(Clock):
    """Time that passes only while the sender waits: a wait of ``s`` seconds on the sender's
    thread that nothing cuts short moves the clock on by ``s``. Other threads (flush()) wait a
    moment of real time and leave the clock alone, so the time between two sends is exactly
    what the sender's schedule made it, whatever the machine's load."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def wait(self, event: threading.Event, seconds: float) -> bool:
        if threading.current_thread().name != "tracer-sender":
            return event.wait(min(seconds, 0.001))
        if event.is_set():
            return True
        # Let the other threads (the worker, the reporter's, the receiver's) take the GIL.
        time.sleep(0)
        self.now += seconds
        return event.is_set()


class Recording:
    """The HTTP reporter, noting the simulated time and the pipeline's spooled count at each
    send (what a schedule is read from)."""

    def __init__(self, url: str, clock: SimulatedClock) -> None:
        self.inner = reporters.http.create(url, timeout=5.0)
        self.clock = clock
        self.pipeline: Pipeline | None = None
        self.sends: list[tuple[float, int]] = []

    def send(self, data: dict[str, Any], callback: Any) -> None:
        spooled = self.pipeline.ledger.stats()["spooled"] if self.pipeline else 0
        self.sends.append((self.clock.now, spooled))
        self.inner.send(data, callback)

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
def sink() -> Iterator[HttpSink]:
    receiver = HttpSink().start()
    try:
        yield receiver
    finally:
        receiver.stop()


def pipeline_for(
    sink: HttpSink, tmp_path: Any, **options: Any
) -> tuple[Pipeline, Recording, SimulatedClock]:
    clock = SimulatedClock()
    reporter = Recording(f"http://127.0.0.1:{sink.port}/spans", clock)
    settings: dict[str, Any] = {
        "batch_size": 100,
        "flush_interval": 0.05,
        "max_retries": 3,
        "max_backoff": MAX_BACKOFF,
        "exit_timeout": 2.0,
        "spool_path": tmp_path / "schedule.sqlite",
    }
    settings.update(options)
    pipeline = Pipeline(reporter, "schedule", "host", clock=clock, **settings)
    reporter.pipeline = pipeline
    pipeline.start()
    return pipeline, reporter, clock


def refuse(sink: HttpSink, times: int, headers: dict[str, str] | None = None) -> None:
    sink.plan.extend((503, dict(headers or {}), b"down") for _ in range(times))


def submit(pipeline: Pipeline, n: int) -> set[str]:
    ids = set()
    for i in range(n):
        span = Span(CLIENT, f"op{i}", "a" * 32, "r", None, LocalTrace(True), True)
        span.finish()
        ids.add(span.span_id)
        pipeline.submit(span)
    return ids


def delivered_ids(sink: HttpSink, refused: int) -> list[str]:
    """The span ids of the requests answered 200: those after the first ``refused``."""
    return [s["span_id"] for r in sink.received[refused:] for s in r.body["spans"]]


def test_flush_rides_out_an_outage_of_minutes_with_backoff_capped_at_max_backoff(
    sink: HttpSink, tmp_path: Any
) -> None:
    """30 refusals in a row: flush(3600) keeps the batch (no spooling after max_retries while it
    waits) and delivers it once; the pauses grow to max_backoff and never past it."""
    pipeline, reporter, clock = pipeline_for(sink, tmp_path)
    refuse(sink, 30)
    start = clock.now
    made = submit(pipeline, 100)
    try:
        assert pipeline.flush(timeout=3600)
        stats = pipeline.stats()
    finally:
        pipeline.stop()
    assert len(sink.received) == 31
    assert sorted(delivered_ids(sink, 30)) == sorted(made)
    assert stats["delivered"] == 100 and stats["spooled"] == 0 and stats["pending"] == 0
    # Kept in memory through the outage, never spooled (and then replayed) on the way.
    assert all(spooled == 0 for _, spooled in reporter.sends)
    pauses = [b[0] - a[0] for a, b in zip(reporter.sends, reporter.sends[1:], strict=False)]
    # Jitter takes a pause down to half; nothing but exit lengthens one past max_backoff.
    assert max(pauses) <= MAX_BACKOFF + 0.01, pauses
    assert all(p >= MAX_BACKOFF / 2 - 0.01 for p in pauses[10:]), pauses
    # Minutes of outage, simulated.
    assert clock.now - start > 20 * MAX_BACKOFF / 2


def test_a_batch_goes_to_the_spool_after_max_retries_when_no_flush_waits(
    sink: HttpSink, tmp_path: Any
) -> None:
    """Without a flush, a failing batch is tried max_retries + 1 times, then spooled; once the
    receiver is back, it is replayed from the spool and delivered once."""
    pipeline, reporter, _ = pipeline_for(sink, tmp_path, max_retries=3)
    refuse(sink, 8)
    try:
        made = submit(pipeline, 100)
        # Spooled, then replayed: on the simulated clock both may be over between two looks at
        # stats(), so what the spool held is read from the sends.
        eventually(lambda: pipeline.stats()["delivered"] == 100, what="the replay")
        stats = pipeline.stats()
    finally:
        pipeline.stop()
    before_spooling = [s for s in reporter.sends if s[1] == 0]
    assert len(before_spooling) == 4
    # Every later send was the batch from the spool.
    assert all(spooled == 100 for _, spooled in reporter.sends[4:]), reporter.sends
    assert sorted(delivered_ids(sink, 8)) == sorted(made)
    assert stats["spooled"] == 0 and stats["pending"] == 0 and stats["dropped"] == 0


def test_retry_after_is_waited_for_up_to_max_backoff(sink: HttpSink, tmp_path: Any) -> None:
    """A 503 with Retry-After: 30 holds the next attempt back 30 s when max_backoff allows it,
    and max_backoff when it is shorter."""
    for cap, want in ((60.0, 30.0), (MAX_BACKOFF, MAX_BACKOFF)):
        sink.received.clear()
        pipeline, reporter, _ = pipeline_for(sink, tmp_path, max_backoff=cap)
        refuse(sink, 1, {"Retry-After": "30"})
        try:
            submit(pipeline, 10)
            assert pipeline.flush(timeout=600)
        finally:
            pipeline.stop()
        (first, _), (second, _) = reporter.sends
        assert want <= second - first <= want + 0.01, (cap, second - first)


def test_a_flush_that_times_out_while_the_receiver_refuses_spools_what_it_waited_for(
    sink: HttpSink, tmp_path: Any
) -> None:
    """flush(120) through an outage longer than that: False, and by then what it waited for is
    in the spool, not pending."""
    pipeline, _, clock = pipeline_for(sink, tmp_path)
    refuse(sink, 1000)
    start = clock.now
    try:
        submit(pipeline, 250)
        assert pipeline.flush(timeout=120) is False
        stats = pipeline.stats()
    finally:
        pipeline.stop()
    assert clock.now - start >= 120
    assert stats["spooled"] == 250 and stats["pending"] == 0, stats
    assert stats["delivered"] == 0
