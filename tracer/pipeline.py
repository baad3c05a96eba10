"""Finished spans -> bounded queue -> worker -> batches -> reporter.send(data, callback).

Three stages, so that no stage can stall the one before it:

- The request thread turns the finished span into a flat tuple (:meth:`Span.freeze`) and appends
  it to a deque: no lock, no I/O, no JSON, nothing for the garbage collector to traverse twice.
  A count cap (``max_queue``) bounds the deque; past the cap spans are dropped, counted.
- The worker thread turns queued spans into record dicts and groups them into batches. While the
  sender keeps up, a batch stays a list of dicts and is handed over as it is. A batch that has to
  wait (``HOLD_AFTER`` batches are already waiting, a batch has waited a whole ``flush_interval``,
  or the reporter is failing) is held serialised and compressed, and the bytes held are capped
  (``max_queue_bytes``): past the cap the oldest batches go to the disk spool.
- The sender thread delivers one batch at a time: ``reporter.send(batch, callback)`` with tracing
  suppressed, waiting for the callback up to ``send_timeout``. Failures are retried with
  exponential backoff and jitter, capped at ``max_backoff`` seconds (``Retry-After`` honoured up to
  that cap). A batch still undelivered after ``max_retries`` attempts goes to the spool (or is
  dropped, counted, when there is none). Spooled batches, also those of an earlier process of the
  same service, are replayed once the reporter delivers again.

Accounting: ``created == delivered + dropped + spooled + pending`` at any quiet moment, where
``spooled`` counts this process's spans that are in the spool now.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import queue
import random
import secrets
import threading
import time
import zlib
from collections import Counter, deque
from typing import TYPE_CHECKING, Any

from reporters.base import DeliveryError
from tracer import context, safety
from tracer.span import Frozen, Span, record

if TYPE_CHECKING:
    from tracer.spool import Spool

log = logging.getLogger("tracer")

LOG_EVERY = 10.0
# A batch that finds this many batches already waiting is held compressed (records as dicts take
# about 1.5 KB each, compressed a few hundred bytes at most); so is any batch that has waited a
# whole flush interval. Not the batch that merely follows the one being sent: under load the
# sender often waits a few milliseconds for the GIL, and compressing (then decoding) every batch
# for that cost more CPU than all the rest of the pipeline.
HOLD_AFTER = 2
# Records built between two chances for other threads to take the GIL (see Pipeline._records).
RECORD_SLICE = 250
# What a record kept as a dict is counted as against max_queue_bytes (measured: ~1.5 KB).
LIVE_RECORD_BYTES = 2048
# How long stop() waits for each thread past the exit timeout (a spool write, a send in flight).
_EXIT_GRACE = 1.0


class _Delivery:
    """One batch's callback: the first call wins, later ones are ignored."""

    __slots__ = ("_lock", "done", "error")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: BaseException | None = None
        # The reporter's callback, the send timeout and stop() may all close it, concurrently.
        self._lock = threading.Lock()

    def __call__(self, error: BaseException | None = None) -> None:
        with self._lock:
            if self.done.is_set():
                return
            self.error = error
            self.done.set()


class _Batch:
    """Records waiting for delivery: live dicts, or held as compressed JSON."""

    __slots__ = ("blob", "born", "count", "counted", "ours", "records", "spool_id")

    def __init__(
        self, records: list[dict[str, Any]] | None, blob: bytes | None, count: int
    ) -> None:
        self.records = records
        self.blob = blob
        self.count = count
        self.spool_id: int | None = None
        self.ours = True
        self.born = time.monotonic()
        # What this batch adds to the pipeline's held bytes; changed only under its lock.
        self.counted = 0

    @property
    def size(self) -> int:
        if self.blob is not None:
            return len(self.blob)
        return LIVE_RECORD_BYTES * self.count

    def hold(self) -> None:
        """Serialise and compress the records (they are waiting, so memory matters more)."""
        if self.records is not None:
            self.blob = zlib.compress(_dumps(self.records), 1)
            self.records = None

    def spans(self) -> list[dict[str, Any]]:
        if self.records is not None:
            return self.records
        assert self.blob is not None
        records: list[dict[str, Any]] = json.loads(zlib.decompress(self.blob))
        return records


def _dumps(records: list[dict[str, Any]]) -> bytes:
    try:
        text = json.dumps(records, separators=(",", ":"), allow_nan=False, default=str)
    except ValueError:
        text = json.dumps(records, separators=(",", ":"), default=str)
        text = text.replace("NaN", "null").replace("-Infinity", "null").replace("Infinity", "null")
    return text.encode("utf-8", "surrogatepass")


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
        spool: Spool | None = None,
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
        self.spool = spool
        self._reset_state()

    def _reset_state(self) -> None:
        # Everything a forked child must have fresh: its parent's locks may be held, its queues
        # hold the parent's spans, and the parent's threads do not exist in it.
        self.pid = os.getpid()
        self._token = secrets.token_bytes(8)
        self._queue: deque[Frozen] = deque()
        self._batches: deque[_Batch] = deque()
        self._held_bytes = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._send_wake = threading.Event()
        self._idle = threading.Condition()
        self._stopping = False
        self._flushing = 0
        self._last_batch = time.monotonic()
        self._worker_busy = 0
        self._sending: _Batch | None = None
        self._delivery: _Delivery | None = None
        self._taken = 0
        self._delivered = 0
        self._replayed = 0
        self._spooled = 0
        self._dropped: Counter[str] = Counter()
        self._failing = False
        self._last_log = 0.0
        self._worker: threading.Thread | None = None
        self._sender: threading.Thread | None = None
        self._caller: _Caller | None = None
        self._spool_checked = 0.0

    # -- request thread --------------------------------------------------------------------------

    def submit(self, span: Span) -> None:
        """Queue a finished span; never blocks, never raises."""
        q = self._queue
        if len(q) >= self.max_queue:
            self._drop("queue_full", 1)
            return
        try:
            frozen = span.freeze()
        except Exception as exc:
            safety.internal_error("span.freeze", exc)
            self._drop("serialise_error", 1)
            return
        q.append(frozen)
        if len(q) >= self.batch_size and not self._wake.is_set():
            self._wake.set()

    def _records(self, frozen: list[Frozen]) -> list[dict[str, Any]]:
        """Record dicts for queued spans; one that cannot be built is dropped, counted.

        Built a slice at a time with the GIL let go in between, so that the application's
        threads wait for the worker a fraction of a millisecond at most, not the several that a
        whole batch takes. While a slice is built the cyclic garbage collector is paused (when
        the application has not disabled it itself): records hold no cycles and are freed once
        sent, but thousands of fresh containers would otherwise set off collections that walk
        the application's whole heap, which measured costs several times more than building
        them.
        """
        service, host, pid = self.service, self.host, self.pid
        out: list[dict[str, Any]] = []
        for i in range(0, len(frozen), RECORD_SLICE):
            paused = gc.isenabled()
            if paused:
                gc.disable()
            try:
                for f in frozen[i : i + RECORD_SLICE]:
                    try:
                        out.append(record(f, service, host, pid))
                    except Exception as exc:
                        safety.internal_error("span.record", exc)
                        # Already counted as taken (so as created): not a "serialise_error".
                        self._drop("record_error", 1)
            finally:
                if paused:
                    gc.enable()
            time.sleep(0)
        return out

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker and sender threads (idempotent)."""
        if self._worker is not None and self._worker.is_alive():
            return
        self._stopping = False
        self._worker = threading.Thread(target=self._run_worker, name="tracer-worker", daemon=True)
        self._sender = threading.Thread(target=self._run_sender, name="tracer-sender", daemon=True)
        self._worker.start()
        self._sender.start()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything submitted so far is delivered, dropped or spooled."""
        deadline = time.monotonic() + timeout
        if self._worker is None or not self._worker.is_alive():
            return self.pending() == 0
        self._flushing += 1
        try:
            with self._idle:
                while self.pending():
                    self._wake.set()
                    self._send_wake.set()
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._idle.wait(min(left, 0.05))
        finally:
            self._flushing -= 1
        self._call_optional("flush", max(0.0, deadline - time.monotonic()))
        return True

    def stop(self, timeout: float | None = None) -> bool:
        """Flush for up to ``timeout`` seconds, spool what is left, stop the threads, close.

        True when everything was delivered. Never hangs past the timeout by more than a grace
        of about a second per thread (``_EXIT_GRACE``): for a send in flight to return, then for
        the spool writes.
        """
        timeout = self.exit_timeout if timeout is None else timeout
        ok = self.flush(timeout)
        self._stopping = True
        self._wake.set()
        self._send_wake.set()
        for thread in (self._worker, self._sender):
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=_EXIT_GRACE)
        delivery = self._delivery
        sender = self._sender
        if (
            delivery is not None
            and not delivery.done.is_set()
            and sender is not None
            and sender.is_alive()
        ):
            # The reporter still holds a batch past the grace: give up on it, so that the sender
            # spools the batch instead of the process exiting with it unaccounted for.
            delivery(TimeoutError("reporter did not call back before exit"))
            if sender is not threading.current_thread():
                sender.join(timeout=_EXIT_GRACE)
        if not ok:
            self._spool_leftovers()
        self._call_optional("close")
        return ok

    def after_fork_in_child(self) -> None:
        """In a forked child: a fresh queue, fresh threads, nothing of the parent's re-sent."""
        self._reset_state()
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
        with self._lock:
            return self._pending_locked()

    def _pending_locked(self) -> int:
        in_batches = sum(b.count for b in self._batches if b.ours)
        sending = self._sending.count if self._sending is not None and self._sending.ours else 0
        return len(self._queue) + self._worker_busy + in_batches + sending

    def stats(self) -> dict[str, Any]:
        with self._lock:
            dropped = dict(self._dropped)
            queued = len(self._queue)
            pending = self._pending_locked()
            return {
                "created": self._taken
                + queued
                + dropped.get("queue_full", 0)
                + dropped.get("serialise_error", 0),
                "delivered": self._delivered,
                "spooled": self._spooled,
                "dropped": sum(dropped.values()),
                "dropped_by_reason": dropped,
                "pending": pending,
                "replayed": self._replayed,
                "held_bytes": self._held_bytes,
            }

    def _drop(self, reason: str, count: int) -> None:
        with self._lock:
            self._dropped[reason] += count
        self._log_trouble(f"dropping spans ({reason})")

    def _log_trouble(self, what: str) -> None:
        # At most one line per LOG_EVERY seconds, carrying the counts, however bad things get.
        now = time.monotonic()
        if now - self._last_log < LOG_EVERY:
            return
        self._last_log = now
        s = self.stats()
        log.warning(
            "tracer: %s; created=%d delivered=%d spooled=%d dropped=%s pending=%d",
            what,
            s["created"],
            s["delivered"],
            s["spooled"],
            s["dropped_by_reason"],
            s["pending"],
        )

    # -- worker: spans -> batches ------------------------------------------------------------------

    def _run_worker(self) -> None:
        context.suppress.set(True)
        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            try:
                self._make_batches()
                self._hold_stale()
            except Exception as exc:
                safety.internal_error("pipeline.worker", exc)
            with self._idle:
                self._idle.notify_all()
            if self._stopping and not self._queue:
                return

    def _make_batches(self) -> None:
        q = self._queue
        while q:
            # Full batches only, unless spans have waited a whole interval or someone waits for
            # them (flush, exit): cutting a batch for every few spans that trickle in while we
            # work would cost a send per few spans.
            if (
                len(q) < self.batch_size
                and not self._flushing
                and not self._stopping
                and time.monotonic() - self._last_batch < self.flush_interval
            ):
                return
            self._last_batch = time.monotonic()
            take = min(self.batch_size, len(q))
            with self._lock:
                frozen = [q.popleft() for _ in range(take)]
                self._taken += take
                self._worker_busy = take
            records = self._records(frozen)
            del frozen
            batch = _Batch(records, None, len(records))
            with self._lock:
                if not records:
                    self._worker_busy = 0
                    continue
                backlog = len(self._batches) >= HOLD_AFTER or self._failing
            if backlog:
                batch.hold()
            overflow: list[_Batch] = []
            with self._lock:
                # Counted as busy until it is in _batches, so pending() never misses it.
                self._worker_busy = 0
                self._batches.append(batch)
                batch.counted = batch.size
                self._held_bytes += batch.counted
                while self._held_bytes > self.max_queue_bytes and len(self._batches) > 1:
                    old = self._batches.popleft()
                    self._held_bytes -= old.counted
                    overflow.append(old)
            for old in overflow:
                self._to_spool(old, "memory_cap")
            self._send_wake.set()

    def _hold_stale(self) -> None:
        """Compress the live batches that have waited a whole flush interval."""
        limit = time.monotonic() - self.flush_interval
        with self._lock:
            stale = [b for b in self._batches if b.records is not None and b.born < limit]
        for batch in stale:
            # The sender may take the batch meanwhile: it reads ``records`` or, once they are
            # gone, the blob that hold() set first, so either way it sends the same spans.
            batch.hold()
            with self._lock:
                if batch in self._batches:
                    self._held_bytes += batch.size - batch.counted
                    batch.counted = batch.size

    # -- sender: batches -> reporter ---------------------------------------------------------------

    def _run_sender(self) -> None:
        context.suppress.set(True)
        while True:
            batch = self._next_batch()
            if batch is None:
                if self._stopping:
                    return
                self._send_wake.wait(self.flush_interval)
                self._send_wake.clear()
                continue
            try:
                self._deliver(batch)
            except Exception as exc:
                safety.internal_error("pipeline.sender", exc)
            with self._lock:
                self._sending = None
            with self._idle:
                self._idle.notify_all()

    def _next_batch(self) -> _Batch | None:
        if self._stopping:
            # Past the exit deadline nothing new is sent; stop() spools what is left.
            return None
        with self._lock:
            if self._batches:
                batch = self._batches.popleft()
                self._held_bytes -= batch.counted
                self._sending = batch
                return batch
        if self.spool is None or self._failing:
            return None
        now = time.monotonic()
        if now - self._spool_checked < self.flush_interval:
            return None
        self._spool_checked = now
        try:
            rows = self.spool.take(1)
        except Exception as exc:
            safety.internal_error("spool.take", exc)
            return None
        if not rows:
            return None
        row_id, payload, count = rows[0]
        batch = _Batch(None, payload[8:], count)
        batch.spool_id = row_id
        batch.ours = payload[:8] == self._token
        with self._lock:
            self._sending = batch
        return batch

    def _deliver(self, batch: _Batch) -> None:
        try:
            records = batch.spans()
        except Exception as exc:
            safety.internal_error("pipeline.decode", exc)
            self._settle(batch, delivered=False, reason="corrupt")
            return
        data = {
            "service": self.service,
            "host": self.host,
            "pid": self.pid,
            "sent_at_us": time.time_ns() // 1000,
            "spans": records,
        }
        attempt = 0
        while True:
            error = self._send_once(data)
            if error is None:
                if self._failing:
                    self._failing = False
                    log.info("tracer: reporter delivers again")
                self._settle(batch, delivered=True)
                return
            if isinstance(error, DeliveryError) and not error.retryable:
                log.warning("tracer: reporter rejected a batch of %d spans: %s", batch.count, error)
                self._settle(batch, delivered=False, reason="rejected")
                return
            self._failing = True
            self._log_trouble(f"reporter failing ({type(error).__name__}: {error})")
            attempt += 1
            if attempt <= self.max_retries:
                delay = min(self.max_backoff, 0.05 * 2**attempt) * (0.5 + random.random() / 2)
                retry_after = getattr(error, "retry_after", None)
                if isinstance(retry_after, (int, float)) and retry_after > 0:
                    delay = max(delay, min(float(retry_after), self.max_backoff))
                # Sleep, but wake up for stop() so that exit is never held up by a backoff. The
                # flag is read again after the clear: a stop() in between must not sleep unseen.
                self._send_wake.clear()
                if not self._stopping:
                    self._send_wake.wait(delay)
                if not self._stopping:
                    continue
            # Out of retries, or exiting: the spool keeps the batch.
            self._settle(batch, delivered=False, reason="reporter_error")
            return

    def _settle(self, batch: _Batch, delivered: bool, reason: str = "") -> None:
        """Account for a batch that left the sender: delivered, spooled, or dropped."""
        if batch.spool_id is not None and self.spool is not None:
            try:
                if delivered or reason in ("rejected", "corrupt"):
                    self.spool.ack([batch.spool_id])
                else:
                    self.spool.release([batch.spool_id])
            except Exception as exc:
                safety.internal_error("spool.ack", exc)
            with self._lock:
                if delivered and batch.ours:
                    self._spooled -= batch.count
                    self._delivered += batch.count
                elif delivered:
                    self._replayed += batch.count
                elif reason in ("rejected", "corrupt") and batch.ours:
                    self._spooled -= batch.count
                    self._dropped[reason] += batch.count
            return
        if delivered:
            with self._lock:
                self._delivered += batch.count
        elif reason == "reporter_error":
            self._to_spool(batch, reason)
        else:
            self._drop(reason, batch.count)

    def _to_spool(self, batch: _Batch, reason: str) -> None:
        if self.spool is None:
            self._drop(reason, batch.count)
            return
        try:
            batch.hold()
            assert batch.blob is not None
            evicted = self.spool.put(self._token + batch.blob, batch.count)
        except Exception as exc:
            safety.internal_error("spool.put", exc)
            self._drop(reason, batch.count)
            return
        with self._lock:
            self._spooled += batch.count
            if evicted:
                # Oldest rows made room; some may be an earlier process's, so never go below 0.
                ours = min(evicted, self._spooled - batch.count)
                self._spooled -= max(ours, 0)
                self._dropped["spool_full"] += evicted
        self._log_trouble(f"spooling undelivered spans ({reason})")

    def _spool_leftovers(self) -> None:
        """At exit: whatever could not be delivered in time goes to the spool (or is counted)."""
        leftovers: list[_Batch] = []
        with self._lock:
            frozen = list(self._queue)
            self._queue.clear()
            self._taken += len(frozen)
            leftovers.extend(self._batches)
            self._batches.clear()
            self._held_bytes = 0
        records = self._records(frozen)
        for i in range(0, len(records), self.batch_size):
            chunk = records[i : i + self.batch_size]
            leftovers.append(_Batch(chunk, None, len(chunk)))
        for batch in leftovers:
            if batch.spool_id is None:
                self._to_spool(batch, "exit")

    def _send_once(self, data: dict[str, Any]) -> BaseException | None:
        delivery = self._delivery = _Delivery()
        try:
            caller = self._caller
            if caller is None or caller.stuck:
                caller = self._caller = _Caller(self.reporter)
            caller.call(data, delivery)
            if not delivery.done.wait(self.send_timeout):
                if caller.inside:
                    caller.abandon()
                # Close the delivery ourselves so that a late callback is ignored.
                delivery(TimeoutError(f"reporter did not call back within {self.send_timeout} s"))
            return delivery.error
        finally:
            # Not kept past the send: an error's traceback would hold the batch's records.
            self._delivery = None


class _Caller:
    """Runs ``reporter.send`` on its own thread, so a reporter that blocks cannot stall us.

    When a send has not returned by the time its callback timed out, the caller is abandoned and
    the pipeline starts a new one; the abandoned thread ends whenever its send returns.
    """

    def __init__(self, reporter: Any) -> None:
        self.reporter = reporter
        self.stuck = False
        self.inside = False
        self._jobs: queue.SimpleQueue[tuple[dict[str, Any], _Delivery] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="tracer-reporter", daemon=True)
        self._thread.start()

    def call(self, data: dict[str, Any], delivery: _Delivery) -> None:
        self._jobs.put((data, delivery))

    def abandon(self) -> None:
        self.stuck = True
        self._jobs.put(None)

    def _run(self) -> None:
        context.suppress.set(True)
        while True:
            job = self._jobs.get()
            if job is None or self.stuck:
                return
            data, delivery = job
            self.inside = True
            try:
                self.reporter.send(data, delivery)
            except Exception as exc:
                delivery(exc)
            finally:
                self.inside = False
