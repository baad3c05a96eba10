"""What prometheus-client's process, platform and GC collectors lack: GC pauses, threads."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from tracer.gchook import HOOK
from tracer.metrics.recording import Series, histogram

# Collections of the youngest generation take microseconds, full ones of a large heap seconds.
GC_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0)
GC_NAME = "python_gc_pause_seconds"


class GcPauses:
    """A histogram of garbage-collection pauses per generation, fed by tracer's one
    ``gc.callbacks`` entry (:mod:`tracer.gchook`), which does a constant amount of work per
    collection: a clock read at the start, a ``bisect`` and two increments at the end."""

    def __init__(self) -> None:
        self.bounds_ns = [round(b * 1e9) for b in GC_BUCKETS]
        width = len(self.bounds_ns) + 2
        self.series: list[Series] = [[0] * width for _ in range(3)]
        self._installed = False

    def install(self) -> None:
        if not self._installed:
            HOOK.bounds_ns = self.bounds_ns
            HOOK.series = self.series
            HOOK.use("metrics")
            self._installed = True

    def uninstall(self) -> None:
        if self._installed:
            self._installed = False
            if HOOK.series is self.series:
                HOOK.series = None
            HOOK.release("metrics")

    def reset(self) -> None:
        for series in self.series:
            series[:] = [0] * len(series)

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
