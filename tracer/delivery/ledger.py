"""Every count of the pipeline, and the one invariant they keep.

``created == delivered + dropped + spooled + pending`` at every moment the counts are read
together (under the ledger's lock), because nothing here is counted twice or left out:

- ``created`` is what entered the pipeline: spans queued, plus those refused at the door
  (``queue_full``, ``serialise_error``).
- A span leaves ``pending`` exactly once: delivered, dropped (by reason) or moved to the spool.
  :class:`Settled` makes that "exactly once" hold per batch, whatever the reporter does.
- ``spooled`` counts this process's spans in the spool now: a spooled batch that is delivered
  later, dropped later or evicted for room moves from ``spooled`` to ``delivered`` or ``dropped``.

Spans of earlier processes (found in the spool) are not in this process's ledger: delivering
them counts as ``replayed``, losing them as ``replay_dropped``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger("tracer")

# At most one trouble line per this many seconds, however bad things get.
LOG_EVERY = 10.0


class Settled:
    """A flag that is set once: the first of several settlements of one batch wins."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = False


class Settles(Protocol):
    """What the ledger reads of a batch it settles (see :class:`~tracer.delivery.batches.Batch`)."""

    @property
    def settled(self) -> Settled: ...

    @property
    def kind(self) -> str: ...

    @property
    def units(self) -> int: ...


# The kind of a span batch; every other kind (metrics, memory) is a report.
SPANS = "spans"


class Ledger:
    """The pipeline's counters, changed only through these methods, under one lock.

    Every kind of batch (``spans``, ``metrics``, ``memory``) is counted by the same code, in a
    counter of its own: ``taken``, ``in_flight``, ``delivered``, ``spooled``, ``replayed``,
    ``replay_dropped`` and ``dropped:<reason>``. A span batch counts its spans, a report batch
    counts one. stats() shows the spans' counts at the top and the others under ``reports``.
    """

    def __init__(self, queued: Callable[[], int]) -> None:
        # The queue's length, read without a lock: request threads append to it lock-free.
        self._queued = queued
        self.lock = threading.Lock()
        self.kinds: dict[str, Counter[str]] = {SPANS: Counter()}
        self.partial_rejected = 0
        self._last_log = 0.0

    def _counts(self, kind: str) -> Counter[str]:
        counts = self.kinds.get(kind)
        if counts is None:
            counts = self.kinds[kind] = Counter()
        return counts

    # -- the door ----------------------------------------------------------------------------

    def refuse(self, reason: str, count: int) -> None:
        """Spans that never entered the queue (full, or the span could not be frozen)."""
        with self.lock:
            self.kinds[SPANS]["dropped:" + reason] += count

    def take(self, count: int) -> None:
        """Spans taken from the queue; they are in flight until settled."""
        with self.lock:
            counts = self.kinds[SPANS]
            counts["taken"] += count
            counts["in_flight"] += count

    def drop_taken(self, reason: str, count: int) -> None:
        """Taken spans that never made it into a batch (their record could not be built)."""
        with self.lock:
            counts = self.kinds[SPANS]
            counts["in_flight"] -= count
            counts["dropped:" + reason] += count

    def report_created(self, kind: str) -> None:
        """A report batch (``metrics``, ``memory``) entered the pipeline."""
        with self.lock:
            counts = self._counts(kind)
            counts["taken"] += 1
            counts["in_flight"] += 1

    # -- one batch of this process's live records ----------------------------------------------

    def settle_live(self, batch: Settles, outcome: str, reason: str = "") -> bool:
        """A live batch left the pipeline: ``delivered``, ``dropped`` (with ``reason``) or
        ``spooled``. False (and nothing counted) when the batch was settled before."""
        with self.lock:
            flag = batch.settled
            if flag.done:
                return False
            flag.done = True
            counts = self._counts(batch.kind)
            units = batch.units
            counts["in_flight"] -= units
            if outcome in ("delivered", "spooled"):
                counts[outcome] += units
            else:
                counts["dropped:" + reason] += units
            return True

    # -- batches that were in the spool --------------------------------------------------------

    def settle_spooled(self, batch: Settles, outcome: str, ours: bool, reason: str = "") -> bool:
        """A batch taken from the spool was ``delivered`` or ``dropped`` for good."""
        with self.lock:
            flag = batch.settled
            if flag.done:
                return False
            flag.done = True
            counts = self._counts(batch.kind)
            units = batch.units
            if ours:
                counts["spooled"] -= units
                if outcome == "delivered":
                    counts["delivered"] += units
                else:
                    counts["dropped:" + reason] += units
            elif outcome == "delivered":
                counts["replayed"] += units
            else:
                counts["replay_dropped"] += units
            return True

    def lost_from_spool(self, owned: int, other: int, reason: str) -> None:
        """Spooled spans deleted without delivery (evicted for room, a damaged file)."""
        with self.lock:
            counts = self.kinds[SPANS]
            owned = min(owned, counts["spooled"])
            counts["spooled"] -= owned
            if owned:
                counts["dropped:" + reason] += owned
            counts["replay_dropped"] += other

    def forget_spooled(self, reason: str) -> int:
        """Every span of ours in the spool is gone (the file was damaged): dropped, counted."""
        with self.lock:
            counts = self.kinds[SPANS]
            lost, counts["spooled"] = counts["spooled"], 0
            if lost:
                counts["dropped:" + reason] += lost
            return lost

    def partial(self, rejected: int) -> None:
        """Spans a receiver accepted the batch of but said it rejected (OTLP partial success)."""
        with self.lock:
            self.partial_rejected += rejected

    # -- reading -------------------------------------------------------------------------------

    def pending(self) -> int:
        with self.lock:
            return self._queued() + self.kinds[SPANS]["in_flight"]

    def settled_total(self) -> tuple[int, int, int]:
        """``(created, delivered + dropped, spooled)``, read together: spans and reports."""
        with self.lock:
            created = self._queued()
            settled = spooled = 0
            for counts in self.kinds.values():
                # Spans refused at the door were never taken: they are created and dropped.
                created += counts["taken"] + counts["dropped:queue_full"]
                created += counts["dropped:serialise_error"]
                settled += counts["delivered"] + sum(_dropped(counts).values())
                spooled += counts["spooled"]
            return created, settled, spooled

    def stats(self) -> dict[str, Any]:
        with self.lock:
            queued = self._queued()
            counts = self.kinds[SPANS]
            dropped = _dropped(counts)
            return {
                "created": counts["taken"]
                + queued
                + dropped.get("queue_full", 0)
                + dropped.get("serialise_error", 0),
                "delivered": counts["delivered"],
                "spooled": counts["spooled"],
                "dropped": sum(dropped.values()),
                "dropped_by_reason": dropped,
                "pending": queued + counts["in_flight"],
                "replayed": counts["replayed"],
                "replay_dropped": counts["replay_dropped"],
                "partial_rejected": self.partial_rejected,
                "reports": {
                    kind: _report_stats(c) for kind, c in self.kinds.items() if kind != SPANS
                },
            }

    # -- trouble -------------------------------------------------------------------------------

    def trouble(self, what: str) -> None:
        """Log ``what`` with the counts, at most once per ``LOG_EVERY`` seconds."""
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


def _dropped(counts: Counter[str]) -> dict[str, int]:
    """One kind's drops by reason (a Counter's missing key reads 0 and is not added)."""
    return {key[8:]: n for key, n in counts.items() if key.startswith("dropped:")}


def _report_stats(counts: Counter[str]) -> dict[str, Any]:
    """One kind's report counts; ``created == delivered + dropped + spooled + pending``."""
    dropped = _dropped(counts)
    out: dict[str, Any] = {
        "created": counts["taken"],
        "delivered": counts["delivered"],
        "dropped": sum(dropped.values()),
        "spooled": counts["spooled"],
        "replayed": counts["replayed"],
        "replay_dropped": counts["replay_dropped"],
        "pending": counts["in_flight"],
        "dropped_by_reason": dropped,
    }
    return out


def describe(error: object) -> str:
    """``Type: message`` for any error object, even one whose ``str()`` or type name raises."""
    try:
        name = type(error).__name__
    except Exception:
        name = "error"
    try:
        text = str(error)
    except Exception:
        try:
            text = repr(error)
        except Exception:
            text = "<unprintable>"
    return f"{name}: {text[:500]}"
