"""The worker thread: queued spans -> record dicts -> batches, submitted to the sender.

The worker only makes batches: it hands each to :meth:`Sender.submit`, and the sender's queue
decides whether a batch waits as dicts or held compressed, and caps the bytes held. A flush asks
for what is queued to be cut into batches now, whatever their size (:meth:`Batcher.cut`).
"""

from __future__ import annotations

import gc
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from tracer import context, safety
from tracer.delivery.batches import Batch
from tracer.delivery.ledger import Ledger
from tracer.span import Frozen, fast_records, record, record_template

if TYPE_CHECKING:
    from tracer.delivery.sender import Sender

# Records built between two chances for other threads to take the GIL (see Batcher.records).
RECORD_SLICE = 250


class Batcher:
    """Turns the request threads' queue into batches; runs on the ``tracer-worker`` thread."""

    def __init__(
        self,
        queue: deque[Frozen],
        wake: threading.Event,
        ledger: Ledger,
        sender: Sender,
        *,
        service: str,
        host: str,
        pid: int,
        batch_size: int,
        flush_interval: float,
    ) -> None:
        self.queue = queue
        self.wake = wake
        self.ledger = ledger
        self.sender = sender
        self.service = service
        self.host = host
        self.pid = pid
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.lock = threading.Lock()
        self.stopping = False
        # Set by cut(): the next round cuts every queued span into batches, full or not.
        self._cut = threading.Event()
        self._last_batch = time.monotonic()

    def cut(self) -> None:
        """Ask for every span queued now to be made into batches at once (a flush waits)."""
        self._cut.set()
        self.wake.set()

    def stop(self) -> None:
        """Ask the worker to end after its current round."""
        self.stopping = True
        self.wake.set()

    # -- the worker thread ---------------------------------------------------------------------

    def run(self) -> None:
        context.suppress.set(True)
        while True:
            self.wake.wait(self.flush_interval)
            self.wake.clear()
            try:
                cut = self._cut.is_set()
                self._cut.clear()
                self.make_batches(cut)
                self.sender.hold_stale()
            except Exception as exc:
                safety.internal_error("pipeline.worker", exc)
            if self.stopping:
                return

    def make_batches(self, cut: bool = False) -> None:
        q = self.queue
        while q and not self.stopping:
            # Full batches only, unless spans have waited a whole interval or someone waits for
            # them (flush): cutting a batch for every few spans that trickle in while we work
            # would cost a send per few spans.
            if (
                len(q) < self.batch_size
                and not cut
                and time.monotonic() - self._last_batch < self.flush_interval
            ):
                return
            self._last_batch = time.monotonic()
            batch = self._take(min(self.batch_size, len(q)))
            if batch is not None:
                self.sender.submit(batch)

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
        template = record_template(service, host, pid)
        # The accelerator's records of the common spans, a slice in one call, when it is built
        # (None for a span that needs the Python path).
        fast = fast_records
        out: list[dict[str, Any]] = []
        for i in range(0, len(frozen), RECORD_SLICE):
            paused = gc.isenabled()
            if paused:
                gc.disable()
            try:
                chunk = frozen[i : i + RECORD_SLICE]
                made: list[dict[str, Any] | None] = (
                    [None] * len(chunk) if fast is None else fast(chunk, template)
                )
                if None in made:
                    for j, f in enumerate(chunk):
                        if made[j] is not None:
                            continue
                        try:
                            made[j] = record(f, service, host, pid, template)
                        except Exception as exc:
                            safety.internal_error("span.record", exc)
                            # Already counted as taken (so as created): not a
                            # "serialise_error".
                            self.ledger.drop_taken("record_error", 1)
                    out.extend(m for m in made if m is not None)
                else:
                    out.extend(made)  # type: ignore[arg-type]
            finally:
                if paused:
                    gc.enable()
            time.sleep(0)
        return out

    def drain(self) -> list[Batch]:
        """At exit, on the sender's thread: the queue's spans made into batches."""
        out = []
        while self.queue:
            batch = self._take(min(self.batch_size, len(self.queue)))
            if batch is not None:
                out.append(batch)
        return out
