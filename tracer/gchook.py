"""The one ``gc.callbacks`` entry tracer adds, shared by the GC-pause histogram (tracer.metrics)
and the memory watcher (tracer.memory).

Most of what a callback costs a collection is CPython's price for calling any Python function
there (it builds the info dict and calls twice, at start and stop), so the features that need
the collector's events share one callback instead of paying that price once each.

It runs inside every collection, generation 0 included, on whatever thread triggered it: it
notes the time on "start"; on "stop" it adds the pause to the total and to the histogram row of
its generation (when metrics registered one) and, for a full collection, hands one wake-up to
the memory watcher's queue (whose ``put`` is reentrant). It never reads files, never allocates
a container and never takes a lock: a lock taken there could be the one the interrupted code
already holds.
"""

from __future__ import annotations

import gc
import queue
from bisect import bisect_left
from time import perf_counter_ns
from typing import Any


class GcHook:
    """The shared callback and what it counts; see the module."""

    __slots__ = (
        "bounds_ns",
        "entry",
        "full",
        "pause_ns",
        "pending",
        "series",
        "started",
        "users",
        "wake",
    )

    def __init__(self) -> None:
        # The one bound method object put in gc.callbacks, so that remove() finds it again (a
        # bound method is also cheaper for the collector to call than an instance).
        self.entry = self.callback
        self.started = 0
        #: Time spent in collections while the hook was in, in nanoseconds (all generations).
        self.pause_ns = 0
        #: Full (generation 2) collections seen.
        self.full = 0
        #: Metrics' pause histogram: a row per generation of counts per bucket (``bounds_ns``,
        #: then +Inf) and the sum in nanoseconds; None when metrics are off.
        self.series: list[list[int]] | None = None
        self.bounds_ns: list[int] = []
        #: The memory watcher's wake-up queue, and whether a wake-up is waiting in it.
        self.wake: queue.SimpleQueue[None] | None = None
        self.pending = False
        # Changed only by install(), uninstall() and a forked child's start, which the
        # installer's lock (or the fork) keeps to one thread at a time.
        self.users: set[str] = set()

    def callback(self, phase: str, info: dict[str, Any]) -> None:
        """The ``gc.callbacks`` entry."""
        if phase == "start":
            self.started = perf_counter_ns()
            return
        began = self.started
        if not began:
            return
        pause = perf_counter_ns() - began
        self.started = 0
        self.pause_ns += pause
        generation = info["generation"]
        series = self.series
        if series is not None:
            row = series[generation if generation < 2 else 2]
            row[bisect_left(self.bounds_ns, pause)] += 1
            row[-1] += pause
        if generation == 2:
            self.full += 1
            wake = self.wake
            if wake is not None and not self.pending:
                self.pending = True
                wake.put(None)

    def use(self, user: str) -> None:
        """``user`` needs the hook: it is in ``gc.callbacks`` from now on."""
        if self.entry not in gc.callbacks:
            gc.callbacks.append(self.entry)
        self.users.add(user)

    def release(self, user: str) -> None:
        """``user`` is done; the hook leaves ``gc.callbacks`` with its last user."""
        self.users.discard(user)
        if not self.users:
            try:
                gc.callbacks.remove(self.entry)
            except ValueError:
                pass


HOOK = GcHook()
