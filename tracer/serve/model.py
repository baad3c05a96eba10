"""The shapes that cross between the receivers, the store and the JSON API of ``tracer serve``.

Every receiver (OTLP/HTTP traces and metrics, Zipkin v2, tracer's own batches) decodes its body
into one :class:`Decoded`; the store takes nothing else. A span is tracer's own span record (the
fields of docs/reporters.md), whatever sent it, so the viewer has one shape to show.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypedDict

#: A span record: tracer's span record (docs/reporters.md) plus ``source`` (``"tracer"``,
#: ``"otlp"`` or ``"zipkin"``) and, for spans from other tracers, ``attributes`` (what no field of
#: the record holds, as strings). Kept a plain dict: it is stored and served as JSON.
SpanRecord = dict[str, Any]


class HistogramPoint(TypedDict):
    """One cumulative point of a request-duration histogram (server or client), as OTLP and
    tracer's metrics batches (their ``cumulative`` field) both carry it. The store turns
    consecutive points of one series (same service, pid, labels and ``start_us``) into
    per-interval counts."""

    service: str
    host: str
    pid: int
    kind: str  # "server" or "client"
    method: str
    route: str  # the route template, "" for a request no route matched
    status_code: int  # 0 when none (a call that got no answer)
    start_us: int  # when the series started counting
    time_us: int  # when this point was read
    count: int
    sum_s: float
    bounds: list[float]  # bucket upper bounds in seconds (the last bucket, +Inf, has none)
    bucket_counts: list[int]  # len(bounds) + 1 cumulative-over-time counts per bucket


class MemoryPoint(TypedDict):
    """One reading of a process's memory (a memory ``stats`` event or a metrics batch)."""

    service: str
    host: str
    pid: int
    time_us: int
    rss_bytes: int | None
    heap_blocks: int | None  # allocated blocks (sys.getallocatedblocks), None if unknown


class LeakEvent(TypedDict):
    """A memory ``leak`` event of tracer's memory watch."""

    service: str
    host: str
    pid: int
    time_us: int
    measure: str  # "heap" or "rss"
    reason: str
    growth: float
    unit: str  # "blocks" or "bytes"


@dataclass
class Decoded:
    """What one request to a receiver carried, ready for :meth:`tracer.serve.store.Store.add`."""

    spans: list[SpanRecord] = field(default_factory=list)
    histograms: list[HistogramPoint] = field(default_factory=list)
    memory: list[MemoryPoint] = field(default_factory=list)
    leaks: list[LeakEvent] = field(default_factory=list)
    #: tracer profile batches' ``profile`` dicts (docs/profiler.md), with service, host and pid.
    profiles: list[dict[str, Any]] = field(default_factory=list)


class IngestError(ValueError):
    """A body a receiver cannot take: answered 400 with :attr:`reason`, nothing stored."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
