"""The locked paths a free-threaded build takes (``sys._is_gil_enabled()`` False), forced on
this build: every span end and start goes through one lock, and the counts stay exact under
threads that switch every microsecond."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

import reporters
import tracer
from tracer import freethreading, installer


class CountingLock:
    """A lock that counts how often it was taken."""

    made: ClassVar[list[CountingLock]] = []

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.taken = 0
        CountingLock.made.append(self)

    def __enter__(self) -> None:
        self._lock.acquire()
        self.taken += 1

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


@pytest.fixture
def locked(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    CountingLock.made.clear()
    monkeypatch.setattr(freethreading, "force_locks", True)
    monkeypatch.setattr(freethreading, "make_lock", CountingLock)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)
        tracer.uninstall()


def hammer(threads: int, each: int) -> None:
    start = threading.Barrier(threads)

    def work() -> None:
        start.wait()
        for i in range(each):
            with tracer.span(f"job-{i % 3}"):
                pass

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def runtime() -> Any:
    current = installer.runtime
    assert current is not None
    return current


def test_locked_processor_chain_counts_every_unsampled_span(locked: None) -> None:
    tracer.install(
        app_name="ft", reporter=reporters.create("memory"), sample_rate=0.0, metrics=False
    )
    before = runtime().collector.unsampled_dropped
    hammer(8, 500)
    assert runtime().collector.unsampled_dropped - before == 8 * 500
    # Every span's end went through the chain's lock.
    (lock,) = [
        c.cell_contents
        for c in runtime().chain.on_end.__closure__ or ()
        if isinstance(c.cell_contents, CountingLock)
    ]
    assert lock.taken >= 8 * 500


def test_locked_processor_chain_delivers_every_sampled_span(locked: None) -> None:
    reporter = reporters.create("memory")
    tracer.install(app_name="ft", reporter=reporter, flush_interval=0.02, metrics=False)
    hammer(8, 250)
    assert tracer.flush(timeout=30)
    assert len(reporter.find(kind="internal")) == 8 * 250
    assert tracer.stats()["created"] >= 8 * 250


def test_with_the_gil_nothing_is_wrapped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(freethreading, "force_locks", False)
    monkeypatch.setattr(sys, "_is_gil_enabled", lambda: True, raising=False)

    def count() -> None:
        pass

    assert freethreading.serialized(count) is count
    monkeypatch.setattr(sys, "_is_gil_enabled", lambda: False, raising=False)
    assert freethreading.locks_needed()
    assert freethreading.serialized(count) is not count
