"""Allocation sites: tracemalloc on for a bounded time.

tracemalloc records a traceback for every allocation while it traces, which makes the process
several times slower and adds memory per live block. So :func:`trace` turns it on only for a
bounded time, takes a snapshot at the end on a thread of its own and turns it off again; the
snapshot is kept for the next heap snapshot and :class:`~tracer.memory.HeapDiff`, which then
name the source lines that allocated what is still alive.
"""

from __future__ import annotations

import os
import threading
import time
import tracemalloc
from dataclasses import dataclass
from types import TracebackType

from tracer import safety


@dataclass(frozen=True)
class Kept:
    """The snapshot a trace took when it ended."""

    started_at: float
    taken_at: float
    frames: int
    snapshot: tracemalloc.Snapshot


_lock = threading.Lock()
_current: Trace | None = None
_kept: Kept | None = None


class Trace:
    """A bounded allocation trace, returned by :func:`trace`.

    It ends by itself after ``seconds``; :meth:`stop` (or leaving a ``with`` block) ends it
    sooner. Either way the snapshot is taken, kept for the next heap snapshot and HeapDiff, and
    tracemalloc is turned off again unless it was already tracing before.
    """

    def __init__(self, seconds: float, frames: int, owned: bool) -> None:
        self._entered = 0
        self.seconds = seconds
        self.frames = frames
        self.started_at = time.time()
        #: The snapshot taken when the trace ended (None before, or if tracemalloc was stopped
        #: by someone else in the meantime).
        self.snapshot: tracemalloc.Snapshot | None = None
        self._owned = owned
        self._ended = threading.Event()
        self._wake = threading.Event()
        self._finish_lock = threading.Lock()
        self._timer = threading.Thread(target=self._run, name="tracer-alloc-trace", daemon=True)

    @property
    def active(self) -> bool:
        """Whether the trace is still running."""
        return not self._ended.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the trace has ended; False when ``timeout`` came first."""
        return self._ended.wait(timeout)

    def stop(self) -> tracemalloc.Snapshot | None:
        """End the trace now (nothing happens if it has ended); its snapshot."""
        self._finish()
        if self._timer.ident is not None and self._timer is not threading.current_thread():
            self._timer.join(5.0)
        return self.snapshot

    def __enter__(self) -> Trace:
        # trace() returns the running trace to a second caller: a ``with`` inside another ends
        # it only when the outermost one ends.
        self._entered += 1
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._entered -= 1
        if self._entered <= 0:
            self.stop()

    def _run(self) -> None:
        # The wake-up comes from _finish (stop() or uninstall) or the time limit.
        self._wake.wait(self.seconds)
        self._finish()

    def _finish(self) -> None:
        global _current, _kept
        with self._finish_lock:
            if self._ended.is_set():
                return
            try:
                from tracer.memory.heapdiff import tracemalloc_snapshot

                snap = tracemalloc_snapshot()
                if snap is not None:
                    self.snapshot = snap
                    with _lock:
                        _kept = Kept(self.started_at, time.time(), self.frames, snap)
            except Exception as exc:
                safety.internal_error("memory.trace", exc)
            finally:
                if self._owned and tracemalloc.is_tracing():
                    tracemalloc.stop()
                with _lock:
                    if _current is self:
                        _current = None
                self._ended.set()
                self._wake.set()


# The longest trace: a day. A trace is meant for a window of real traffic, and its end must come.
MAX_SECONDS = 86400.0


def trace(seconds: float = 60.0, frames: int = 10) -> Trace:
    """Trace allocations with tracemalloc for ``seconds``, keeping ``frames`` frames each.

    tracemalloc makes the process several times slower while it traces (every allocation
    records its traceback), so the trace always ends by itself: after ``seconds`` a tracer
    thread takes a tracemalloc snapshot and turns tracemalloc off. The next
    :func:`tracer.memory.snapshot` and :class:`tracer.memory.HeapDiff` then list the source
    lines that allocated what was still alive at the end. If tracemalloc was already tracing
    (started by the application or ``PYTHONTRACEMALLOC``), it is left on, and only the snapshot
    is taken. A call while a trace runs returns that trace. The returned :class:`Trace` has
    ``stop()``, ``wait(timeout)``, ``active`` and ``snapshot``, and ends at the end of a
    ``with`` block.
    """
    global _current
    if not 0 < seconds <= MAX_SECONDS:
        raise ValueError(f"seconds must be more than 0 and at most {MAX_SECONDS}, got {seconds!r}")
    if not isinstance(frames, int) or frames < 1:
        raise ValueError(f"frames must be a whole number of 1 or more, got {frames!r}")
    with _lock:
        running = _current
        if running is not None and running.active:
            return running
        owned = not tracemalloc.is_tracing()
        if owned:
            tracemalloc.start(frames)
        handle = Trace(seconds, frames, owned)
        _current = handle
    handle._timer.start()
    return handle


def last_snapshot() -> Kept | None:
    """The snapshot the last trace took, with when that trace started and ended."""
    with _lock:
        return _kept


def reset() -> None:
    """End a running trace and forget the kept snapshot (``tracer.uninstall()``)."""
    global _kept
    with _lock:
        running = _current
    if running is not None:
        running.stop()
    with _lock:
        _kept = None


def _after_fork_in_child() -> None:
    """A forked child has no timer thread: end a trace the parent started, so tracemalloc does
    not stay on in the child; the parent's kept snapshot is not the child's."""
    global _current, _kept, _lock
    _lock = threading.Lock()
    running, _current, _kept = _current, None, None
    if running is not None and running.active:
        if running._owned and tracemalloc.is_tracing():
            tracemalloc.stop()


# Whether tracer is installed or not: trace() works without it.
os.register_at_fork(after_in_child=_after_fork_in_child)
