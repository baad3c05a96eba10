"""Which traces are kept: head sampling at the root, parent-based downstream, keep-on-error.

Head sampling follows the original Trace collector: every ``collect_interval`` seconds the rate
becomes ``requests in the interval / sample_size`` (at least 1) and a root is sampled with
probability ``1 / rate``, so about ``sample_size`` traces per interval are kept whatever the load.
A fixed ``sample_rate`` (0..1) replaces the adaptive rate. Downstream services follow the inbound
decision. The spans of an unsampled trace are held until its local root ends; if one of them
failed, the whole local trace is kept after all.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable

from tracer.span import Span

_rng = random.Random()
os.register_at_fork(after_in_child=_rng.seed)


class Sampler:
    """Head sampling decision for traces that start in this process."""

    def __init__(
        self,
        sample_rate: float | None = None,
        sample_size: int = 60,
        collect_interval: float = 120.0,
    ) -> None:
        self.fixed = sample_rate
        self.sample_size = max(1, sample_size)
        self.interval = collect_interval
        self.probability = 1.0 if sample_rate is None else float(sample_rate)
        self._count = 0
        self._lock = threading.Lock()
        self._next = time.monotonic() + collect_interval

    def decide(self) -> bool:
        """Sample a new root trace?"""
        if self.fixed is not None:
            return self.fixed >= 1.0 or _rng.random() < self.fixed
        self._count += 1
        now = time.monotonic()
        if now >= self._next:
            self._roll(now)
        return self.probability >= 1.0 or _rng.random() < self.probability

    def _roll(self, now: float) -> None:
        with self._lock:
            if now < self._next:
                return
            elapsed_intervals = 1 + int((now - self._next) // self.interval)
            count, self._count = self._count, 0
            rate = max(1.0, count / (self.sample_size * elapsed_intervals))
            self.probability = 1.0 / rate
            self._next = now + self.interval


class Collector:
    """Receives finished spans: forwards kept ones to ``submit``, holds unsampled ones."""

    def __init__(self, submit: Callable[[Span], None]) -> None:
        self.submit = submit

    def on_finish(self, span: Span) -> None:
        local = span.local
        if local.sampled:
            self.submit(span)
            return
        if span.failed:
            local.must_collect = True
        if local.closed:
            # The local root already ended; a late span follows the decision made then.
            if local.must_collect:
                self.submit(span)
            return
        local.held.append(span)
        if span.is_local_root:
            local.closed = True
            held, local.held = local.held, []
            if local.must_collect:
                for s in held:
                    self.submit(s)
