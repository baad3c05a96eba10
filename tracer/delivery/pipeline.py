"""Finished spans -> bounded queue -> worker -> batches -> sender -> reporter.send(data, callback).

The shell that puts the rooms of :mod:`tracer.delivery` together, and the two things that are
the caller's: :meth:`Pipeline.flush` and exit (:meth:`Pipeline.stop`).

- The request thread turns the finished span into a flat tuple (:meth:`Span.freeze`) and appends
  it to a deque: no lock, no I/O, no JSON. A count cap (``max_queue``) bounds the deque; past the
  cap spans are dropped, counted. That is all the request path pays.
- The worker thread (:mod:`~tracer.delivery.batcher`) makes batches, holds waiting ones
  compressed and caps the bytes held.
- The sender thread (:mod:`~tracer.delivery.sender`) delivers them, retries, backs off, spools
  and replays (:mod:`~tracer.delivery.spooler`).
- The ledger (:mod:`~tracer.delivery.ledger`) counts where every span went.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import threading
import time
from collections import deque
from typing import Any

from tracer import context, safety
from tracer.delivery.batcher import Batcher
from tracer.delivery.batches import Batch
from tracer.delivery.ledger import Ledger
from tracer.delivery.sender import Sender
from tracer.delivery.spooler import Spooler
from tracer.span import Frozen, Span

log = logging.getLogger("tracer")

# Exit never takes more than exit_timeout plus this: for the send in flight to be given up on,
# the worker to stop and what is left to be written to the spool. The documented bound is 3 s;
# the rest is for the interpreter's own shutdown.
EXIT_GRACE = 2.5
# Of that grace, what is kept back for closing the reporter after the spool write.
_CLOSE_SHARE = 0.25


def check_timeout(timeout: object, what: str) -> float:
    """A timeout in seconds from ``timeout``: a number (negative means 0) or None (no limit)."""
    if timeout is None:
        return math.inf
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(
            f"{what}: timeout must be a number of seconds or None, not {type(timeout).__name__}"
            f" {timeout!r}"[:200]
        )
    seconds = float(timeout)
    if math.isnan(seconds):
        raise ValueError(f"{what}: timeout must be a number of seconds, not NaN")
    return max(0.0, seconds)


class Pipeline:
    """A bounded, non-blocking span pipeline: a worker thread and a sender thread."""

    def __init__(
        self,
        reporter: Any,
        service: str,
        host: str,
        *,
        max_queue: int = 100_000,
        max_queue_bytes: int = 64 * 1024 * 1024,
        batch_size: int = 1000,
        flush_interval: float = 1.0,
        send_timeout: float = 10.0,
        max_retries: int = 5,
        max_backoff: float = 5.0,
        exit_timeout: float = 5.0,
        spool_path: str | os.PathLike[str] | None = None,
        spool_max_bytes: int = 256 * 1024 * 1024,
    ) -> None:
        self.reporter = reporter
        self.service = service
        self.host = host
        self.max_queue = max_queue
        self.max_queue_bytes = max_queue_bytes
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.send_timeout = send_timeout
        self.max_retries = max_retries
        self.max_backoff = max_backoff
        self.exit_timeout = exit_timeout
        self.spool_path = spool_path
        self.spool_max_bytes = spool_max_bytes
        self._reset_state()

    def _reset_state(self) -> None:
        # Everything a forked child must have fresh: its parent's locks may be held, its queues
        # hold the parent's spans, and the parent's threads do not exist in it.
        self.pid = os.getpid()
        self._token = secrets.token_bytes(8)
        self._queue: deque[Frozen] = deque()
        self._wake = threading.Event()
        self._send_wake = threading.Event()
        self._idle = threading.Condition()
        self._started = False
        self._stopped = False
        self.ledger = Ledger(self._queue.__len__)
        self.spooler = Spooler(self.spool_path, self.spool_max_bytes, self.ledger, self._token)
        self.batcher = Batcher(
            self._queue,
            self._wake,
            self.ledger,
            self.spooler,
            service=self.service,
            host=self.host,
            pid=self.pid,
            batch_size=self.batch_size,
            flush_interval=self.flush_interval,
            max_queue_bytes=self.max_queue_bytes,
            failing=lambda: self.sender.failing,
            idle=self._idle,
            sender_wake=self._send_wake,
        )
        self.sender = Sender(
            self.reporter,
            self.ledger,
            self.batcher,
            self.spooler,
            batch_fields=self._batch_fields,
            send_timeout=self.send_timeout,
            max_retries=self.max_retries,
            max_backoff=self.max_backoff,
            flush_interval=self.flush_interval,
            idle=self._idle,
            wake=self._send_wake,
        )
        self._worker: threading.Thread | None = None
        self._sender: threading.Thread | None = None

    def _batch_fields(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "host": self.host,
            "pid": self.pid,
            "sent_at_us": time.time_ns() // 1000,
        }

    # -- request thread --------------------------------------------------------------------------

    def submit(self, span: Span) -> None:
        """Queue a finished span; never blocks, never raises."""
        q = self._queue
        if len(q) >= self.max_queue:
            self._refuse("queue_full")
            return
        try:
            frozen = span.freeze()
        except Exception as exc:
            safety.internal_error("span.freeze", exc)
            self._refuse("serialise_error")
            return
        q.append(frozen)
        if len(q) >= self.batch_size and not self._wake.is_set():
            self._wake.set()

    def submit_report(self, kind: str, body: dict[str, Any]) -> None:
        """Queue a report (``kind`` ``"metrics"`` or ``"memory"``) for every reporter: the
        reporter's data holds ``kind: body`` where a span batch holds ``"spans"``. Called from
        tracer's own threads, never the request path; never raises."""
        try:
            self.ledger.report_created(kind)
            batch = Batch.report(kind, {kind: body})
            if self.sender.failing:
                batch.hold()
            self.batcher.add(batch)
            self._send_wake.set()
        except Exception as exc:
            safety.internal_error("pipeline.report", exc)

    def _refuse(self, reason: str) -> None:
        self.ledger.refuse(reason, 1)
        self.ledger.trouble(f"dropping spans ({reason})")

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker and sender threads (idempotent). Opens nothing: the spool is opened
        on the sender's thread, when it is first needed."""
        if self._started:
            return
        self._started = True
        self._worker = threading.Thread(target=self.batcher.run, name="tracer-worker", daemon=True)
        self._sender = threading.Thread(target=self.sender.run, name="tracer-sender", daemon=True)
        self._worker.start()
        self._sender.start()

    def _running(self) -> bool:
        return (
            self._sender is not None
            and self._sender.is_alive()
            and self._worker is not None
            and self._worker.is_alive()
        )

    def flush(self, timeout: float | None = 5.0) -> bool:
        """Wait until every span finished before the call is delivered, or dropped for a reason
        no retry can fix. True then; False when ``timeout`` seconds (None: no limit) passed
        first, or when this process's spans are still in the spool.

        While a batch fails it is retried on its backoff schedule until the timeout; a batch
        that had given up before the call is replayed from the spool by the sender's probes.
        """
        seconds = check_timeout(timeout, "flush")
        deadline = time.monotonic() + seconds
        created, _, _ = self.ledger.settled_total()

        def done() -> bool:
            _, settled, spooled = self.ledger.settled_total()
            return settled >= created and spooled == 0

        if not self._running():
            return done()
        self.batcher.flushing += 1
        self.sender.flushes += 1
        try:
            with self._idle:
                while not done():
                    if not self._running():
                        return False
                    # Wakes the worker to cut a batch of what is queued; the sender is left to
                    # its schedule (waking it would cut a backoff pause short).
                    self._wake.set()
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._idle.wait(min(left, 0.05))
        finally:
            self.batcher.flushing -= 1
            self.sender.flushes -= 1
            # A batch kept in retries for this flush goes to the spool now, if it is still due.
            self._send_wake.set()
        left = deadline - time.monotonic()
        self._call_optional("flush", max(0.0, min(left, self.send_timeout)))
        return True

    def stop(self, timeout: float | None = None) -> bool:
        """Exit: flush for up to ``timeout`` seconds (default ``exit_timeout``), then spool what
        is left, stop the threads and close the reporter. True when everything was delivered.

        Takes at most ``timeout`` plus ``EXIT_GRACE`` seconds, whatever the reporter and the
        spool do. A KeyboardInterrupt while it waits (a second Ctrl-C) ends the flush at once;
        what is left is still spooled, within the same bound.
        """
        seconds = self.exit_timeout if timeout is None else check_timeout(timeout, "stop")
        if self._stopped:
            return self.ledger.pending() == 0
        self._stopped = True
        self.sender.stopping = True
        start = time.monotonic()
        try:
            ok = self.flush(seconds)
        except KeyboardInterrupt:
            log.warning("tracer: interrupted while flushing at exit; spooling what is left")
            ok = False
        self.batcher.stopping = True
        self._wake.set()
        end = max(start + (seconds if math.isfinite(seconds) else 0.0), time.monotonic())
        end += EXIT_GRACE
        # Every wait for the spool's lock from now on is cut to fit in what is left.
        self.spooler.deadline = end - _CLOSE_SHARE
        worker, sender = self._worker, self._sender
        self._join(worker, min(end, time.monotonic() + 0.5))
        self.sender.begin_exit()
        if sender is not None and sender.is_alive() and sender is not threading.current_thread():
            self._join(sender, end)
        elif not self.sender.done.is_set():
            # The threads never ran (or this is the sender itself): do the exit's work here.
            with context.suppressed():
                self.sender.finish()
        self._close_reporter(end)
        return ok and self.ledger.pending() == 0

    def _close_reporter(self, until: float) -> None:
        # On a thread of its own: a reporter's close() may wait for the lock its hung send holds.
        closer = threading.Thread(
            target=self._call_optional, args=("close",), name="tracer-close", daemon=True
        )
        try:
            closer.start()
        except RuntimeError:
            # No new thread at interpreter shutdown (Python 3.12 and newer): close it here.
            self._call_optional("close")
            return
        self._join(closer, until)

    @staticmethod
    def _join(thread: threading.Thread | None, until: float) -> None:
        """Join ``thread`` until ``until`` (monotonic); a KeyboardInterrupt does not cut it short,
        so that what the thread is writing to the spool is not lost."""
        if thread is None or thread is threading.current_thread():
            return
        interrupted = False
        while thread.is_alive():
            left = until - time.monotonic()
            if left <= 0:
                break
            try:
                thread.join(left)
            except KeyboardInterrupt:
                if not interrupted:
                    interrupted = True
                    log.warning("tracer: interrupted at exit; finishing the spool write first")

    def after_fork_in_child(self) -> None:
        """In a forked child: a fresh queue, fresh threads, nothing of the parent's re-sent."""
        inherited = self.spooler.spool
        self._reset_state()
        self.spooler.adopt(inherited)
        self._call_optional("after_fork")
        self.start()

    def _call_optional(self, name: str, *args: Any) -> None:
        method = getattr(self.reporter, name, None)
        if callable(method):
            try:
                with context.suppressed():
                    method(*args)
            except Exception as exc:
                safety.internal_error(f"reporter.{name}", exc)

    # -- accounting ------------------------------------------------------------------------------

    def pending(self) -> int:
        return self.ledger.pending()

    def stats(self) -> dict[str, Any]:
        out = self.ledger.stats()
        out["held_bytes"] = self.batcher.held_bytes
        return out

    @property
    def spool(self) -> Any:
        """The spool, once the sender opened it (None before, and without a spool)."""
        return self.spooler.spool
