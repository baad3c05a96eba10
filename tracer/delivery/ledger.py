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
from typing import Any

log = logging.getLogger("tracer")

# At most one trouble line per this many seconds, however bad things get.
LOG_EVERY = 10.0


class Settled:
    """A flag that is set once: the first of several settlements of one batch wins."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = False


class ReportSettled(Settled):
    """The flag of a report batch (metrics, memory): the ledger counts it as one report of its
    kind, apart from the spans."""

    __slots__ = ("kind",)

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind


# What is counted per kind of report.
REPORT_COUNTS = ("created", "delivered", "dropped", "spooled", "replayed", "replay_dropped")


class Ledger:
    """The pipeline's counters, changed only through these methods, under one lock."""

    def __init__(self, queued: Callable[[], int]) -> None:
        # The queue's length, read without a lock: request threads append to it lock-free.
        self._queued = queued
        self.lock = threading.Lock()
        self.taken = 0
        self.delivered = 0
        self.spooled = 0
        self.replayed = 0
        self.replay_dropped = 0
        self.dropped: Counter[str] = Counter()
        self.partial_rejected = 0
        # Spans taken from the queue and not yet delivered, dropped or spooled.
        self.in_flight = 0
        # Report batches (metrics, memory) by kind: REPORT_COUNTS, and the drops by reason.
        self.reports: dict[str, Counter[str]] = {}
        self._last_log = 0.0

    # -- the door ----------------------------------------------------------------------------

    def refuse(self, reason: str, count: int) -> None:
        """Spans that never entered the queue (full, or the span could not be frozen)."""
        with self.lock:
            self.dropped[reason] += count

    def take(self, count: int) -> None:
        """Spans taken from the queue; they are in flight until settled."""
        with self.lock:
            self.taken += count
            self.in_flight += count

    def drop_taken(self, reason: str, count: int) -> None:
        """Taken spans that never made it into a batch (their record could not be built)."""
        with self.lock:
            self.in_flight -= count
            self.dropped[reason] += count

    def report_created(self, kind: str) -> None:
        """A report batch (``metrics``, ``memory``) entered the pipeline."""
        with self.lock:
            self._report(kind)["created"] += 1

    def _report(self, kind: str) -> Counter[str]:
        counts = self.reports.get(kind)
        if counts is None:
            counts = self.reports[kind] = Counter()
        return counts

    def _settle_report(
        self, flag: ReportSettled, outcome: str, reason: str, spooled: bool, ours: bool = True
    ) -> None:
        counts = self._report(flag.kind)
        if spooled:
            if not ours:
                counts["replayed" if outcome == "delivered" else "replay_dropped"] += 1
                return
            counts["spooled"] -= 1
        counts[outcome if outcome in ("delivered", "spooled") else "dropped"] += 1
        if outcome not in ("delivered", "spooled"):
            counts[f"dropped:{reason}"] += 1

    # -- one batch of this process's live spans ------------------------------------------------

    def settle_live(self, flag: Settled, outcome: str, count: int, reason: str = "") -> bool:
        """A live batch left the pipeline: ``delivered``, ``dropped`` (with ``reason``) or
        ``spooled``. False (and nothing counted) when the batch was settled before."""
        with self.lock:
            if flag.done:
                return False
            flag.done = True
            if isinstance(flag, ReportSettled):
                self._settle_report(flag, outcome, reason, False)
                return True
            self.in_flight -= count
            if outcome == "delivered":
                self.delivered += count
            elif outcome == "spooled":
                self.spooled += count
            else:
                self.dropped[reason] += count
            return True

    # -- batches that were in the spool --------------------------------------------------------

    def settle_spooled(
        self, flag: Settled, outcome: str, count: int, ours: bool, reason: str = ""
    ) -> bool:
        """A batch taken from the spool was ``delivered`` or ``dropped`` for good."""
        with self.lock:
            if flag.done:
                return False
            flag.done = True
            if isinstance(flag, ReportSettled):
                self._settle_report(flag, outcome, reason, True, ours)
                return True
            if ours:
                self.spooled -= count
                if outcome == "delivered":
                    self.delivered += count
                else:
                    self.dropped[reason] += count
            elif outcome == "delivered":
                self.replayed += count
            else:
                self.replay_dropped += count
            return True

    def lost_from_spool(self, owned: int, other: int, reason: str) -> None:
        """Spooled spans deleted without delivery (evicted for room, a damaged file)."""
        with self.lock:
            owned = min(owned, self.spooled)
            self.spooled -= owned
            if owned:
                self.dropped[reason] += owned
            self.replay_dropped += other

    def forget_spooled(self, reason: str) -> int:
        """Every span of ours in the spool is gone (the file was damaged): dropped, counted."""
        with self.lock:
            lost, self.spooled = self.spooled, 0
            if lost:
                self.dropped[reason] += lost
            return lost

    def partial(self, rejected: int) -> None:
        """Spans a receiver accepted the batch of but said it rejected (OTLP partial success)."""
        with self.lock:
            self.partial_rejected += rejected

    # -- reading -------------------------------------------------------------------------------

    def pending(self) -> int:
        with self.lock:
            return self._queued() + self.in_flight

    def settled_total(self) -> tuple[int, int, int]:
        """``(created, delivered + dropped, spooled)``, read together: spans and reports."""
        with self.lock:
            created = self._created_locked()
            settled = self.delivered + sum(self.dropped.values())
            spooled = self.spooled
            for counts in self.reports.values():
                created += counts["created"]
                settled += counts["delivered"] + counts["dropped"]
                spooled += counts["spooled"]
            return created, settled, spooled

    def _created_locked(self) -> int:
        return (
            self.taken
            + self._queued()
            + self.dropped.get("queue_full", 0)
            + self.dropped.get("serialise_error", 0)
        )

    def stats(self) -> dict[str, Any]:
        with self.lock:
            queued = self._queued()
            dropped = dict(self.dropped)
            return {
                "created": self.taken
                + queued
                + dropped.get("queue_full", 0)
                + dropped.get("serialise_error", 0),
                "delivered": self.delivered,
                "spooled": self.spooled,
                "dropped": sum(dropped.values()),
                "dropped_by_reason": dropped,
                "pending": queued + self.in_flight,
                "replayed": self.replayed,
                "replay_dropped": self.replay_dropped,
                "partial_rejected": self.partial_rejected,
                "reports": {kind: _report_stats(c) for kind, c in self.reports.items()},
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


def _report_stats(counts: Counter[str]) -> dict[str, Any]:
    """One kind's report counts; ``created == delivered + dropped + spooled + pending``."""
    out: dict[str, Any] = {name: counts[name] for name in REPORT_COUNTS}
    out["pending"] = out["created"] - out["delivered"] - out["dropped"] - out["spooled"]
    out["dropped_by_reason"] = {
        key.partition(":")[2]: n for key, n in counts.items() if key.startswith("dropped:")
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
