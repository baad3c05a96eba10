"""The sampling thread and the thread->span map it reads.

The sampler is a thread of tracer's own, not a signal handler: a Python signal handler runs only
on the main thread and sees no other. About every ``1 / rate`` seconds it takes
``sys._current_frames()`` and, for each thread that used CPU since the last sample (read from
the thread's own CPU clock where the system has one), walks that thread's stack from the leaf up
to :data:`MAX_DEPTH` frames. Each frame is reduced to its code object, interned as a function
index, and the stack to a tuple of indexes, interned as a stack index: a sample is one counter
increment keyed by ``(stack, thread, span)``. The frames themselves are dropped before the
sample ends, so nothing of another thread's stack outlives it.

Which request a sample belongs to comes from :class:`SpanMap`, a span processor that is in the
runtime's list only while a profile runs: the span a thread started last (while it runs; else its
local root while that runs), and on an event loop the span current in the running task, read
from the task's context. Every span read here is read, never changed.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
import time
from collections.abc import Callable
from contextvars import Context
from functools import partial
from types import CodeType, FrameType
from typing import Any

from tracer.context import current
from tracer.span import Span, SpanProcessor

#: Frames walked per sample at most, from the leaf; deeper stacks end in a "(truncated)" frame.
MAX_DEPTH = 128
#: The sampler's own CPU, as a share of one core, that its backoff keeps it under.
CPU_BUDGET = 0.01
# How often the backoff looks at the sampler's CPU, in seconds.
_WINDOW = 0.25
# A thread that used less CPU than this share of the interval since the last sample was idle.
_IDLE_SHARE = 0.05

_get_ident = threading.get_ident
_gc_isenabled = gc.isenabled
_gc_disable = gc.disable
_gc_enable = gc.enable


def _task_context(task: Any) -> Context | None:
    """The context a task runs its steps in (read from another thread, never changed).

    Python 3.12 has ``Task.get_context()``. Before it, asyncio's C tasks keep the context
    unexposed, but hand it to the garbage collector first among the objects they refer to,
    and its pure-Python tasks hold it in ``_context``.
    """
    get = getattr(task, "get_context", None)
    if get is not None:
        context: Context = get()
        return context
    own = getattr(task, "_context", None)
    if isinstance(own, Context):
        return own
    for referent in gc.get_referents(task):
        if isinstance(referent, Context):
            return referent
    return None


def task_span(task: Any) -> Span | None:
    """The span current in ``task`` now (its context's ``tracer.context.current``)."""
    context = _task_context(task)
    return None if context is None else context.get(current)


#: Seconds between two prunings of the span map's ended threads.
PRUNE_INTERVAL = 1.0
#: The function that stands for the frames past MAX_DEPTH.
TRUNCATED = ("(truncated)", "", 0)


class _PerThread(threading.local):
    """Each thread's own dict (``threading.local``), handed to the map that made it the first
    time the thread stores in it, so that the sampler's thread can read it."""

    def __init__(self, threads: dict[int, dict[str, Any]]) -> None:
        threads[_get_ident()] = self.__dict__


class SpanMap(SpanProcessor):
    """Which span each thread started last (a span processor).

    ``on_start`` is no Python function: it is ``setattr(per_thread, "span", span)`` bound with
    :func:`functools.partial`, where ``per_thread`` is a ``threading.local`` whose dict, one per
    thread, the map keeps by thread ident (:attr:`threads`). So a span costs the request one
    call made in C, without a Python frame, made unguarded (``can_raise``: nothing in it can
    raise but a failed allocation). There is no ``on_end``: where the span read has ended, the
    sampler takes its local root instead while that still runs (a client call ended, the
    request goes on), else nothing.

    An event loop's thread runs many requests at once: for it the sampler reads the running
    task's own context (:func:`task_span`) at sample time, so the request pays nothing for
    tasks and the map holds no task.
    """

    __slots__ = ("_local", "on_start", "threads")

    can_raise = False
    on_start: Callable[[Span], None]  # type: ignore[assignment]

    def __init__(self) -> None:
        # Thread ident -> that thread's dict; "span" in it is the span it started last.
        self.threads: dict[int, dict[str, Any]] = {}
        self._local = _PerThread(self.threads)
        self.on_start = partial(setattr, self._local, "span")

    def thread_span(self, ident: int) -> Span | None:
        """The span the thread ``ident`` started last, or None."""
        own = self.threads.get(ident)
        return None if own is None else own.get("span")

    def prune(self) -> int:
        """Drop the entries of threads that ended (from the sampler's thread); how many were
        dropped. A new thread that reuses an ident registers its own dict again."""
        alive = set(sys._current_frames())  # the idents only: no frame is kept
        threads = self.threads
        gone = [ident for ident in list(threads) if ident not in alive]
        for ident in gone:
            threads.pop(ident, None)
        return len(gone)


def _open_span(span: Span | None) -> Span | None:
    """``span`` while it runs; once it ended, its local root while that runs; else None."""
    if span is None or not span._done:
        return span
    root = span.local.root
    return root if root is not None and not root._done else None


def _loop_tasks() -> dict[int, Any]:
    """Thread ident -> the task running on that thread's event loop now.

    Python 3.10 to 3.13 keep the running task of each loop in one dict, keyed by the loop; a
    loop of asyncio's own knows the thread it runs on. Read under the GIL, so never torn.
    """
    running = getattr(asyncio.tasks, "_current_tasks", None)
    if not running:
        return {}
    out: dict[int, Any] = {}
    for loop, task in list(running.items()):
        ident = getattr(loop, "_thread_id", None)
        if ident is not None:
            out[ident] = task
    return out


def _current_frames() -> dict[int, Any]:
    """``sys._current_frames()`` with the garbage collector held off while it runs.

    CPython 3.11 builds that dict holding the lock of its thread list; a collection started by
    one of its allocations may free a ``threading.local``, whose cleanup takes the same lock,
    and the process hangs with the GIL held. The collector is turned back on only when it was on.
    """
    if not _gc_isenabled():
        return sys._current_frames()
    _gc_disable()
    try:
        return sys._current_frames()
    finally:
        _gc_enable()


def _thread_clock(native_id: int | None) -> int | None:
    """The id of the CPU-time clock of the thread with kernel id ``native_id`` (Linux only).

    Made from the id as the kernel defines it (a per-thread CPU clock: the negated id shifted
    left by three, with the per-thread bit and the scheduler-clock type), not with
    ``pthread_getcpuclockid``, which would read the thread's structure in memory: for a thread
    that has just ended, that memory may be gone. A clock of an ended thread only fails
    (``OSError``), which the sampler takes as "did not run".
    """
    if native_id is None or not sys.platform.startswith("linux"):
        return None
    return ((~native_id) << 3) | 6


class Recording:
    """What one profile collected: interned functions, stacks, threads and spans, and the
    counts and CPU time per (stack, thread, span)."""

    def __init__(self) -> None:
        self.functions: list[tuple[str, str, int]] = []  # (name, file, first line)
        self._function_index: dict[CodeType, int] = {}
        self.stacks: list[tuple[int, ...]] = []  # function indexes, root first
        self._stack_index: dict[tuple[int, ...], int] = {}
        self.threads: list[str] = []
        self._thread_index: dict[tuple[int, str], int] = {}
        # (trace_id, span_id, local_root_span_id, route); index 0 is "no request".
        self.spans: list[tuple[str, str, str, str] | None] = [None]
        self._span_index: dict[tuple[str, str, str, str], int] = {}
        # (stack, thread, span) -> [samples, cpu nanoseconds]
        self.counts: dict[tuple[int, int, int], list[int]] = {}
        self.samples = 0
        self.truncated = 0
        self.truncated_index: int | None = None

    def function(self, code: CodeType) -> int:
        index = self._function_index.get(code)
        if index is None:
            name = getattr(code, "co_qualname", code.co_name)
            index = len(self.functions)
            self.functions.append((name, code.co_filename, code.co_firstlineno))
            self._function_index[code] = index
        return index

    def stack(self, functions: tuple[int, ...]) -> int:
        index = self._stack_index.get(functions)
        if index is None:
            index = len(self.stacks)
            self.stacks.append(functions)
            self._stack_index[functions] = index
        return index

    def thread(self, ident: int, name: str) -> int:
        key = (ident, name)
        index = self._thread_index.get(key)
        if index is None:
            index = len(self.threads)
            self.threads.append(name)
            self._thread_index[key] = index
        return index

    def span(self, span: Span | None) -> int:
        if span is None:
            return 0
        root = span.local.root
        root_id = span.span_id if root is None else root.span_id
        route = span.route if root is None else root.route
        if route is None:
            route = (span.path if root is None else root.path) or span.name
        key = (span.trace_id, span.span_id, root_id, route)
        index = self._span_index.get(key)
        if index is None:
            index = len(self.spans)
            self.spans.append(key)
            self._span_index[key] = index
        return index

    def add(self, stack: int, thread: int, span: int, cpu_ns: int) -> None:
        key = (stack, thread, span)
        count = self.counts.get(key)
        if count is None:
            self.counts[key] = [1, cpu_ns]
        else:
            count[0] += 1
            count[1] += cpu_ns
        self.samples += 1

    def release(self) -> None:
        """Drop what only sampling needed (the code objects kept as keys)."""
        self._function_index = {}
        self._stack_index = {}


class Sampler:
    """One profile's sampling thread: ``rate`` samples per second at most, backing off so that
    its own CPU stays under :data:`CPU_BUDGET` of a core, until ``seconds`` pass or
    :meth:`stop`."""

    def __init__(
        self,
        rate: float,
        seconds: float,
        span_map: SpanMap | None,
        on_done: Callable[[Sampler], None],
        depth: int = MAX_DEPTH,
    ) -> None:
        self.rate = float(rate)
        self.seconds = float(seconds)
        self.span_map = span_map
        self.depth = depth
        self.recording = Recording()
        self._on_done = on_done
        self._stop = threading.Event()
        self.done = threading.Event()
        self.interval = 1.0 / self.rate
        self.started_ns = 0
        self.ended_ns = 0
        self.wall_s = 0.0
        self.cpu_s = 0.0  # the sampler thread's own CPU time
        self.lowest_rate = self.rate
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="tracer-profiler", daemon=True)
        # Thread ident -> (name, CPU clock id or None); refreshed when a new ident shows.
        self._names: dict[int, tuple[str, int | None]] = {}
        self._last_cpu: dict[int, int] = {}

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _refresh_threads(self) -> None:
        names: dict[int, tuple[str, int | None]] = {}
        for thread in threading.enumerate():
            ident = thread.ident
            if ident is not None:
                names[ident] = (thread.name, _thread_clock(getattr(thread, "native_id", None)))
        self._names = names

    def _run(self) -> None:
        own = _get_ident()
        self.started_ns = time.time_ns()
        start = time.monotonic()
        deadline = start + self.seconds
        window_start, window_cpu = start, time.thread_time()
        base_interval = self.interval
        next_prune = start + PRUNE_INTERVAL
        try:
            self._refresh_threads()
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= deadline:
                    break
                self._sample(own)
                # The backoff: over the budget in the last window, sample less often; well
                # under it, come back towards the asked rate.
                if self.span_map is not None and now >= next_prune:
                    next_prune = now + PRUNE_INTERVAL
                    self.span_map.prune()
                if now - window_start >= _WINDOW:
                    cpu = time.thread_time()
                    share = (cpu - window_cpu) / (now - window_start)
                    if share > CPU_BUDGET:
                        self.interval = min(self.interval * max(share / CPU_BUDGET, 1.25), 1.0)
                    elif share < CPU_BUDGET / 2 and self.interval > base_interval:
                        self.interval = max(self.interval / 1.25, base_interval)
                    self.lowest_rate = min(self.lowest_rate, 1.0 / self.interval)
                    window_start, window_cpu = now, cpu
                # A plain sleep: an Event's wait costs the sampler several times more CPU per
                # wake-up, and stop() is seen within one interval anyway.
                time.sleep(min(self.interval, max(deadline - time.monotonic(), 0.0)))
        except BaseException as exc:  # handed to on_done, which reports it
            self.error = exc
        finally:
            self.ended_ns = time.time_ns()
            self.wall_s = time.monotonic() - start
            self.cpu_s = time.thread_time()
            self._on_done(self)
            self.done.set()

    def _sample(self, own: int) -> None:
        recording = self.recording
        names = self._names
        last_cpu = self._last_cpu
        interval_ns = int(self.interval * 1e9)
        idle_ns = int(interval_ns * _IDLE_SHARE)
        span_map = self.span_map
        tasks = _loop_tasks() if span_map is not None else {}
        frames = _current_frames()
        try:
            for ident, frame in frames.items():
                if ident == own:
                    continue
                info = names.get(ident)
                if info is None:
                    self._refresh_threads()
                    names = self._names
                    info = names.get(ident, (f"thread-{ident}", None))
                name, clock = info
                cpu_ns = interval_ns
                if clock is not None:
                    try:
                        now_cpu = time.clock_gettime_ns(clock)
                    except OSError:
                        continue
                    before = last_cpu.get(ident)
                    last_cpu[ident] = now_cpu
                    if before is None:
                        continue  # its first reading: how much it ran is known next time
                    cpu_ns = now_cpu - before
                    if cpu_ns < idle_ns:
                        continue
                stack = self._walk(frame)
                span = None
                if span_map is not None:
                    task = tasks.get(ident)
                    span = _open_span(
                        span_map.thread_span(ident) if task is None else task_span(task)
                    )
                recording.add(
                    recording.stack(stack),
                    recording.thread(ident, name),
                    recording.span(span),
                    cpu_ns,
                )
        finally:
            # No frame of another thread outlives the sample.
            frames.clear()
            del frames

    def _walk(self, frame: FrameType | None) -> tuple[int, ...]:
        recording = self.recording
        function = recording.function
        leaf_first: list[int] = []
        depth = self.depth
        while frame is not None and depth:
            leaf_first.append(function(frame.f_code))
            frame = frame.f_back
            depth -= 1
        if frame is not None:
            recording.truncated += 1
            leaf_first.append(self._truncated())
        leaf_first.reverse()
        return tuple(leaf_first)

    def _truncated(self) -> int:
        recording = self.recording
        if recording.truncated_index is None:
            recording.truncated_index = len(recording.functions)
            recording.functions.append(TRUNCATED)
        return recording.truncated_index
