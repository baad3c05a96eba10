"""A batch's kind travels with it into the spool and back; a batch is spooled once at most."""

from __future__ import annotations

import json
import threading
import zlib
from pathlib import Path

from tracer.delivery.batches import METRICS, SPANS, Batch
from tracer.delivery.ledger import Ledger
from tracer.delivery.spool import Spool
from tracer.delivery.spooler import Spooler

TOKEN = b"12345678"


def spooler(path: Path) -> tuple[Spooler, Ledger]:
    ledger = Ledger(lambda: 0)
    return Spooler(path, 1 << 20, ledger, TOKEN), ledger


def span_batch(n: int) -> Batch:
    return Batch([{"span_id": f"{i:016x}"} for i in range(n)], None, n)


def test_a_report_read_back_from_the_spool_is_a_report_of_its_kind(tmp_path: Path) -> None:
    path = tmp_path / "kinds.sqlite"
    out, ledger = spooler(path)
    ledger.report_created(METRICS)
    ledger.take(3)
    report = Batch.report(METRICS, {METRICS: {"series": []}})
    assert out.store([report, span_batch(3)], "test") == []
    stats = ledger.stats()
    assert stats["spooled"] == 3 and stats["reports"][METRICS]["spooled"] == 1
    # Each row says its kind, after the token of the process that stored it.
    assert out.spool is not None
    rows = out.spool.take(2)
    heads = (TOKEN + b"\x00metrics\x00", TOKEN + b"\x00spans\x00")
    assert [p[: len(head)] for (_, p, _), head in zip(rows, heads, strict=True)] == list(heads)
    out.spool.release([row_id for row_id, _, _ in rows])
    first, second = out.take(), out.take()
    out.close()
    assert first is not None and second is not None
    assert (first.kind, first.spans()) == (METRICS, [{METRICS: {"series": []}}])
    assert (second.kind, second.count) == (SPANS, 3)
    assert [s["span_id"] for s in second.spans()] == [f"{i:016x}" for i in range(3)]
    assert first.ours and second.ours


def test_a_row_stored_without_its_kind_is_read_by_the_key_of_its_report(tmp_path: Path) -> None:
    """Rows written before rows carried their kind: a report's object names its kind."""
    path = tmp_path / "old.sqlite"
    old = Spool(path)
    report = zlib.compress(json.dumps({"memory": {"top": []}}).encode(), 1)
    spans = zlib.compress(json.dumps([{"span_id": "a" * 16}]).encode(), 1)
    old.put_many([(TOKEN + report, 0), (TOKEN + spans, 1)], TOKEN)
    old.close()
    out, _ = spooler(path)
    first, second = out.take(), out.take()
    out.close()
    assert first is not None and second is not None
    assert (first.kind, first.spans()) == ("memory", [{"memory": {"top": []}}])
    assert (second.kind, second.spans()) == (SPANS, [{"span_id": "a" * 16}])


def test_a_batch_handed_to_the_spool_twice_is_stored_once(tmp_path: Path) -> None:
    path = tmp_path / "once.sqlite"
    out, ledger = spooler(path)
    ledger.take(200)
    batch, other = span_batch(100), span_batch(100)
    barrier = threading.Barrier(2)

    def store() -> None:
        barrier.wait()
        out.store([batch], "test")

    threads = [threading.Thread(target=store) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert out.store([batch, other], "test") == []
    assert out.spool is not None
    assert out.spool.pending() == (2, 200)
    out.close()
    stats = ledger.stats()
    assert stats["spooled"] == 200 and stats["pending"] == 0
