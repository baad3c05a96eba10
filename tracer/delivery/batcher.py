"""The worker thread: queued spans -> record dicts -> batches, waiting for the sender.

While the sender keeps up, a batch stays a list of dicts and is handed over as it is. A batch
that has to wait (``HOLD_AFTER`` batches are already waiting, a batch has waited a whole
``flush_interval``, or the reporter is failing) is held serialised and compressed, and the bytes
held are capped (``max_queue_bytes``): past the cap the oldest batches go to the disk spool.
"""

from __future__ import annotations

import gc
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from tracer import context, safety
from tracer.delivery.batches import Batch
from tracer.delivery.ledger import Ledger
from tracer.delivery.spooler import Spooler
from tracer.span import Frozen, record

# A batch that finds this many batches already waiting is held compressed (records as dicts take
# far more memory than compressed JSON); so is any batch that has waited a whole flush interval.
# Not the batch that merely follows the one being sent: under load the sender is often only
# waiting a moment for the GIL, and compressing (then decoding) every batch for such a wait
# costs CPU for no memory worth saving.
HOLD_AFTER = 2
# Records built between two chances for other threads to take the GIL (see Batcher.records).
RECORD_SLICE = 250


class Batcher:
    """Turns the request threads' queue into batches; runs on the ``tracer-worker`` thread."""

    def __init__(
        self,
        queue: deque[Frozen],
        wake: threading.Event,
        ledger: Ledger,
        spooler: Spooler,
        *,
        service: str,
        host: str,
        pid: int,
        batch_size: int,
        flush_interval: float,
        max_queue_bytes: int,
        failing: Callable[[], bool],
        idle: threading.Condition,
        sender_wake: threading.Event,
    ) -> None:
        self.queue = queue
        self.wake = wake
        self.ledger = ledger
        self.spooler = spooler
        self.service = service
        self.host = host
        self.pid = pid
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_queue_bytes = max_queue_bytes
        self.failing = failing
        self.idle = idle
        self.sender_wake = sender_wake
        self.batches: deque[Batch] = deque()
        self.held_bytes = 0
        self.lock = threading.Lock()
        self.flushing = 0
        self.stopping = False
        self._last_batch = time.monotonic()

    # -- the worker thread ---------------------------------------------------------------------

    def run(self) -> None:
        context.suppress.set(True)
        while True:
            self.wake.wait(self.flush_interval)
            self.wake.clear()
            try:
                self.make_batches()
                self.hold_stale()
            except Exception as exc:
                safety.internal_error("pipeline.worker", exc)
            with self.idle:
                self.idle.notify_all()
            if self.stopping:
                return

    def make_batches(self) -> None:
        q = self.queue
        while q and not self.stopping:
            # Full batches only, unless spans have waited a whole interval or someone waits for
            # them (flush): cutting a batch for every few spans that trickle in while we work
            # would cost a send per few spans.
            if (
                len(q) < self.batch_size
                and not self.flushing
                and time.monotonic() - self._last_batch < self.flush_interval
            ):
                return
            self._last_batch = time.monotonic()
            batch = self._take(min(self.batch_size, len(q)))
            if batch is None:
                continue
            backlog = len(self.batches) >= HOLD_AFTER or self.failing()
            if backlog:
                batch.hold()
            self.add(batch)
            self.sender_wake.set()

    def _take(self, take: int) -> Batch | None:
        """Take ``take`` queued spans and build their batch (None if none could be built)."""
        with self.lock:
            frozen = [self.queue.popleft() for _ in range(take)]
        self.ledger.take(take)
        records = self.records(frozen)
        del frozen
        return Batch(records, None, len(records)) if records else None

    def records(self, frozen: list[Frozen]) -> list[dict[str, Any]]:
        """Record dicts for queued spans; one that cannot be built is dropped, counted.

        Built a slice at a time with the GIL let go in between, so that the application's
        threads wait for the worker one slice at most, never a whole batch. While a slice is
        built the cyclic garbage collector is paused (when the application has not disabled it
        itself): records hold no cycles and are freed once sent, but thousands of fresh
        containers would otherwise set off collections that walk the application's whole heap,
        costlier than building the records.
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
                        self.ledger.drop_taken("record_error", 1)
            finally:
                if paused:
                    gc.enable()
            time.sleep(0)
        return out

    def add(self, batch: Batch) -> None:
        """Append a batch for the sender; past the byte cap the oldest go to the spool."""
        overflow: list[Batch] = []
        with self.lock:
            self.batches.append(batch)
            batch.counted = batch.size
            self.held_bytes += batch.counted
            while self.held_bytes > self.max_queue_bytes and len(self.batches) > 1:
                old = self.batches.popleft()
                self.held_bytes -= old.counted
                overflow.append(old)
        if overflow:
            self.overflow(overflow)

    def overflow(self, batches: list[Batch]) -> None:
        """Batches past the memory cap: to the spool, or dropped (counted) when it cannot take
        them now."""
        if self.spooler.enabled:
            batches = self.spooler.store(batches, "memory_cap")
        for batch in batches:
            self.ledger.settle_live(batch.settled, "dropped", batch.count, "memory_cap")
        if batches:
            self.ledger.trouble("dropping spans (memory_cap)")

    def hold_stale(self) -> None:
        """Compress the live batches that have waited a whole flush interval."""
        limit = time.monotonic() - self.flush_interval
        with self.lock:
            stale = [b for b in self.batches if b.records is not None and b.born < limit]
        for batch in stale:
            # The sender may take the batch meanwhile: it reads ``records`` or, once they are
            # gone, the blob that hold() set first, so either way it sends the same spans.
            batch.hold()
            with self.lock:
                if batch in self.batches:
                    self.held_bytes += batch.size - batch.counted
                    batch.counted = batch.size

    # -- the sender's side ---------------------------------------------------------------------

    def next_batch(self) -> Batch | None:
        with self.lock:
            if not self.batches:
                return None
            batch = self.batches.popleft()
            self.held_bytes -= batch.counted
            batch.counted = 0
            return batch

    def waiting(self) -> bool:
        return bool(self.batches)

    def take_waiting(self) -> list[Batch]:
        """Every batch waiting for the sender, oldest first (the queue's spans stay queued)."""
        with self.lock:
            out = list(self.batches)
            self.batches.clear()
            self.held_bytes = 0
            for batch in out:
                batch.counted = 0
        return out

    def drain(self) -> list[Batch]:
        """At exit: every waiting batch, and the queue's spans made into batches."""
        with self.lock:
            out = list(self.batches)
            self.batches.clear()
            self.held_bytes = 0
        while self.queue:
            batch = self._take(min(self.batch_size, len(self.queue)))
            if batch is not None:
                out.append(batch)
        return out
