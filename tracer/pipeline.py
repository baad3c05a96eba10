"""Finished spans -> bounded queue -> worker thread -> batches -> reporter.send(data, callback).

The request thread only appends a span to a deque: no lock, no I/O, no serialisation. The worker
turns spans into records, batches them, calls the reporter with tracing suppressed, and waits for
its callback (with a timeout, so a reporter that never calls back cannot stall delivery). Failed
batches are retried with exponential backoff and jitter, then counted as dropped.

Accounting: ``created == delivered + dropped + spooled + pending`` at any quiet moment.
"""

from __future__ import annotations

import atexit
import logging
import os
import random
import threading
import time
from collections import Counter, deque
from typing import Any

from reporters.base import DeliveryError
from tracer import context, safety
from tracer.span import Span

log = logging.getLogger("tracer")


class _Delivery:
    """One batch's callback: the first call wins, later ones are ignored."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: BaseException | None = None

    def __call__(self, error: BaseException | None = None) -> None:
        if self.done.is_set():
            return
        self.error = error
        self.done.set()


class Pipeline:
    """A bounded, non-blocking span pipeline with one worker thread."""

    def __init__(
        self,
        reporter: Any,
        service: str,
        host: str,
        *,
        max_queue: int = 100_000,
        batch_size: int = 200,
        flush_interval: float = 1.0,
        send_timeout: float = 10.0,
        max_retries: int = 5,
        max_backoff: float = 5.0,
        exit_timeout: float = 5.0,
    ) -> None:
        self.reporter = reporter
        self.service = service
        self.host = host
        self.pid = os.getpid()
        self.max_queue = max_queue
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.send_timeout = send_timeout
        self.max_retries = max_retries
        self.max_backoff = max_backoff
        self.exit_timeout = exit_timeout
        self._queue: deque[Span] = deque()
        self._wake = threading.Event()
        self._idle = threading.Condition()
        self._stopping = False
        self._in_flight = 0
        self._taken = 0
        self._delivered = 0
        self._spooled = 0
        self._dropped: Counter[str] = Counter()
        self._last_log = 0.0
        self._thread: threading.Thread | None = None

    # -- request thread --------------------------------------------------------------------------

    def submit(self, span: Span) -> None:
        """Queue a finished span; never blocks, never raises."""
        queue = self._queue
        if len(queue) >= self.max_queue:
            self._drop("queue_full", 1)
            return
        queue.append(span)
        if len(queue) >= self.batch_size:
            self._wake.set()

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker thread (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="tracer-pipeline", daemon=True)
        self._thread.start()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything submitted so far is delivered, dropped or spooled."""
        deadline = time.monotonic() + timeout
        if self._thread is None or not self._thread.is_alive():
            return self.pending() == 0
        with self._idle:
            while self.pending():
                self._wake.set()
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(min(left, 0.05))
        flush = getattr(self.reporter, "flush", None)
        if callable(flush):
            try:
                with context.suppressed():
                    flush(max(0.0, deadline - time.monotonic()))
            except Exception as exc:
                safety.internal_error("reporter.flush", exc)
        return True

    def stop(self, timeout: float = 5.0) -> bool:
        """Flush, then stop the worker and close the reporter. True when nothing was left."""
        ok = self.flush(timeout)
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        close = getattr(self.reporter, "close", None)
        if callable(close):
            try:
                with context.suppressed():
                    close()
            except Exception as exc:
                safety.internal_error("reporter.close", exc)
        return ok

    # -- accounting ------------------------------------------------------------------------------

    def pending(self) -> int:
        return len(self._queue) + self._in_flight

    def stats(self) -> dict[str, Any]:
        dropped = dict(self._dropped)
        queued = len(self._queue)
        in_flight = self._in_flight
        total_dropped = sum(dropped.values())
        return {
            "created": self._taken + queued + dropped.get("queue_full", 0),
            "delivered": self._delivered,
            "spooled": self._spooled,
            "dropped": total_dropped,
            "dropped_by_reason": dropped,
            "pending": queued + in_flight,
        }

    def _drop(self, reason: str, count: int) -> None:
        self._dropped[reason] += count
        now = time.monotonic()
        if now - self._last_log >= 10.0:
            self._last_log = now
            s = self.stats()
            log.warning(
                "tracer: dropping spans (%s); created=%d delivered=%d dropped=%s pending=%d",
                reason,
                s["created"],
                s["delivered"],
                s["dropped_by_reason"],
                s["pending"],
            )

    # -- worker ----------------------------------------------------------------------------------

    def _run(self) -> None:
        # The reporter's own I/O must never be traced, nor that of threads it starts from here.
        context.suppress.set(True)
        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            try:
                self._drain()
            except Exception as exc:
                safety.internal_error("pipeline.worker", exc)
            with self._idle:
                self._idle.notify_all()
            if self._stopping and not self._queue:
                return

    def _drain(self) -> None:
        queue = self._queue
        while queue:
            spans: list[Span] = []
            take = min(self.batch_size, len(queue))
            for _ in range(take):
                spans.append(queue.popleft())
            self._in_flight += len(spans)
            self._taken += len(spans)
            try:
                records = []
                for span in spans:
                    try:
                        records.append(span.to_record(self.service, self.host, self.pid))
                    except Exception as exc:
                        safety.internal_error("span.to_record", exc)
                        self._drop("serialise_error", 1)
                if records:
                    self._deliver(records)
            finally:
                self._in_flight -= len(spans)

    def _deliver(self, records: list[dict[str, Any]]) -> None:
        batch = {
            "service": self.service,
            "host": self.host,
            "pid": self.pid,
            "sent_at_us": time.time_ns() // 1000,
            "spans": records,
        }
        attempt = 0
        while True:
            error = self._send_once(batch)
            if error is None:
                self._delivered += len(records)
                return
            retryable = not isinstance(error, DeliveryError) or error.retryable
            if not retryable:
                self._drop("rejected", len(records))
                return
            attempt += 1
            if attempt > self.max_retries or self._stopping:
                self._drop("reporter_error", len(records))
                return
            delay = min(self.max_backoff, 0.1 * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)
            retry_after = getattr(error, "retry_after", None)
            if retry_after:
                delay = max(delay, min(float(retry_after), self.max_backoff))
            time.sleep(delay)

    def _send_once(self, batch: dict[str, Any]) -> BaseException | None:
        delivery = _Delivery()
        try:
            self.reporter.send(batch, delivery)
        except Exception as exc:
            return exc
        if not delivery.done.wait(self.send_timeout):
            return TimeoutError(f"reporter did not call back within {self.send_timeout} s")
        return delivery.error


_exit_pipelines: list[Pipeline] = []


def _flush_at_exit() -> None:
    for pipeline in list(_exit_pipelines):
        try:
            pipeline.stop(timeout=pipeline.exit_timeout)
        except Exception as exc:
            safety.internal_error("pipeline.atexit", exc)


atexit.register(_flush_at_exit)
