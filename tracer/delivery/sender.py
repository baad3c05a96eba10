"""The sender thread: what happens when a send fails, and everything else about sending.

One batch is sent at a time: the next live batch, or, turn about with live ones, a batch from
the spool (also one an earlier process left). A send is ``reporter.send(data, callback)`` on the
reporter's thread (:mod:`tracer.delivery.caller`), waited for up to ``send_timeout``.

When a send fails (an exception, ``callback(error)`` with any value, no callback in time):

- The failure is read defensively (:func:`outcome`): an error whose ``str()``, ``retryable`` or
  ``retry_after`` raises is still a failure, never an exception here. ``retryable is False``
  drops the batch, counted as ``rejected``.
- Every failure in a row lengthens the pause before the next attempt: exponential with jitter,
  capped at ``max_backoff``, at least the receiver's ``Retry-After`` (up to the same cap). Nothing
  cuts a pause short but exit: new batches and flush() wait for it.
- A live batch is retried ``max_retries`` times; then (or at once, when the reporter has already
  been failing for longer than that, or is hung) it goes to the spool, and the attempts go on, one
  per pause, with the next batch or a spooled one: that is how the spool is probed while nothing
  new arrives. While a flush() waits, a batch is not given up on: it is retried on the same
  schedule until the flush's timeout.
- A batch from the spool that fails goes back to the spool at once.

After the first success, waiting batches and the spool are sent as fast as the reporter takes
them. Every batch ends in exactly one of delivered, dropped (by reason) or spooled, or is still
pending: the ledger's settle methods are called once per batch, whatever happened.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from tracer import context, safety
from tracer.delivery.batches import SPANS, Batch
from tracer.delivery.caller import Callers, Delivery, HungReporter
from tracer.delivery.clock import REAL, Clock
from tracer.delivery.ledger import Ledger, describe
from tracer.delivery.spooler import Spooler
from tracer.encoding import clean_text

log = logging.getLogger("tracer")

# The first retry's pause, before jitter; each failure in a row doubles it, up to max_backoff.
FIRST_BACKOFF = 0.05
# Failed report batches waiting for another attempt, at most; past that the oldest is dropped.
MAX_REPORT_RETRIES = 16
# How much of an error's description goes into a log line.
MAX_ERROR_TEXT = 600
# A batch that finds this many batches already waiting is held compressed (records as dicts take
# far more memory than compressed JSON); so is any batch that has waited a whole flush interval.
# Not the batch that merely follows the one being sent: under load the sender is often only
# waiting a moment for the GIL, and compressing (then decoding) every batch for such a wait
# costs CPU for no memory worth saving.
HOLD_AFTER = 2
# While a flush waits, how often the sender looks at the ledger for its answer.
FLUSH_POLL = 0.05

OK = "ok"
RETRY = "retry"
REJECT = "reject"


def outcome(error: object) -> tuple[str, float | None, str]:
    """``(kind, retry_after, description)`` of what a reporter called back with.

    ``kind`` is ``ok`` for None, ``reject`` for an error whose ``retryable`` is False, else
    ``retry``. ``retry_after`` is a positive finite number of seconds, else None (the backoff
    applies). ``description`` is fit for one log line: the error's text may quote a peer, so
    control characters are escaped and its length is capped. Never raises, whatever the object
    does.
    """
    if error is None:
        return OK, None, ""
    text = clean_text(describe(error), MAX_ERROR_TEXT)
    try:
        retryable = getattr(error, "retryable", True)
    except BaseException:
        retryable = True
    if retryable is False:
        return REJECT, None, text
    try:
        after = getattr(error, "retry_after", None)
    except BaseException:
        after = None
    if isinstance(after, bool) or not isinstance(after, (int, float)):
        return RETRY, None, text
    try:
        seconds = float(after)
    except Exception:
        # An int past a float's range, or a subclass whose __float__ fails: not a wait.
        return RETRY, None, text
    return RETRY, (seconds if math.isfinite(seconds) and seconds > 0 else None), text


class FlushRequest:
    """A flush waiting for the sender's answer: every span and report created before
    ``created`` settled. The sender sets ``answered`` (with ``result``) once it is so; the
    caller waits for that, and past its deadline calls :meth:`Sender.expire`.

    At exit (``exiting``), records already in the spool are waited for only while the reporter
    delivers: they are safe there, and a failing reporter would only make exit wait its whole
    timeout for a replay that cannot happen.
    """

    __slots__ = ("answered", "created", "exiting", "result", "spool")

    def __init__(self, created: int, exiting: bool) -> None:
        self.created = created
        self.exiting = exiting
        self.answered = threading.Event()
        self.result = False
        # Set by expire() while the reporter fails: what the flush waited for goes to the spool
        # before the (False) answer, so that stats() says "spooled" when the flush returns.
        self.spool = False


class Sender:
    """Runs on the ``tracer-sender`` thread; owns the batches waiting to be sent (see the
    module docstring). Other threads hand it batches (:meth:`submit`) and flush requests
    (:meth:`flush`); nothing else of it is changed from outside."""

    def __init__(
        self,
        reporter: Any,
        ledger: Ledger,
        spooler: Spooler,
        *,
        batch_fields: Callable[[], dict[str, Any]],
        drain: Callable[[], list[Batch]],
        send_timeout: float,
        max_retries: int,
        max_backoff: float,
        flush_interval: float,
        max_queue_bytes: int,
        clock: Clock = REAL,
    ) -> None:
        self.reporter = reporter
        self.ledger = ledger
        self.spooler = spooler
        self.batch_fields = batch_fields
        self.drain = drain
        self.send_timeout = send_timeout
        self.max_retries = max_retries
        self.max_backoff = max_backoff
        self.flush_interval = flush_interval
        self.max_queue_bytes = max_queue_bytes
        self.clock = clock
        self.wake = threading.Event()
        self.callers = Callers(reporter)
        # The batches waiting to be sent, their held bytes and the flushes waiting for an
        # answer: changed only under this lock.
        self._lock = threading.Lock()
        self._batches: deque[Batch] = deque()
        self.held_bytes = 0
        self._flushes: list[FlushRequest] = []
        self.exiting = False
        # Set when exit begins (before its last flush): no send is made on this thread then.
        self.stopping = False
        self.done = threading.Event()
        # finish() runs once, whichever thread calls it first.
        self._finish_lock = threading.Lock()
        self._finished = False
        self.failures = 0
        self.next_attempt = 0.0
        self.current: Batch | None = None
        self.delivery: Delivery | None = None
        self._spool_turn = False
        self._rejected_seen = 0
        # Report batches (metrics, memory) that failed while spans are delivered, each waiting
        # for its next attempt (see _report_failed): they never hold span batches back.
        self.report_retries: deque[tuple[float, Batch]] = deque()
        # Whether the last span batch tried was delivered: only then is a failing report the
        # report's trouble, not the reporter's.
        self.spans_ok = False
        self._report_warned = False

    @property
    def failing(self) -> bool:
        return self.failures > 0

    # -- from other threads --------------------------------------------------------------------

    def submit(self, batch: Batch) -> None:
        """Queue a batch for sending (from the worker, or a report's thread); never blocks on a
        send. It waits held compressed when others wait before it or the reporter fails."""
        if self.failures or len(self._batches) >= HOLD_AFTER:
            batch.hold()
        self._add(batch)
        self.wake.set()

    def flush(self, request: FlushRequest) -> None:
        """Have ``request`` answered once what it waits for settled."""
        with self._lock:
            self._flushes.append(request)
        self.wake.set()

    def withdraw(self, request: FlushRequest) -> None:
        """The flush's caller stopped waiting: no answer is wanted any more."""
        with self._lock:
            if request in self._flushes:
                self._flushes.remove(request)

    def expire(self, request: FlushRequest) -> bool:
        """From a flush whose deadline passed unanswered. While the reporter fails (and there is
        a spool), the batches it waited for are moved to the spool before it is answered, a
        send under way given up on, as at exit: True, the caller waits for that answer.
        Otherwise it is withdrawn: False."""
        with self._lock:
            if request.answered.is_set():
                return False
            if request.exiting or not (self.failing and self.spooler.enabled):
                if request in self._flushes:
                    self._flushes.remove(request)
                return False
            request.spool = True
            delivery = self.delivery
        if delivery is not None:
            delivery.cut_short(TimeoutError("flush timed out while the reporter fails"))
        self.wake.set()
        return True

    def flush_done(self, request: FlushRequest) -> bool:
        """Whether everything ``request`` waits for has settled (see :class:`FlushRequest`)."""
        _, settled, spooled = self.ledger.settled_total()
        if request.exiting:
            return settled + spooled >= request.created and (spooled == 0 or self.failing)
        return settled >= request.created and spooled == 0

    def hold_stale(self) -> None:
        """Compress the live batches that have waited a whole flush interval (on the worker's
        thread, so that the sender's sends are not held back by it)."""
        limit = time.monotonic() - self.flush_interval
        with self._lock:
            stale = [b for b in self._batches if b.records is not None and b.born < limit]
        for batch in stale:
            # The sender may take the batch meanwhile: it reads ``records`` or, once they are
            # gone, the blob that hold() set first, so either way it sends the same records.
            batch.hold()
            with self._lock:
                if batch in self._batches:
                    self.held_bytes += batch.size - batch.counted
                    batch.counted = batch.size

    # -- the queue -----------------------------------------------------------------------------

    def _add(self, batch: Batch) -> None:
        """Append a batch; past the byte cap the oldest go to the spool."""
        overflow: list[Batch] = []
        with self._lock:
            self._batches.append(batch)
            batch.counted = batch.size
            self.held_bytes += batch.counted
            while self.held_bytes > self.max_queue_bytes and len(self._batches) > 1:
                old = self._batches.popleft()
                self.held_bytes -= old.counted
                overflow.append(old)
        if overflow:
            self._overflow(overflow)

    def _overflow(self, batches: list[Batch]) -> None:
        """Batches past the memory cap: to the spool, or dropped (counted) when it cannot take
        them now."""
        if self.spooler.enabled:
            batches = self.spooler.store(batches, "memory_cap")
        for batch in batches:
            self.ledger.settle_live(batch, "dropped", "memory_cap")
        if batches:
            self.ledger.trouble("dropping spans (memory_cap)")

    def _next_live(self) -> Batch | None:
        with self._lock:
            if not self._batches:
                return None
            batch = self._batches.popleft()
            self.held_bytes -= batch.counted
            batch.counted = 0
            return batch

    def _take_waiting(self) -> list[Batch]:
        """Every batch waiting here, oldest first."""
        with self._lock:
            out = list(self._batches)
            self._batches.clear()
            self.held_bytes = 0
            for batch in out:
                batch.counted = 0
        return out

    # -- the thread ----------------------------------------------------------------------------

    def run(self) -> None:
        context.suppress.set(True)
        self.callers.prepare()
        try:
            self.spooler.open_if_present()
        except Exception as exc:
            safety.internal_error("spool.open", exc)
        while not self.exiting:
            try:
                self.step()
            except BaseException as exc:
                safety.internal_error("pipeline.sender", exc)
            try:
                self._answer_flushes()
            except BaseException as exc:
                safety.internal_error("pipeline.sender", exc)
        try:
            self.finish()
        except BaseException as exc:
            safety.internal_error("pipeline.exit", exc)
        finally:
            self.done.set()

    def step(self) -> None:
        """One attempt, or one wait: for the pause to end, or for something to send."""
        if self.exiting:
            return
        self._answer_flushes()
        now = self.clock.monotonic()
        batch = self.current
        if now < self.next_attempt:
            if batch is not None and self._give_up(batch):
                self._park(batch)
            self._wait(self.next_attempt - now)
            return
        if batch is None:
            batch = self._next()
            if batch is None:
                self._wait(self.flush_interval)
                return
            self.current = batch
        self._attempt(batch)

    def _next(self) -> Batch | None:
        retries = self.report_retries
        if retries and self.clock.monotonic() >= retries[0][0]:
            return retries.popleft()[1]
        # Live batches and spooled ones take turns, so a replay never starves fresh spans and
        # steady traffic never starves the replay.
        if self._spool_turn:
            batch = self.spooler.take() or self._next_live()
        else:
            batch = self._next_live() or self.spooler.take()
        self._spool_turn = not self._spool_turn
        return batch

    def _wait(self, seconds: float) -> None:
        if self._flushes:
            # A flush is answered once the ledger says so, and the worker changes it too.
            seconds = min(seconds, FLUSH_POLL)
        self.clock.wait(self.wake, seconds)
        self.wake.clear()

    # -- flushes -------------------------------------------------------------------------------

    def _answer_flushes(self) -> None:
        with self._lock:
            requests = list(self._flushes)
        for request in requests:
            if request.spool:
                self._spool_now()
                self._answer(request, False)
            elif self.flush_done(request):
                self._answer(request, True)

    def _answer(self, request: FlushRequest, result: bool) -> None:
        with self._lock:
            if request not in self._flushes:
                return
            self._flushes.remove(request)
            request.result = result
            request.answered.set()

    def _spool_asked(self) -> bool:
        with self._lock:
            return any(request.spool for request in self._flushes)

    def _spool_now(self) -> None:
        """Every batch waiting here to the spool, on a flush's behalf: the current one and the
        queued ones. Those the spool cannot take now stay in memory, pending."""
        if self.failing and self.spooler.enabled:
            if self.current is not None:
                self._park(self.current)
            for batch in self.spooler.store(self._take_waiting(), "flush_timeout"):
                batch.hold()
                self._add(batch)

    # -- one attempt ---------------------------------------------------------------------------

    def _attempt(self, batch: Batch) -> None:
        try:
            records = batch.spans()
        except Exception as exc:
            safety.internal_error("pipeline.decode", exc)
            self._settle(batch, "dropped", "corrupt")
            return
        data = self.batch_fields()
        if batch.kind == SPANS:
            data["spans"] = records
        else:
            data.update(records[0])
        del records
        hung = self.callers.hung()
        error: object
        if hung:
            error = HungReporter(
                f"reporter still holds {self.callers.abandoned()} threads in send(); not called"
            )
        else:
            delivery = self.delivery = Delivery()
            try:
                if self.exiting:
                    # begin_exit() may have looked for a delivery to close just before this one.
                    delivery(TimeoutError("exiting"))
                elif self.failing and self._spool_asked():
                    # A flush gave up just before this attempt: its batches go to the spool.
                    delivery(TimeoutError("flush timed out"))
                else:
                    self.callers.send(data, delivery, self.send_timeout, not self.stopping)
            except Exception as exc:
                # Starting the reporter's thread failed (the process is out of threads, say).
                delivery(exc)
            finally:
                # Not kept past the send: an error's traceback would hold the batch's records.
                self.delivery = None
            error = delivery.error
        del data
        kind, retry_after, text = outcome(error)
        del error
        if kind == OK:
            self._read_partial(batch.count)
            if self.failures:
                log.info("tracer: reporter delivers again")
            self.failures = 0
            self.next_attempt = 0.0
            if not batch.is_report:
                self.spans_ok = True
            self._settle(batch, "delivered")
            return
        if kind == REJECT:
            what = "a report batch" if batch.is_report else f"a batch of {batch.count} spans"
            log.warning("tracer: reporter rejected %s: %s", what, text)
            self._settle(batch, "dropped", "rejected")
            return
        if batch.is_report and not hung and self.spans_ok and not self.failures:
            self._report_failed(batch, text)
            return
        if not batch.is_report:
            self.spans_ok = False
        self.failures += 1
        batch.attempts += 1
        delay = min(self.max_backoff, FIRST_BACKOFF * 2 ** min(self.failures, 30))
        delay *= 0.5 + random.random() / 2
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_backoff))
        if hung:
            delay = self.max_backoff
        self.next_attempt = self.clock.monotonic() + delay
        self.ledger.trouble(f"reporter failing ({text})")
        if hung or self._give_up(batch):
            self._park(batch)

    def _report_failed(self, batch: Batch, text: str) -> None:
        """A report batch failed while span batches are delivered.

        A reporter may handle spans and not reports (one written before reports existed reads
        ``data["spans"]``), so the report's failures are its own: they never set the spans'
        backoff. It is tried again after a pause of its own, up to ``max_retries`` times, then
        dropped (``reporter_error``), logged once.
        """
        self.current = None
        batch.attempts += 1
        if self.exiting or self.stopping:
            self._park(batch)
            return
        if batch.attempts > self.max_retries:
            if not self._report_warned:
                self._report_warned = True
                log.warning(
                    "tracer: the reporter fails on report batches (metrics, memory) while it"
                    " delivers spans; dropping them (%s)",
                    text,
                )
            self._settle(batch, "dropped", "reporter_error")
            return
        if len(self.report_retries) >= MAX_REPORT_RETRIES:
            _, oldest = self.report_retries.popleft()
            self._settle_aside(oldest, "dropped", "reporter_error")
        batch.hold()
        delay = min(self.max_backoff, FIRST_BACKOFF * 2 ** min(batch.attempts, 30))
        due = self.clock.monotonic() + delay
        # Kept in order of their due times, which are never earlier than the last one's.
        if self.report_retries:
            due = max(due, self.report_retries[-1][0])
        self.report_retries.append((due, batch))

    def _read_partial(self, count: int) -> None:
        # A receiver may accept a batch and reject some of its spans (OTLP's partial_success):
        # the reporter counts them in ``rejected_spans``; the ledger shows what this send added.
        try:
            seen = getattr(self.reporter, "rejected_spans", 0)
        except Exception:
            return
        if isinstance(seen, int) and not isinstance(seen, bool) and seen > self._rejected_seen:
            # A reporter cannot have lost more of a batch than the batch held.
            self.ledger.partial(min(seen - self._rejected_seen, count))
            self._rejected_seen = seen

    def _give_up(self, batch: Batch) -> bool:
        """Whether a failing batch goes to the spool now rather than being tried again."""
        if self.exiting or batch.spool_id is not None:
            return True
        if self._flushes:
            # While a flush waits, a batch is retried on its schedule until the flush's timeout.
            return False
        return batch.attempts > self.max_retries or self.failures > self.max_retries + 1

    def _park(self, batch: Batch) -> None:
        """A batch that failed for now: a spooled one goes back, a live one to the spool; when
        there is no spool, it is dropped (``reporter_error``); when the spool cannot take it
        now, it waits in memory behind the others."""
        self.current = None
        if batch.spool_id is not None:
            self.spooler.release(batch)
            return
        if not self.spooler.enabled:
            self._settle(batch, "dropped", "reporter_error")
            return
        if self.spooler.store([batch], "reporter_error"):
            if self.exiting:
                self.ledger.settle_live(batch, "dropped", "spool_unavailable")
            else:
                batch.hold()
                self._add(batch)

    def _settle_aside(self, batch: Batch, where: str, reason: str = "") -> None:
        """Settle a batch that is not the current one."""
        if batch.spool_id is None:
            self.ledger.settle_live(batch, where, reason)
            return
        self.ledger.settle_spooled(batch, where, batch.ours, reason)
        self.spooler.ack(batch)

    def _settle(self, batch: Batch, where: str, reason: str = "") -> None:
        self.current = None
        self._settle_aside(batch, where, reason)

    # -- exit ----------------------------------------------------------------------------------

    def begin_exit(self) -> None:
        """Stop sending: the send in flight is given up on, the rest goes to the spool."""
        self.exiting = True
        delivery = self.delivery
        if delivery is not None:
            delivery(TimeoutError("reporter did not call back before exit"))
        self.wake.set()

    def finish(self) -> None:
        """On the way out: every batch still here, and the queue's spans, to the spool (or
        counted dropped when there is none, or it cannot take them in time). Once only: a
        second call (the exit's thread, while the sender's still runs it) does nothing, so no
        batch is stored twice."""
        with self._finish_lock:
            if self._finished:
                return
            self._finished = True
        batches: list[Batch] = []
        if self.current is not None:
            batches.append(self.current)
            self.current = None
        while self.report_retries:
            batches.append(self.report_retries.popleft()[1])
        batches.extend(self._take_waiting())
        batches.extend(self.drain())
        live = []
        for batch in batches:
            if batch.spool_id is not None:
                self.spooler.release(batch)
            else:
                live.append(batch)
        if self.spooler.enabled:
            live = self.spooler.store(live, "exit")
            reason = "spool_unavailable"
        else:
            reason = "exit"
        for batch in live:
            self.ledger.settle_live(batch, "dropped", reason)
        self.callers.close()
        self.spooler.close()
