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
from tracer.delivery.clock import REAL, Clock
from tracer.delivery.ledger import Ledger
from tracer.delivery.sender import FlushRequest, Sender
from tracer.delivery.spooler import Spooler
from tracer.span import Frozen, Span

log = logging.getLogger("tracer")

# Of exit_timeout, what the exit flush leaves (at most half of it) for giving up on the send in
# flight, stopping the worker, writing what is left to the spool and closing the reporter.
EXIT_RESERVE = 1.0
# The least time the spool write at exit gets, however short exit_timeout is: without it, a
# zero exit_timeout would lose what it means to spool.
EXIT_MIN_WRITE = 0.5
# Of what is left after the flush, what is kept back for closing the reporter after the write.
_CLOSE_SHARE = 0.25
# How long a flush that timed out waits for the sender to move its batches to the spool: the
# write takes milliseconds, unless another process holds the spool's lock (a 1 s busy wait).
FLUSH_SPOOL_WAIT = 2.0


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
        clock: Clock = REAL,
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
        # What the sender and flush() read time from and wait with (a test may simulate it).
        self.clock = clock
        self._reset_state()

    def _reset_state(self) -> None:
        # Everything a forked child must have fresh: its parent's locks may be held, its queues
        # hold the parent's spans, and the parent's threads do not exist in it.
        self.pid = os.getpid()
        self._token = secrets.token_bytes(8)
        self._queue: deque[Frozen] = deque()
        self._wake = threading.Event()
        self._started = False
        self._stopped = False
        # Set when stop() did the exit's work on its own thread (the threads never ran).
        self._exit_done = False
        self.ledger = Ledger(self._queue.__len__)
        self.spooler = Spooler(self.spool_path, self.spool_max_bytes, self.ledger, self._token)
        self.sender = Sender(
            self.reporter,
            self.ledger,
            self.spooler,
            batch_fields=self._batch_fields,
            drain=self._drain,
            send_timeout=self.send_timeout,
            max_retries=self.max_retries,
            max_backoff=self.max_backoff,
            flush_interval=self.flush_interval,
            max_queue_bytes=self.max_queue_bytes,
            clock=self.clock,
        )
        self.batcher = Batcher(
            self._queue,
            self._wake,
            self.ledger,
            self.sender,
            service=self.service,
            host=self.host,
            pid=self.pid,
            batch_size=self.batch_size,
            flush_interval=self.flush_interval,
        )
        self._worker: threading.Thread | None = None
        self._sender: threading.Thread | None = None

    def _drain(self) -> list[Batch]:
        # At exit, on the sender's thread: the spans still queued, as batches.
        return self.batcher.drain()

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
            self.sender.submit(Batch.report(kind, {kind: body}))
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
        When the timeout comes while the reporter fails, what the flush waited for is moved to
        the spool before it returns, so ``stats()`` says ``spooled`` at once; while the reporter
        delivers (or its first send is still under way), it stays ``pending``.
        """
        return self._flush(check_timeout(timeout, "flush"), exiting=False)

    def _flush(self, seconds: float, exiting: bool) -> bool:
        """Wait up to ``seconds`` (on the pipeline's clock) for the spans and reports of now.

        A :class:`FlushRequest` is handed to the sender, which answers it; the worker is asked
        to cut what is queued into batches. Past the deadline the request is expired: while the
        reporter fails, the sender moves what it waited for to the spool and then answers, and
        that answer is waited for (briefly), so that what flush() answers and what stats()
        shows agree when it returns.
        """
        clock, sender = self.clock, self.sender
        deadline = clock.monotonic() + seconds
        created, _, _ = self.ledger.settled_total()
        request = FlushRequest(created, exiting)
        if not self._running():
            return sender.flush_done(request)
        sender.flush(request)
        self.batcher.cut()
        answered = request.answered
        try:
            while not answered.is_set():
                if not self._running():
                    return False
                left = deadline - clock.monotonic()
                if left <= 0:
                    break
                clock.wait(answered, min(left, 0.05))
            if not answered.is_set() and sender.expire(request):
                until = time.monotonic() + FLUSH_SPOOL_WAIT
                while not answered.is_set() and self._running():
                    left = until - time.monotonic()
                    if left <= 0:
                        break
                    answered.wait(min(left, 0.05))
        finally:
            # Whatever ended the wait (an answer, the deadline, a KeyboardInterrupt at exit).
            sender.withdraw(request)
        if not (answered.is_set() and request.result):
            return False
        left = deadline - clock.monotonic()
        self._call_optional("flush", max(0.0, min(left, self.send_timeout)))
        return True

    def stop(self, timeout: float | None = None) -> bool:
        """Exit: flush for up to ``timeout`` seconds (default ``exit_timeout``) less a reserve,
        then spool what is left, stop the threads and close the reporter. True when everything
        was delivered. One warning says what was left undelivered, and where it went.

        Takes at most ``timeout`` seconds, whatever the reporter and the spool do: the flush
        gets all but ``EXIT_RESERVE`` of it (at most half), the spool write and closing the
        reporter the rest, and never less than ``EXIT_MIN_WRITE``. A KeyboardInterrupt while it
        waits (a second Ctrl-C) ends the flush at once; what is left is still spooled, within
        the same bound.
        """
        seconds = self.exit_timeout if timeout is None else check_timeout(timeout, "stop")
        if self._stopped:
            self._settle_late()
            return self.ledger.pending() == 0
        self._stopped = True
        self.sender.stopping = True
        start = time.monotonic()
        spooled_before = self.ledger.stats()["spooled"]
        reserve = min(EXIT_RESERVE, seconds / 2)
        try:
            self._flush(seconds - reserve, exiting=True)
        except KeyboardInterrupt:
            log.warning("tracer: interrupted while flushing at exit; spooling what is left")
        self.batcher.stop()
        now = time.monotonic()
        end = start + seconds if math.isfinite(seconds) else now + reserve
        end = max(end, now + min(reserve, EXIT_MIN_WRITE), start + EXIT_MIN_WRITE)
        # Every wait for the spool's lock from now on is cut to fit in what is left.
        self.spooler.deadline = end - min(_CLOSE_SHARE, (end - now) / 4)
        worker, sender = self._worker, self._sender
        self._join(worker, min(end, time.monotonic() + 0.5))
        self.sender.begin_exit()
        if (
            sender is not None
            and sender.ident is not None
            and sender is not threading.current_thread()
        ):
            # The sender's own event, not Thread.is_alive(): on Python 3.11 and older a
            # KeyboardInterrupt inside is_alive() or join() marks a running thread as ended
            # (bpo-45274), and the exit's spool write would then run here as well.
            self._wait_done(self.sender.done, end)
        elif not self.sender.done.is_set():
            # The threads never ran (or this is the sender itself): do the exit's work here.
            with context.suppressed():
                self.sender.finish()
            self._exit_done = True
        self._close_reporter(end)
        self._settle_late()
        self._say_what_is_left(spooled_before)
        _, _, spooled = self.ledger.settled_total()
        return spooled == 0 and self.ledger.pending() == 0 and not self._dropped_at_exit()

    def _settle_late(self) -> None:
        """Spans queued after the exit's work took the queue (another thread finished one while
        exit ran, or after it): no thread is left to send them and the reporter is closed, so
        they go to the spool, else are counted dropped (``exit``, or ``spool_unavailable``),
        never left pending. Only once the exit's work is over, so that nothing is taken twice."""
        if not self._queue or not (self._exit_done or self.sender.done.is_set()):
            return
        try:
            with context.suppressed():
                batches = self.batcher.drain()
                reason = "exit"
                if batches and self.spooler.enabled:
                    self.spooler.deadline = time.monotonic() + EXIT_MIN_WRITE
                    batches = self.spooler.store(batches, "exit")
                    reason = "spool_unavailable"
                    self.spooler.close()
                for batch in batches:
                    self.ledger.settle_live(batch, "dropped", reason)
        except Exception as exc:
            safety.internal_error("pipeline.exit", exc)

    def _dropped_at_exit(self) -> dict[str, int]:
        dropped = self.ledger.stats()["dropped_by_reason"]
        return {r: dropped[r] for r in ("exit", "spool_unavailable") if dropped.get(r)}

    def _say_what_is_left(self, spooled_before: int) -> None:
        """One warning, when exit left spans undelivered: how many it spooled and where, how
        many it dropped and why, how many were still on their way. Spans spooled earlier were
        counted in stats() and in flush()'s answer then; they are only added to the count."""
        try:
            stats = self.ledger.stats()
            parts = []
            by_exit = stats["spooled"] - spooled_before
            if by_exit > 0:
                more = stats["spooled"] - by_exit
                parts.append(
                    f"{by_exit} spans spooled to {self.spooler.path} (not delivered;"
                    " the next process of this service with this spool sends them"
                    + (f"; {more} more spooled before exit" if more > 0 else "")
                    + ")"
                )
            for reason, count in self._dropped_at_exit().items():
                parts.append(f"{count} spans dropped ({reason})")
            if stats["pending"]:
                parts.append(f"{stats['pending']} spans still on their way, lost")
            if parts:
                log.warning("tracer: exit: %s", "; ".join(parts))
        except Exception as exc:
            safety.internal_error("pipeline.exit", exc)

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
    def _wait_done(done: threading.Event, until: float) -> None:
        """Wait until ``done`` is set or ``until`` (monotonic) passed; a KeyboardInterrupt does
        not cut it short, so that what the sender is writing to the spool is not lost."""
        interrupted = False
        while not done.is_set():
            left = until - time.monotonic()
            if left <= 0:
                break
            try:
                done.wait(left)
            except KeyboardInterrupt:
                if not interrupted:
                    interrupted = True
                    log.warning("tracer: interrupted at exit; finishing the spool write first")

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
        out["held_bytes"] = self.sender.held_bytes
        return out

    @property
    def spool(self) -> Any:
        """The spool, once the sender opened it (None before, and without a spool)."""
        return self.spooler.spool
