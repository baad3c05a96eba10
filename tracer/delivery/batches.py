"""A batch of span records, live or held compressed (as JSON, by the reporters' encoder)."""

from __future__ import annotations

import json
import time
import zlib
from typing import Any

from tracer.delivery.ledger import Settled
from tracer.reporters.encoding import encode_json

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
            self.blob = zlib.compress(encode_json(records), 1)
            self.records = None

    def spans(self) -> list[dict[str, Any]]:
        records = self.records
        if records is not None:
            return records
        assert self.blob is not None
        loaded: list[dict[str, Any]] = json.loads(zlib.decompress(self.blob))
        return loaded
