"""Which traces are kept: head sampling at the root, parent-based downstream, keep-on-error.

Head sampling follows the original Trace collector: every ``collect_interval`` seconds the rate
becomes ``requests in the interval / sample_size`` (at least 1) and a root is sampled with
probability ``1 / rate``, so about ``sample_size`` traces per interval are kept whatever the load.
The first interval keeps every trace, as the original did, since nothing is known of the load
yet. A fixed ``sample_rate`` (0..1) replaces the adaptive rate.

The decision is not a coin toss but a comparison of the trace id with the probability
(:func:`tracer.ids.sample_point`). Services that only receive the ``trace`` headers, which carry
no sampled flag, therefore agree with each other when their rates agree, and a service with a
lower rate keeps a subset of the traces a higher-rate service keeps. Downstream services follow an
inbound decision when there is one (traceparent flags, B3 sampled, ``x-must-collect``).

Keep-on-error: the spans of an unsampled trace are held until its local root ends. If one of them
failed (an error status, a network error, an exception, or slower than ``slow_threshold_ms``) the
whole local trace is kept after all and the trace is marked ``must_collect``, which the server
answers with ``x-must-collect: 1`` so that its callers keep their side too. Such forced keeps are
rate-limited by a token bucket (``max_forced_per_second``).
"""

from __future__ import annotations

import os
import random
import threading
import time
import weakref
from collections.abc import Callable

from tracer import freethreading
from tracer.ids import sample_point
from tracer.span import LocalTrace, Span, SpanProcessor

_rng = random.Random()
os.register_at_fork(after_in_child=_rng.seed)

# A lock held by another thread at fork() stays held forever in the child; every object here
# that owns a lock gets a fresh one there.
_with_locks: weakref.WeakSet[Sampler | TokenBucket] = weakref.WeakSet()


def _fresh_locks() -> None:
    for obj in list(_with_locks):
        obj._lock = threading.Lock()


os.register_at_fork(after_in_child=_fresh_locks)

# At most this many finished spans of one unsampled local trace are held; beyond it the trace
# cannot be kept whole anyway, and holding more would let one long-lived root grow without bound.
MAX_HELD = 1000


class Sampler:
    """Head sampling decision for traces whose decision is made in this process."""

    def __init__(
        self,
        sample_rate: float | None = None,
        sample_size: int = 60,
        collect_interval: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fixed = sample_rate
        self.sample_size = max(1, sample_size)
        self.interval = collect_interval
        self.probability = 1.0 if sample_rate is None else float(sample_rate)
        self.clock = clock
        self._count = 0
        self._lock = threading.Lock()
        if freethreading.locks_needed():
            # _count is exact only with the GIL (see freethreading).
            self.decide = freethreading.serialized(self.decide)  # type: ignore[method-assign]
        self._start = clock()
        self._next = self._start + collect_interval
        _with_locks.add(self)

    def decide(self, trace_id: str | None = None) -> bool:
        """Sample the trace ``trace_id`` (a 32-hex id), decided here rather than upstream?"""
        fixed = self.fixed
        if fixed is not None:
            if fixed >= 1.0:
                return True
            point = _rng.random() if trace_id is None else sample_point(trace_id)
            return point < fixed
        # Counted without a lock: a lost increment under contention only nudges the estimate.
        self._count += 1
        if self.clock() >= self._next:
            self._roll()
        probability = self.probability
        if probability >= 1.0:
            # Every point is below 1: the first interval, and any quiet one, keep every trace
            # without computing it.
            return True
        point = _rng.random() if trace_id is None else sample_point(trace_id)
        return point < probability

    def _roll(self) -> None:
        with self._lock:
            now = self.clock()
            if now < self._next:
                return
            # The window may span several intervals, some with no traffic at all.
            elapsed = max(self.interval, now - self._start)
            per_interval = self._count * self.interval / elapsed
            self.probability = 1.0 / max(1.0, per_interval / self.sample_size)
            self._count = 0
            self._start = now
            self._next = now + self.interval


class TokenBucket:
    """At most ``rate`` takes per second on average, bursts of up to ``rate`` (at least 1)."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.clock = clock
        self._last = clock()
        self._lock = threading.Lock()
        _with_locks.add(self)

    def take(self) -> bool:
        """Take one token; False when none is left."""
        if self.rate <= 0:
            return False
        with self._lock:
            now = self.clock()
            self.tokens = min(self.capacity, self.tokens + (now - self._last) * self.rate)
            self._last = now
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return True
            return False


class Collector(SpanProcessor):
    """Receives finished spans: forwards kept ones to ``submit``, holds unsampled ones.

    The runtime's last span processor (:meth:`on_end`), since it hands spans on to the pipeline.
    """

    def __init__(
        self,
        submit: Callable[[Span], None],
        *,
        error_status: int = 500,
        slow_threshold_ms: float | None = None,
        max_forced_per_second: float = 100.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.submit = submit
        self.error_status = error_status
        self.slow_us = None if slow_threshold_ms is None else int(slow_threshold_ms * 1000)
        self.bucket = TokenBucket(max_forced_per_second, clock)
        self.unsampled_dropped = 0
        self.forced_kept = 0
        self.forced_rate_limited = 0
        if freethreading.locks_needed():
            # Also called outside the processor chain (response headers); its counters are
            # exact only with the GIL (see freethreading).
            self.force = freethreading.serialized(self.force)  # type: ignore[method-assign]

    def failed(self, span: Span) -> bool:
        """Does ``span`` make its trace worth keeping: an error, an error status, or too slow?"""
        if span.error is not None:
            return True
        status = span.status_code
        if status is not None and status >= self.error_status:
            return True
        return self.slow_us is not None and span.duration_us > self.slow_us

    def note_failure(self, span: Span) -> None:
        """Have ``span``'s trace kept if ``span`` failed (see :meth:`failed`)."""
        local = span.local
        if not local.must_collect and self.failed(span):
            self.force(local)

    def force(self, local: LocalTrace) -> bool:
        """Mark a trace as one that must be kept; False when the forced-keep rate is used up.

        A sampled trace is kept anyway and costs no token: it is marked so that callers learn
        of the failure through ``x-must-collect``. An unsampled one takes a token, once.
        """
        if local.must_collect:
            return True
        if local.sampled:
            local.must_collect = True
            return True
        if local.limited:
            return False
        if self.bucket.take():
            local.must_collect = True
            self.forced_kept += 1
            return True
        local.limited = True
        self.forced_rate_limited += 1
        return False

    def on_end(self, span: Span) -> None:
        """Called once per finished span, on the thread that finished it."""
        local = span.local
        # note_failure(span), written out: this runs for every span, and the two calls cost
        # more than the checks themselves.
        if not local.must_collect:
            status = span.status_code
            slow_us = self.slow_us
            if (
                span.error is not None
                or (status is not None and status >= self.error_status)
                or (slow_us is not None and span.duration_us > slow_us)
            ):
                self.force(local)
        if local.sampled:
            self.submit(span)
            return
        held = local.held
        if local.must_collect:
            if held:
                local.held = None
                for s in held:
                    self.submit(s)
            self.submit(span)
            if span.is_local_root:
                local.closed = True
            return
        if local.closed or span.is_local_root:
            # The local root ended (now or before) without a reason to keep the trace.
            local.closed = True
            self.unsampled_dropped += 1 + (len(held) if held else 0)
            local.held = None
            return
        if held is None:
            local.held = [span]
        elif len(held) >= MAX_HELD:
            self.unsampled_dropped += 1
        else:
            held.append(span)

    #: The name this had before span processors; tests and tools still call it.
    on_finish = on_end

    def stats(self) -> dict[str, int]:
        """Counters: spans of unsampled traces dropped, traces force-kept and rate-limited."""
        return {
            "unsampled_dropped": self.unsampled_dropped,
            "forced_kept": self.forced_kept,
            "forced_rate_limited": self.forced_rate_limited,
        }
