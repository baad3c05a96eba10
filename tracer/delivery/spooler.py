"""Routing batches to and from the disk spool, on tracer's threads only.

The spool file is opened when a batch first needs it, or at start when a file from an earlier
process is there to replay: never by ``install()``, never on a request thread. What can go wrong
with the file is handled here, in one place:

- A damaged file (not a database, truncated, malformed) is moved aside, kept for inspection, and
  a fresh one takes its place at once; one warning says so. This process's spans that were in it
  are counted as dropped (``spool_corrupt``).
- A file locked by another process for longer than the busy timeout makes the spool unavailable
  for a while (a growing pause, ``RETRY_MAX`` at most): a batch that cannot be stored is handed
  back to the caller, which keeps it in memory or counts it dropped, and nothing waits for the
  lock again until the pause is over.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import zlib
from typing import TYPE_CHECKING

from tracer import safety
from tracer.delivery.batches import KINDS, SPANS, Batch
from tracer.delivery.ledger import Ledger
from tracer.delivery.spool import (
    BUSY_TIMEOUT_SECONDS,
    Spool,
    SpoolBusy,
    SpoolCorrupt,
    SpoolError,
    quarantine,
)

if TYPE_CHECKING:
    from pathlib import Path

log = logging.getLogger("tracer")

RETRY_FIRST = 1.0
RETRY_MAX = 30.0
# How often the spool is looked at for rows that other processes stored meanwhile.
RECHECK = 10.0
# A row's payload is the process token, then TAG, the batch's kind, TAG, then the compressed
# records. A zlib stream never starts with a zero byte, so a row without the tag (written
# before rows carried their kind) is told apart from one with it.
TAG = b"\x00"


def payload(token: bytes, batch: Batch) -> bytes:
    """The spool row of a held batch: who stored it, its kind, its records."""
    assert batch.blob is not None
    return token + TAG + batch.kind.encode("ascii") + TAG + batch.blob


def unpack(payload: bytes, token_size: int) -> tuple[str, bytes]:
    """``(kind, blob)`` of a spool row's payload (after the token); a row without a kind,
    from a version of tracer that did not store it, gets the kind its first key says."""
    rest = payload[token_size:]
    if rest[:1] == TAG:
        kind, sep, blob = rest[1:].partition(TAG)
        name = kind.decode("ascii", "replace")
        if not sep or name not in KINDS:
            raise ValueError(f"a spool row of unknown kind {name[:20]!r}")
        return name, blob
    return _untagged_kind(rest), rest


def _untagged_kind(blob: bytes) -> str:
    # Such a row held a JSON array of spans, or a report's object {"<kind>": {...}}.
    try:
        head = zlib.decompressobj().decompress(blob, 32)
    except zlib.error:
        return SPANS
    if head[:2] == b'{"':
        name = head[2:].partition(b'"')[0].decode("ascii", "replace")
        if name in KINDS and name != SPANS:
            return name
    return SPANS


class Spooler:
    """The pipeline's way to the spool: store, take for replay, ack or release."""

    def __init__(
        self, path: str | os.PathLike[str] | None, max_bytes: int, ledger: Ledger, token: bytes
    ) -> None:
        self.path = None if path is None else os.fspath(path)
        self.max_bytes = max_bytes
        self.ledger = ledger
        self.token = token
        self.spool: Spool | None = None
        self._lock = threading.Lock()
        self._claims = threading.Lock()
        self._unavailable_until = 0.0
        self._pause = RETRY_FIRST
        self._warned: set[str] = set()
        self._maybe_rows = False
        self._checked = 0.0
        # Set at exit (monotonic): no wait for the file's lock may last past it.
        self.deadline: float | None = None

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def open_if_present(self) -> None:
        """Open an existing spool file (an earlier process may have left batches to replay)."""
        if self.path is not None and os.path.exists(self.path):
            self._ready()

    # -- store ---------------------------------------------------------------------------------

    def store(self, batches: list[Batch], reason: str) -> list[Batch]:
        """Put live batches in the spool and count them; returns those that could not be
        stored now (spool unavailable). A batch the spool refuses (larger than the room it can
        make) is dropped, counted as ``spool_full``."""
        batches = self._claim(batches)
        if not batches:
            return []
        spool = self._ready()
        if spool is None:
            return self._unclaim(batches)
        payloads: list[tuple[bytes, int]] = []
        for batch in batches:
            batch.hold()
            payloads.append((payload(self.token, batch), batch.count))
        try:
            results = spool.put_many(payloads, self.token)
        except SpoolError as exc:
            self._failed(exc, "store")
            return self._unclaim(batches)
        ledger = self.ledger
        for batch, result in zip(batches, results, strict=True):
            if result.stored:
                ledger.settle_live(batch, "spooled")
            else:
                ledger.settle_live(batch, "dropped", "spool_full")
            if result.evicted:
                ledger.lost_from_spool(
                    result.evicted_owned, result.evicted - result.evicted_owned, "spool_full"
                )
        self._maybe_rows = True
        if reason != "exit":
            # At exit one line says what was spooled, and where (Pipeline.stop).
            ledger.trouble(f"spooling undelivered spans ({reason})")
        return []

    def _claim(self, batches: list[Batch]) -> list[Batch]:
        """The batches no other store() has taken or counted: a batch is written to the spool
        once at most, whichever threads (sender, worker, exit) hand it here."""
        with self._claims:
            fresh = [b for b in batches if not b.storing and not b.settled.done]
            for batch in fresh:
                batch.storing = True
        return fresh

    def _unclaim(self, batches: list[Batch]) -> list[Batch]:
        with self._claims:
            for batch in batches:
                batch.storing = False
        return batches

    # -- replay --------------------------------------------------------------------------------

    def take(self) -> Batch | None:
        """One stored batch to send again (leased to this process), or None."""
        if self.path is None:
            return None
        now = time.monotonic()
        if not self._maybe_rows and now - self._checked < RECHECK:
            return None
        self._checked = now
        if self.spool is None and not os.path.exists(self.path):
            # Nothing to replay, and looking must not create the file.
            return None
        spool = self._ready()
        if spool is None:
            return None
        try:
            rows = spool.take(1)
        except SpoolError as exc:
            self._failed(exc, "take")
            return None
        if not rows:
            self._maybe_rows = False
            return None
        self._maybe_rows = True
        row_id, data, count = rows[0]
        try:
            kind, blob = unpack(data, len(self.token))
        except ValueError:
            # Sent as it is, it fails to decode and is dropped as corrupt, counted.
            kind, blob = SPANS, b""
        batch = Batch(None, blob, count, kind)
        batch.spool_id = row_id
        batch.ours = data[: len(self.token)] == self.token
        return batch

    def ack(self, batch: Batch) -> None:
        """The batch was delivered or dropped for good: delete it from the spool."""
        self._by_id(batch, "ack")

    def release(self, batch: Batch) -> None:
        """The batch was not delivered: leave it in the spool for a later try."""
        self._by_id(batch, "release")

    def _by_id(self, batch: Batch, what: str) -> None:
        spool = self.spool
        if spool is None or batch.spool_id is None:
            return
        try:
            if what == "ack":
                spool.ack([batch.spool_id])
            else:
                spool.release([batch.spool_id])
        except SpoolError as exc:
            # An ack that did not happen means the batch is sent again once its lease expires.
            self._failed(exc, what)

    # -- the file ------------------------------------------------------------------------------

    def _ready(self) -> Spool | None:
        """The open spool, opened now if need be; None while it is unavailable."""
        if self.path is None:
            return None
        with self._lock:
            spool = self.spool
            if spool is not None:
                self._bound(spool)
                return spool
            if time.monotonic() < self._unavailable_until and self.deadline is None:
                # Paused after a failure; at exit there is one more try, bounded by the deadline.
                return None
            opened: Spool | None
            try:
                opened = self._open()
            except SpoolCorrupt as exc:
                opened = self._replace(exc)
            except Exception as exc:
                self._pause_for(exc, "open")
                return None
            if opened is None:
                return None
            spool = self.spool = opened
            self._pause = RETRY_FIRST
            try:
                self._maybe_rows = spool.pending()[0] > 0
            except SpoolError:
                self._maybe_rows = True
            return spool

    def _open(self) -> Spool:
        assert self.path is not None
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        busy = BUSY_TIMEOUT_SECONDS
        if self.deadline is not None:
            busy = max(0.05, min(busy, self.deadline - time.monotonic()))
        return Spool(self.path, self.max_bytes, busy_timeout=busy)

    def _bound(self, spool: Spool) -> None:
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            spool.busy_timeout = max(0.05, min(BUSY_TIMEOUT_SECONDS, left))

    def _replace(self, exc: SpoolError) -> Spool | None:
        """Move a damaged file aside and open a fresh one in its place."""
        assert self.path is not None
        try:
            aside: Path | None = quarantine(self.path)
            spool = self._open()
        except Exception as again:
            self._pause_for(again, "replace")
            return None
        lost = self.ledger.forget_spooled("spool_corrupt")
        log.warning(
            "tracer: spool %s was damaged (%s); moved it aside to %s and started a fresh one%s",
            self.path,
            exc,
            aside,
            f" ({lost} spans of this process were in it)" if lost else "",
        )
        return spool

    def _failed(self, exc: SpoolError, what: str) -> None:
        """A spool operation failed: replace a damaged file, pause after a lock or other error."""
        with self._lock:
            spool, self.spool = self.spool, None
            if spool is not None:
                try:
                    spool.close()
                except Exception as close_exc:
                    safety.internal_error("spool.close", close_exc)
            if isinstance(exc, SpoolCorrupt):
                replacement = self._replace(exc)
                if replacement is not None:
                    self.spool = replacement
                return
            self._pause_for(exc, what)

    def _pause_for(self, exc: BaseException, what: str) -> None:
        self._unavailable_until = time.monotonic() + self._pause
        self._pause = min(RETRY_MAX, self._pause * 2)
        kind = "locked" if isinstance(exc, SpoolBusy) else type(exc).__name__
        if kind not in self._warned:
            self._warned.add(kind)
            log.warning(
                "tracer: spool %s unavailable (%s: %s); retrying later, undelivered spans stay"
                " in memory meanwhile",
                self.path,
                what,
                exc,
            )

    def adopt(self, spool: Spool | None) -> None:
        """In a forked child: keep the parent's spool object, which opens a connection of its
        own on first use (closing the parent's, as dropping it would, disturbs the parent)."""
        if spool is not None and self.spool is None:
            self.spool = spool

    def close(self) -> None:
        with self._lock:
            spool, self.spool = self.spool, None
        if spool is not None:
            self._bound(spool)
            try:
                spool.close()
            except Exception as exc:
                safety.internal_error("spool.close", exc)
