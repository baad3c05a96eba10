"""Report batches (metrics, memory) take the spans' road: every reporter, retry, spool, ledger."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import tracer
from tracer import installer


class Recorder:
    """A user reporter that fails its first ``failures`` calls, then keeps what it gets."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.batches: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def send(self, data: dict[str, Any], callback: Any) -> None:
        with self.lock:
            if self.failures:
                self.failures -= 1
                callback(ConnectionError("down"))
                return
            self.batches.append(data)
        callback(None)

    def reports(self, kind: str) -> list[dict[str, Any]]:
        with self.lock:
            return [b for b in self.batches if kind in b]


def submit(kind: str, body: dict[str, Any]) -> None:
    rt = installer.runtime
    assert rt is not None
    rt.pipeline.submit_report(kind, body)


def test_a_report_reaches_the_reporter_in_place_of_spans() -> None:
    reporter = Recorder()
    tracer.install(app_name="reports", reporter=reporter, flush_interval=0.02)
    submit("metrics", {"requests": {"2xx": 3}})
    assert tracer.flush(10)
    (got,) = reporter.reports("metrics")
    assert got["metrics"] == {"requests": {"2xx": 3}}
    assert "spans" not in got
    assert got["service"] == "reports" and isinstance(got["pid"], int)
    assert isinstance(got["sent_at_us"], int)
    counts = tracer.stats()["reports"]["metrics"]
    assert counts["created"] == counts["delivered"] == 1
    assert counts["pending"] == counts["dropped"] == counts["spooled"] == 0
    # Reports count apart from spans.
    assert tracer.stats()["created"] == 0


def test_a_failing_reporter_gets_the_report_again_from_the_spool(tmp_path: Path) -> None:
    reporter = Recorder(failures=3)
    tracer.install(
        app_name="reports",
        reporter=reporter,
        flush_interval=0.02,
        max_retries=0,
        max_backoff=0.05,
        spool_path=str(tmp_path / "spool.sqlite"),
    )
    submit("memory", {"event": "leak", "growth": 5})
    # The reporter keeps the batch before it calls back; the ledger counts it after.
    assert tracer.flush(20)
    (got,) = reporter.reports("memory")
    assert got["memory"] == {"event": "leak", "growth": 5}
    counts = tracer.stats()["reports"]["memory"]
    assert counts["created"] == counts["delivered"] == 1
    assert counts["spooled"] == counts["pending"] == 0


def test_a_report_left_at_exit_is_spooled_and_replayed_by_the_next_process(
    tmp_path: Path,
) -> None:
    spool = str(tmp_path / "spool.sqlite")
    down = Recorder(failures=10**6)
    tracer.install(app_name="reports", reporter=down, flush_interval=0.02, spool_path=spool)
    submit("metrics", {"n": 1})
    tracer.uninstall()
    assert not down.batches
    up = Recorder()
    tracer.install(app_name="reports", reporter=up, flush_interval=0.02, spool_path=spool)

    def replayed() -> int:
        counts = tracer.stats()["reports"].get("metrics", {})
        return int(counts.get("replayed", 0))

    # The reporter keeps the batch before it calls back; the ledger counts it after.
    deadline = time.monotonic() + 20
    while not replayed() and time.monotonic() < deadline:
        time.sleep(0.02)
    (got,) = up.reports("metrics")
    assert got["metrics"] == {"n": 1}
    assert replayed() == 1


class SpansOnly:
    """A reporter written before reports existed: it reads ``data["spans"]``."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def send(self, data: dict[str, Any], callback: Any) -> None:
        spans = data["spans"]  # KeyError for a report batch
        with self.lock:
            self.spans.extend(spans)
        callback(None)


def test_a_reporter_that_fails_on_reports_still_gets_every_span(tmp_path: Path) -> None:
    reporter = SpansOnly()
    tracer.install(
        app_name="reports",
        reporter=reporter,
        flush_interval=0.02,
        max_backoff=0.05,
        spool_path=str(tmp_path / "spool.sqlite"),
    )
    with tracer.span("first"):
        pass
    # Spans are delivered: from now on a failing report is the report's trouble.
    assert tracer.flush(10)
    made = 1
    for round_ in range(20):
        submit("metrics", {"round": round_})
        for _ in range(5):
            with tracer.span("work"):
                made += 1
        time.sleep(0.01)
    deadline = time.monotonic() + 20
    while len(reporter.spans) < made and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(reporter.spans) == made
    stats = tracer.stats()
    assert stats["delivered"] == stats["created"] == made and stats["spooled"] == 0
    deadline = time.monotonic() + 20
    while tracer.stats()["reports"]["metrics"]["pending"] and time.monotonic() < deadline:
        time.sleep(0.02)
    counts = tracer.stats()["reports"]["metrics"]
    assert counts["created"] == 20 and counts["delivered"] == 0
    assert counts["dropped"] == 20 == counts["dropped_by_reason"]["reporter_error"]
