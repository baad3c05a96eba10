"""tracer's own health: the ledger of ``tracer.stats()`` as metrics, read at scrape time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from tracer import safety

# Reasons a span is dropped that always appear (as 0 until they happen), so that rate() over
# them works from the first scrape; other reasons appear when first counted.
DROP_REASONS = ("queue_full", "serialise_error", "rejected", "reporter_error", "corrupt")


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def families(runtime: Any) -> Iterator[Metric]:
    """The health metrics of ``runtime`` (a :class:`tracer.runtime.Runtime`)."""
    stats = runtime.stats()
    yield _counter(
        "tracer_spans_created",
        "Spans that entered the delivery pipeline.",
        stats["created"],
    )
    yield _counter(
        "tracer_spans_delivered", "Spans the reporter confirmed delivered.", stats["delivered"]
    )
    dropped = CounterMetricFamily(
        "tracer_spans_dropped", "Spans lost, by reason.", labels=["reason"]
    )
    by_reason = dict.fromkeys(DROP_REASONS, 0) | dict(stats["dropped_by_reason"])
    for reason, count in sorted(by_reason.items()):
        dropped.add_metric([str(reason)], count)
    yield dropped
    yield _gauge(
        "tracer_spans_spooled", "Spans of this process in the disk spool now.", stats["spooled"]
    )
    yield _gauge("tracer_spans_pending", "Spans queued or being sent now.", stats["pending"])
    yield _counter("tracer_spans_replayed", "Spooled spans delivered later.", stats["replayed"])
    yield _counter(
        "tracer_spans_replay_dropped",
        "Spooled spans lost before they could be delivered.",
        stats["replay_dropped"],
    )
    yield _counter(
        "tracer_spans_partial_rejected",
        "Spans the receiver refused within delivered batches.",
        stats["partial_rejected"],
    )
    yield _counter(
        "tracer_spans_unsampled_dropped",
        "Spans of traces not sampled, discarded by design.",
        stats["unsampled_dropped"],
    )
    yield _gauge(
        "tracer_sample_probability",
        "The probability that a new trace is sampled.",
        stats["sample_probability"],
    )
    sender = getattr(getattr(runtime, "pipeline", None), "sender", None)
    yield _gauge(
        "tracer_reporter_consecutive_failures",
        "Failed sends since the reporter last delivered a batch.",
        getattr(sender, "failures", 0),
    )
    invalid = CounterMetricFamily(
        "tracer_inbound_invalid",
        "Inbound trace header values refused and replaced.",
        labels=["header"],
    )
    for header, count in sorted(stats["inbound_invalid_by_header"].items()):
        invalid.add_metric([str(header)], count)
    yield invalid
    yield from _reports(stats.get("reports") or {})
    errors = CounterMetricFamily(
        "tracer_internal_errors",
        "Errors inside tracer, caught and logged once per place.",
        labels=["where"],
    )
    for where, count in sorted(dict(safety._counts).items()):
        errors.add_metric([where], count)
    yield errors


def _reports(reports: dict[str, dict[str, Any]]) -> Iterator[Metric]:
    made: dict[str, CounterMetricFamily | GaugeMetricFamily] = {}
    docs = {
        "created": "Report batches (metrics, memory) made, by kind.",
        "delivered": "Report batches delivered, by kind.",
        "replayed": "Spooled report batches delivered later, by kind.",
    }
    for name, doc in docs.items():
        made[name] = CounterMetricFamily(f"tracer_reports_{name}", doc, labels=["kind"])
    made["spooled"] = GaugeMetricFamily(
        "tracer_reports_spooled", "Report batches in the disk spool now, by kind.", labels=["kind"]
    )
    made["pending"] = GaugeMetricFamily(
        "tracer_reports_pending", "Report batches queued or being sent, by kind.", labels=["kind"]
    )
    dropped = CounterMetricFamily(
        "tracer_reports_dropped",
        "Report batches lost, by kind and reason.",
        labels=["kind", "reason"],
    )
    for kind, counts in sorted(reports.items()):
        for name, family in made.items():
            family.add_metric([kind], counts.get(name, 0))
        for reason, count in sorted((counts.get("dropped_by_reason") or {}).items()):
            dropped.add_metric([kind, str(reason)], count)
    yield from made.values()
    yield dropped
