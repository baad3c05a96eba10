"""A batch of records of one kind, live or held compressed (as JSON, by the reporters' encoder).

``Batch.kind`` says what a batch carries: ``"spans"`` (a list of span records) or a report
(``"metrics"``, ``"memory"``), whose one record is ``{kind: {...}}`` and goes into the data the
reporter receives in place of ``"spans"``. The kind is set where the batch is made and travels
with it, into the spool and back (:mod:`~tracer.delivery.spooler`); nothing is told from the
shape of its JSON. Every kind takes the same retry, spool and replay, and the ledger counts a
span batch by its spans and a report batch as one (:attr:`Batch.units`).
"""

from __future__ import annotations

import json
import time
import zlib
from typing import Any

from tracer.delivery.ledger import SPANS, Settled

__all__ = ["KINDS", "LIVE_RECORD_BYTES", "MEMORY", "METRICS", "PROFILE", "SPANS", "Batch"]
from tracer.encoding import encode_json

METRICS = "metrics"
MEMORY = "memory"
PROFILE = "profile"
# Every kind a batch may have; a kind read from the spool that is not one of them is corrupt.
KINDS = frozenset((SPANS, METRICS, MEMORY, PROFILE))

# What a record kept as a dict is counted as against max_queue_bytes (see benchmarks/README.md).
LIVE_RECORD_BYTES = 2048


class Batch:
    """Records waiting for delivery: live dicts, or held as compressed JSON.

    ``spool_id`` is set for a batch taken from the spool, ``ours`` tells whether this process
    made it. ``settled`` is set once, when the ledger counted where the batch went. ``count`` is
    the spans it holds (0 for a report).
    """

    __slots__ = (
        "attempts",
        "blob",
        "born",
        "count",
        "counted",
        "kind",
        "ours",
        "records",
        "settled",
        "spool_id",
        "storing",
    )

    @classmethod
    def report(cls, kind: str, body: dict[str, Any]) -> Batch:
        """A report batch: ``body`` (``{kind: {...}}``) goes into the reporter's data as is."""
        return cls([body], None, 0, kind)

    def __init__(
        self,
        records: list[dict[str, Any]] | None,
        blob: bytes | None,
        count: int,
        kind: str = SPANS,
    ) -> None:
        self.records = records
        self.blob = blob
        self.count = count
        self.kind = kind
        self.spool_id: int | None = None
        self.ours = True
        self.born = time.monotonic()
        # What this batch adds to the pipeline's held bytes; changed only under the queue's lock.
        self.counted = 0
        self.attempts = 0
        self.settled = Settled()
        # Set while (and once) the spooler writes it: see Spooler.store.
        self.storing = False

    @property
    def size(self) -> int:
        if self.blob is not None:
            return len(self.blob)
        return LIVE_RECORD_BYTES * self.count

    @property
    def is_report(self) -> bool:
        return self.kind != SPANS

    @property
    def units(self) -> int:
        """What the ledger counts for this batch: its spans, or one report."""
        return self.count if self.kind == SPANS else 1

    def hold(self) -> None:
        """Serialise and compress the records (they are waiting, so memory matters more)."""
        records = self.records
        if records is not None:
            value = records if self.kind == SPANS else records[0]
            self.blob = zlib.compress(encode_json(value), 1)
            self.records = None

    def spans(self) -> list[dict[str, Any]]:
        """The records: span dicts, or a report's one body dict (see the module)."""
        records = self.records
        if records is not None:
            return records
        assert self.blob is not None
        loaded = json.loads(zlib.decompress(self.blob))
        if self.kind == SPANS and isinstance(loaded, list):
            return loaded
        if self.kind != SPANS and isinstance(loaded, dict):
            return [loaded]
        raise ValueError(f"a held {self.kind} batch is {type(loaded).__name__}")
