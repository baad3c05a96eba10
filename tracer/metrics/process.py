"""What prometheus-client's process, platform and GC collectors lack: GC pauses, threads."""

from __future__ import annotations

import gc
import threading
import time
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric

from tracer import safety
from tracer.metrics.recording import Series, histogram

# Collections of the youngest generation take microseconds, full ones of a large heap seconds.
GC_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0)
GC_NAME = "python_gc_pause_seconds"


class GcPauses:
    """A histogram of garbage-collection pauses per generation, fed by ``gc.callbacks``.

    The callback does a constant amount of work per collection: a clock read at the start, and
    a ``bisect`` and two increments at the end.
    """

    def __init__(self) -> None:
        self.bounds_ns = [round(b * 1e9) for b in GC_BUCKETS]
        width = len(self.bounds_ns) + 2
        self.series: list[Series] = [[0] * width for _ in range(3)]
        self._started = [0]
        self._installed = False

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        try:
            if phase == "start":
                self._started[0] = time.perf_counter_ns()
                return
            began = self._started[0]
            if not began:
                return
            pause = time.perf_counter_ns() - began
            self._started[0] = 0
            series = self.series[min(2, int(info["generation"]))]
            series[bisect_left(self.bounds_ns, pause)] += 1
            series[-1] += pause
        except Exception as exc:
            safety.internal_error("metrics.gc", exc)

    def install(self) -> None:
        if not self._installed:
            gc.callbacks.append(self._callback)
            self._installed = True

    def uninstall(self) -> None:
        if self._installed:
            self._installed = False
            try:
                gc.callbacks.remove(self._callback)
            except ValueError:
                pass

    def reset(self) -> None:
        for series in self.series:
            series[:] = [0] * len(series)
        self._started[0] = 0

    def rows(self) -> list[tuple[list[str], Series]]:
        return [([str(generation)], list(s)) for generation, s in enumerate(self.series)]


def gc_family(rows: list[tuple[list[str], Series]]) -> Metric:
    return histogram(
        GC_NAME,
        "Time the garbage collector stopped the program, per generation collected.",
        ("generation",),
        GC_BUCKETS,
        rows,
        1e9,
    )


def thread_families() -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "python_threads",
        "Python threads alive (threading.active_count()).",
        threading.active_count(),
    )
