"""The memory watcher: memwatch's ``stats`` and ``leak`` events for a Python process.

Two parts with very different budgets:

* tracer's one ``gc.callbacks`` entry (:mod:`tracer.gchook`, shared with the metrics' pause
  histogram). It runs inside every collection, generation 0 included, on whatever thread
  triggered it, so it only notes the time on "start", adds the pause on "stop" and, for a full
  collection, hands a wake-up to the watcher's thread. It never reads ``/proc``, never allocates
  a container and never takes a lock: a lock taken there could be the one the interrupted code
  already holds.
* :class:`Watcher`, one daemon thread. Woken after a full collection (or by its timer when none
  came for ``memory_interval`` seconds), it reads the Python heap (``sys.getallocatedblocks()``)
  and RSS (``/proc/self/statm``), feeds each to its own :class:`Base`, calls the listeners and
  sends reports. See docs/memory.md for what "base" means and the leak rule.
"""

from __future__ import annotations

import copy
import gc
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any

from tracer import gchook, safety

log = logging.getLogger("tracer")

# memwatch's two averaging periods: the estimated base follows about the last RECENT
# observations, the usage trend compares it with an average over ANCIENT of them.
RECENT_PERIOD = 10
ANCIENT_PERIOD = 120
# min and max are recorded once this many observations have settled start-up noise (memwatch).
SETTLE = 3

HEAP = "heap"
RSS = "rss"
UNITS = {HEAP: "blocks", RSS: "bytes"}

try:
    _PAGE = os.sysconf("SC_PAGE_SIZE")
except (AttributeError, OSError, ValueError):  # pragma: no cover - not POSIX
    _PAGE = 4096


def read_rss() -> int | None:
    """The resident set size in bytes, or None where ``/proc`` is not there."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds")[:-6] + "Z"


def nice_size(n: float) -> str:
    """``11.67 MB`` (decimal units, as memwatch wrote them)."""
    for unit in ("bytes", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} bytes" if unit == "bytes" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} GB"  # pragma: no cover


def nice_count(n: float) -> str:
    """``41,300 blocks``, ``1.25 M blocks``."""
    if abs(n) < 1_000_000:
        return f"{n:,.0f} blocks"
    if abs(n) < 1_000_000_000:
        return f"{n / 1e6:.2f} M blocks"
    return f"{n / 1e9:.2f} G blocks"


def nice_seconds(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s" if s >= 10 else f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


class Base:
    """memwatch's base tracking for one measure: the value after each observation, its estimated
    base (a decaying average), the usage trend, min and max, and the leak rule.

    The leak rule is memwatch's: the base grew at ``window`` consecutive observations. Three
    additions keep a service that is only noisy, bursty or still starting from raising it
    (measured in benchmarks/README.md): observations before ``warmup_until`` only set the level;
    the growth must go on for ``span`` seconds as well (memwatch counted collections, and a
    service that collects often makes five of them in a fraction of a second, inside one burst);
    and the streak must end above the highest base seen before it by at least ``min_growth``
    (an absolute floor) and ``min_fraction`` of that base.
    """

    def __init__(
        self,
        measure: str,
        window: int,
        min_growth: float,
        min_fraction: float,
        warmup_until: float,
        span: float = 0.0,
    ) -> None:
        self.measure = measure
        self.window = window
        self.span = span
        self.min_growth = min_growth
        self.min_fraction = min_fraction
        self.warmup_until = warmup_until
        self.count = 0
        self.last: int | None = None
        self._last_time = 0.0
        self.recent = 0.0
        self.ancient = 0.0
        self.min: int | None = None
        self.max: int | None = None
        # The highest base before the current streak, and where the streak started.
        self.peak: int | None = None
        self.streak = 0
        self.streak_start: tuple[float, int] | None = None
        self.streak_full = True
        self.leaks = 0

    def observe(self, value: int, now: float, full: bool) -> dict[str, Any] | None:
        """Record one observation; the leak event's dict when this one completes a leak."""
        leak = None
        last = self.last
        if now < self.warmup_until or last is None:
            self._reset_streak(value, now)
        elif value > last:
            if self.streak == 0:
                self.streak_start = (self._last_time, last)
                self.streak_full = True
            self.streak += 1
            self.streak_full = self.streak_full and full
            assert self.streak_start is not None
            # Enough growths, for long enough; until both, the streak goes on.
            if self.streak >= self.window and now - self.streak_start[0] >= self.span:
                leak = self._leak(value, now)
        else:
            self._reset_streak(value, now)
        self.last = value
        self._last_time = now
        self._average(value)
        return leak

    def _reset_streak(self, value: int, now: float) -> None:
        # The streak (if any) is over: what it reached is part of the known level now.
        self.peak = max(v for v in (self.peak, self.last, value) if v is not None)
        self.streak = 0
        self.streak_start = None

    def _leak(self, value: int, now: float) -> dict[str, Any] | None:
        assert self.streak_start is not None
        start_time, start_value = self.streak_start
        observations = self.streak
        peak = self.peak if self.peak is not None else start_value
        # memwatch starts counting again after a report, so a steady leak reports once per window.
        self.streak = 0
        self.streak_start = None
        above = value - peak
        if above < self.min_growth or above < self.min_fraction * peak:
            # Growth back to a level seen before, or too little to tell from noise.
            self.peak = max(peak, value)
            return None
        self.peak = value
        self.leaks += 1
        growth = value - start_value
        seconds = max(now - start_time, 1e-6)
        per_hour = growth * 3600.0 / seconds
        what = "full GCs" if self.streak_full else "observations"
        nice = nice_size if self.measure == RSS else nice_count
        name = "RSS" if self.measure == RSS else "heap"
        return {
            "start": _iso(start_time),
            "end": _iso(now),
            "growth": growth,
            "reason": (
                f"{name} growth over {observations} consecutive {what}"
                f" ({nice_seconds(seconds)}) - {nice(per_hour)}/hr"
            ),
            "measure": self.measure,
            "unit": UNITS[self.measure],
            "observations": observations,
            "seconds": round(seconds, 3),
            "growth_per_hour": round(per_hour),
            "base": value,
        }

    def _average(self, value: int) -> None:
        self.count += 1
        n = self.count
        if n < RECENT_PERIOD:
            # Too few observations to average: start-up swings would dominate (memwatch).
            self.recent = self.ancient = float(value)
        else:
            self.recent = (self.recent * (RECENT_PERIOD - 1) + value) / RECENT_PERIOD
            period = min(ANCIENT_PERIOD, n)
            self.ancient = (self.ancient * (period - 1) + value) / period
        if n >= SETTLE:
            self.min = value if self.min is None else min(self.min, value)
            self.max = value if self.max is None else max(self.max, value)

    def fields(self) -> dict[str, Any]:
        """memwatch's fields for this measure."""
        trend = 0.0
        if self.ancient:
            trend = round((self.recent - self.ancient) / self.ancient * 100.0, 1)
        return {
            "current_base": self.last,
            "estimated_base": None if self.last is None else round(self.recent),
            "usage_trend": trend,
            "min": self.min,
            "max": self.max,
        }


# Python 3.14's incremental collector reports its automatic collections as generation 1 (the
# young generation plus an increment of the old); only ``gc.collect()`` is generation 2 there,
# so the full collections the hook wakes the watcher for come from explicit calls, and the timer
# makes the other observations.
GcHook = gchook.GcHook


Listener = Callable[[dict[str, Any]], Any]


class Watcher:
    """The watcher's thread and state for one process (a forked child makes its own)."""

    def __init__(
        self,
        interval: float,
        window: int,
        listeners: Callable[[str], Iterable[Listener]],
        submit: Callable[[str, dict[str, Any]], None] | None = None,
        on_leak: Callable[[dict[str, Any]], Any] | None = None,
        span: float = 0.0,
    ) -> None:
        self.interval = interval
        self.window = window
        self.listeners = listeners
        self.submit = submit
        self.on_leak = on_leak
        self.started_at = time.time()
        # Start-up fills caches, pools and imports, which looks like a leak: one interval of
        # observations sets the level before the leak rule counts.
        warmup = self.started_at + interval
        self.heap = Base(HEAP, window, 1000, 0.01, warmup, span)
        self.rss = Base(RSS, window, 1 << 20, 0.01, warmup, span)
        self.wake: queue.SimpleQueue[None] = queue.SimpleQueue()
        self.hook = gchook.HOOK
        # What the shared hook had counted before this watcher: its figures start from here.
        self._pause_base = self.hook.pause_ns
        self._gc_base = self._gc_counts()
        self._seen_full = self.hook.full
        self._observations = 0
        self._last_observed = time.monotonic()
        self._last_sent = self._last_observed
        self._last_stats: dict[str, Any] | None = None
        self._stop = False
        self._cond = threading.Condition()
        self._observing = threading.RLock()
        self._done = 0  # observations finished, for gc() callers waiting on one
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self.hook.wake = self.wake
        self.hook.pending = False
        self._seen_full = self.hook.full
        self.hook.use("memory")
        self._thread = threading.Thread(target=self._run, name="tracer-memory", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop = True
        if self.hook.wake is self.wake:
            self.hook.wake = None
        self.hook.release("memory")
        self.wake.put(None)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def running(self) -> bool:
        return not self._stop and self._thread is not None and self._thread.is_alive()

    # -- the thread ------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop:
            wait = self._last_observed + self.interval - time.monotonic()
            try:
                self.wake.get(timeout=max(wait, 0.0))
            except queue.Empty:
                pass
            if self._stop:
                break
            try:
                self.hook.pending = False
                if self.hook.full != self._seen_full:
                    self.observe("full_gc")
                elif time.monotonic() - self._last_observed >= self.interval:
                    self.observe("timer")
            except BaseException as exc:
                safety.internal_error("memory.watch", exc)

    def observe(self, trigger: str) -> dict[str, Any]:
        """Take one observation, call the listeners and send what the rate limit lets through."""
        # Only the watcher's thread observes, but for gc() from a caller whose wait timed out;
        # the lock is never taken inside a collection.
        with self._observing:
            return self._observe(trigger)

    def _observe(self, trigger: str) -> dict[str, Any]:
        now = time.time()
        self._seen_full = self.hook.full
        self._last_observed = time.monotonic()
        self._observations += 1
        blocks = sys.getallocatedblocks()
        rss = read_rss()
        full = trigger != "timer"
        leaks = []
        leak = self.heap.observe(blocks, now, full)
        if leak is not None:
            leaks.append(leak)
        if rss is not None:
            leak = self.rss.observe(rss, now, full)
            if leak is not None:
                leaks.append(leak)
        stats = self._stats(now, trigger, blocks, rss)
        self._last_stats = stats
        self._emit("stats", stats)
        if self.submit is not None and self._last_observed - self._last_sent >= self.interval:
            self._last_sent = self._last_observed
            self._send({"event": "stats", **stats})
        for leak in leaks:
            self._emit("leak", leak)
            self._send({"event": "leak", **leak})
            if self.on_leak is not None:
                try:
                    self.on_leak(leak)
                except BaseException as exc:
                    safety.internal_error("memory.on_leak", exc)
        with self._cond:
            self._done += 1
            self._cond.notify_all()
        return stats

    def _send(self, body: dict[str, Any]) -> None:
        if self.submit is not None:
            try:
                self.submit("memory", body)
            except Exception as exc:
                safety.internal_error("memory.report", exc)

    def _emit(self, event: str, data: dict[str, Any]) -> None:
        for fn in self.listeners(event):
            try:
                # Each listener gets its own copy: one that changes it cannot change the next.
                fn(copy.deepcopy(data))
            except BaseException as exc:  # SystemExit too: it would end the watcher's thread
                safety.internal_error(f"memory.on({event!r})", exc)

    # -- numbers ---------------------------------------------------------------------------------

    @staticmethod
    def _gc_counts() -> tuple[int, int, int]:
        gens = gc.get_stats()
        full = gens[-1]["collections"]
        younger = sum(g["collections"] for g in gens[:-1])
        uncollectable = sum(g["uncollectable"] for g in gens)
        return full, younger, uncollectable

    def _stats(self, now: float, trigger: str, blocks: int, rss: int | None) -> dict[str, Any]:
        full, younger, uncollectable = self._gc_counts()
        base_full, base_younger, base_uncollectable = self._gc_base
        out: dict[str, Any] = {
            "time": _iso(now),
            "trigger": trigger,
            "num_full_gc": full - base_full,
            "num_inc_gc": younger - base_younger,
        }
        out.update(self.heap.fields())
        out["rss"] = self.rss.fields()
        out["rss_bytes"] = rss
        out["allocated_blocks"] = blocks
        out["gc_pause_seconds"] = round((self.hook.pause_ns - self._pause_base) / 1e9, 6)
        out["uncollectable"] = uncollectable - base_uncollectable
        out["leaks"] = {HEAP: self.heap.leaks, RSS: self.rss.leaks}
        return out

    def collect(self, timeout: float = 10.0) -> dict[str, Any]:
        """``gc.collect()``, then the stats of the observation the watcher's thread makes of it."""
        if threading.current_thread() is self._thread:
            # A listener asked: the thread cannot wait for itself.
            gc.collect()
            return self.observe("full_gc")
        with self._cond:
            target = self._done + 1
        gc.collect()
        with self._cond:
            if self._cond.wait_for(lambda: self._done >= target or not self.running, timeout):
                if self._last_stats is not None and self._done >= target:
                    return dict(self._last_stats)
        # The thread is gone or stuck (in a listener, say): observe here instead, unless it
        # holds the observation.
        if self._observing.acquire(timeout=timeout):
            try:
                return self._observe("full_gc")
            finally:
                self._observing.release()
        return dict(self._last_stats) if self._last_stats is not None else idle_stats()

    def metrics(self) -> dict[str, Any]:
        """Numbers for the metrics collector: bases and leak counts."""
        return {
            "heap_base": self.heap.last,
            "rss_base": self.rss.last,
            "leaks": {HEAP: self.heap.leaks, RSS: self.rss.leaks},
        }


def idle_stats() -> dict[str, Any]:
    """The stats dict without a running watcher: a full collection and one observation."""
    w = Watcher(60.0, 5, lambda event: ())
    w._gc_base = (0, 0, 0)
    gc.collect()
    return w.observe("full_gc")
