"""A batch of span records, live or held compressed (as JSON, by the reporters' encoder).

A report batch (metrics, memory) is a batch too, so it takes the same retry, spool and replay
as spans: its records are one dict, ``{"metrics": {...}}``, whose keys go into the data the
reporter receives in place of ``"spans"``. It counts no spans (``count`` 0); the ledger counts it
as a report through its :class:`ReportSettled` flag. Held or spooled, a span batch is a JSON
array and a report a JSON object, so a batch read back from the spool knows what it is.
"""

from __future__ import annotations

import json
import time
import zlib
from typing import Any

from tracer.delivery.ledger import ReportSettled, Settled
from tracer.encoding import encode_json

# What a record kept as a dict is counted as against max_queue_bytes (see benchmarks/README.md).
LIVE_RECORD_BYTES = 2048


class Batch:
    """Records waiting for delivery: live dicts, or held as compressed JSON.

    ``spool_id`` is set for a batch taken from the spool, ``ours`` tells whether this process
    made it. ``settled`` is set once, when the ledger counted where the batch went.
    """

    __slots__ = (
        "attempts",
        "blob",
        "born",
        "count",
        "counted",
        "ours",
        "records",
        "settled",
        "spool_id",
    )

    @classmethod
    def report(cls, kind: str, body: dict[str, Any]) -> Batch:
        """A report batch: ``body`` (``{kind: {...}}``) goes into the reporter's data as is."""
        batch = cls([body], None, 0)
        batch.settled = ReportSettled(kind)
        return batch

    def __init__(
        self, records: list[dict[str, Any]] | None, blob: bytes | None, count: int
    ) -> None:
        self.records = records
        self.blob = blob
        self.count = count
        self.spool_id: int | None = None
        self.ours = True
        self.born = time.monotonic()
        # What this batch adds to the pipeline's held bytes; changed only under the queue's lock.
        self.counted = 0
        self.attempts = 0
        self.settled = Settled()

    @property
    def size(self) -> int:
        if self.blob is not None:
            return len(self.blob)
        return LIVE_RECORD_BYTES * self.count

    def hold(self) -> None:
        """Serialise and compress the records (they are waiting, so memory matters more)."""
        records = self.records
        if records is not None:
            value = records[0] if self.is_report else records
            self.blob = zlib.compress(encode_json(value), 1)
            self.records = None

    @property
    def is_report(self) -> bool:
        return isinstance(self.settled, ReportSettled)

    def spans(self) -> list[dict[str, Any]]:
        """The records: span dicts, or a report's one body dict (see the module)."""
        records = self.records
        if records is not None:
            return records
        assert self.blob is not None
        loaded = json.loads(zlib.decompress(self.blob))
        if isinstance(loaded, dict):
            # A report read back from the spool: it is counted as one, of its kind.
            if not self.is_report:
                flag = ReportSettled(next(iter(loaded), "report"))
                flag.done = self.settled.done
                self.settled = flag
            return [loaded]
        if not isinstance(loaded, list):
            raise ValueError(f"a held batch is {type(loaded).__name__}, not a list of spans")
        return loaded
