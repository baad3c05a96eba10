"""A metrics batch as an OTLP ``ExportMetricsServiceRequest``: binary protobuf, built with the
official ``opentelemetry-proto`` classes (the ``otlp`` extra), or OTLP's JSON mapping.

The batch's ``metrics.cumulative`` part carries the registry's state as Prometheus exposes it
(every family with its series, histogram buckets, sums, counts and start times), so this module
needs nothing but the dict. Every data point is CUMULATIVE, as Prometheus' own are:

* the request histograms get OpenTelemetry's names and attributes, the ones the Prometheus names
  were made from: ``http_server_request_duration_seconds`` is ``http.server.request.duration``
  (unit ``s``; ``http.request.method``, ``http.route``, ``http.response.status_code``,
  ``url.scheme``), ``http_client_request_duration_seconds`` is ``http.client.request.duration``
  (``server.address``, ``server.port``, ``error.type`` too), with the same bucket bounds;
  ``http_server_active_requests`` is ``http.server.active_requests``, an UpDownCounter (a
  non-monotonic sum). Status codes and ports are integers; an empty label is left out, and so
  are ``http_route="_OTHER"`` (a request no route matched: OpenTelemetry sends ``http.route``
  only when there is one) and a status code or port that is not a number (``_OTHER`` past the
  series cap).
* every other counter is a monotonic sum named as its family (``process_cpu_seconds``, which
  Prometheus exposes with ``_total``), every gauge a gauge, with their labels as attributes
  and a unit from the name's suffix (``_seconds`` ``s``, ``_bytes`` ``By``).

The resource is the one spans get (:mod:`tracer.reporters.otlp_encode`): ``service.name``,
``host.name``, ``process.pid``, ``telemetry.sdk.*`` and ``OTEL_RESOURCE_ATTRIBUTES``.
Nothing here imports tracer's other modules.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping
from typing import Any

from tracer.encoding import encode_json
from tracer.reporters import otlp_encode

__all__ = [
    "ATTRIBUTES",
    "CUMULATIVE",
    "RENAMES",
    "Metric",
    "prepare",
    "protobuf_available",
    "to_json",
    "to_protobuf",
]

#: OTLP's AggregationTemporality value for cumulative points.
CUMULATIVE = 2
#: Prometheus family -> (OpenTelemetry name, unit, kind); kind "histogram" or "updown".
RENAMES: dict[str, tuple[str, str, str]] = {
    "http_server_request_duration_seconds": ("http.server.request.duration", "s", "histogram"),
    "http_client_request_duration_seconds": ("http.client.request.duration", "s", "histogram"),
    "http_server_active_requests": ("http.server.active_requests", "{request}", "updown"),
}
#: Prometheus label -> OpenTelemetry attribute, for the families of RENAMES.
ATTRIBUTES = {
    "http_request_method": "http.request.method",
    "http_route": "http.route",
    "http_response_status_code": "http.response.status_code",
    "url_scheme": "url.scheme",
    "server_address": "server.address",
    "server_port": "server.port",
    "error_type": "error.type",
}
_INTEGERS = frozenset(("http.response.status_code", "server.port"))
#: The Prometheus value of a label tracer bounds (a route no route matched, a series past the cap).
OTHER = "_OTHER"
_UNITS = (("_seconds", "s"), ("_bytes", "By"))

#: One metric, mapped: ``(name, description, unit, kind, points)``; kind is ``"histogram"``,
#: ``"sum"`` (monotonic), ``"updown"`` (a non-monotonic sum) or ``"gauge"``; each point is
#: ``(attributes, start_ns, time_ns, value)`` where a histogram's value is
#: ``(count, sum, bucket_counts, bounds)``.
Metric = tuple[str, str, str, str, list[tuple[list[tuple[str, Any]], int, int, Any]]]


def protobuf_available() -> bool:
    """Whether the ``opentelemetry-proto`` metrics classes can be imported."""
    try:
        importlib.import_module("opentelemetry.proto.collector.metrics.v1.metrics_service_pb2")
    except ImportError:
        return False
    return True


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _attributes(labels: Any, renamed: bool) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    if not isinstance(labels, dict):
        return out
    for key, value in sorted(labels.items()):
        text = str(value)
        if renamed:
            if text == "":
                continue
            name = ATTRIBUTES.get(str(key), str(key))
            if name in _INTEGERS:
                # An attribute OpenTelemetry types as an integer is never sent as text.
                if text.isascii() and text.isdigit() and len(text) <= 10:
                    out.append((name, int(text)))
                continue
            if name == "http.route" and text == OTHER:
                continue
            out.append((name, text))
        else:
            out.append((str(key), text))
    return out


def _unit(family: str, given: Any) -> str:
    if isinstance(given, str) and given:
        return {"seconds": "s", "bytes": "By"}.get(given, given)
    for suffix, unit in _UNITS:
        if family.endswith(suffix) or family.endswith(suffix + "_total"):
            return unit
    return ""


def _ns(us: Any, default: int) -> int:
    if isinstance(us, int) and not isinstance(us, bool) and us > 0:
        return us * 1000
    return default


def prepare(batch: Mapping[str, Any]) -> list[Metric]:
    """The metrics of a batch's ``metrics.cumulative`` part; empty when it has none."""
    body = batch.get("metrics")
    cumulative = body.get("cumulative") if isinstance(body, dict) else None
    if not isinstance(cumulative, dict):
        return []
    time_ns = _ns(cumulative.get("time_us"), 0)
    start_ns = _ns(cumulative.get("start_us"), time_ns)
    out: list[Metric] = []
    families = cumulative.get("families")
    for family in families if isinstance(families, list) else ():
        if not isinstance(family, dict) or not isinstance(family.get("name"), str):
            continue
        prom = family["name"]
        kind = family.get("type")
        renamed = RENAMES.get(prom)
        name, unit = (
            (renamed[0], renamed[1]) if renamed else (prom, _unit(prom, family.get("unit")))
        )
        if kind == "histogram":
            metric_kind = "histogram"
        elif kind == "counter":
            metric_kind = "sum"
        elif renamed is not None and renamed[2] == "updown":
            metric_kind = "updown"
        else:
            metric_kind = "gauge"
        points = []
        series = family.get("series")
        for point in series if isinstance(series, list) else ():
            if not isinstance(point, dict):
                continue
            attributes = _attributes(point.get("labels"), renamed is not None)
            begin = _ns(point.get("start_us"), start_ns)
            if metric_kind == "histogram":
                bounds = [b for b in point.get("bounds") or () if _number(b) is not None]
                counts = [
                    int(c) for c in point.get("bucket_counts") or () if _number(c) is not None
                ]
                if len(counts) != len(bounds) + 1:
                    continue
                total = _number(point.get("sum")) or 0.0
                value: Any = (sum(counts), total, counts, [float(b) for b in bounds])
            else:
                value = _number(point.get("value"))
                if value is None:
                    continue
            points.append((attributes, begin, time_ns, value))
        if points:
            out.append((name, str(family.get("help") or ""), unit, metric_kind, points))
    return out


def _resource(batch: Mapping[str, Any], extra: Mapping[str, Any]) -> list[tuple[str, Any]]:
    return otlp_encode._resource(batch.get("service"), batch.get("host"), batch.get("pid"), extra)


# -- JSON ------------------------------------------------------------------------------------


def _attributes_json(items: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    return [{"key": key, "value": otlp_encode._any_json(value, 0)} for key, value in items]


def to_json(batch: Mapping[str, Any], extra_resource: Mapping[str, Any]) -> bytes | None:
    """The batch as an OTLP/JSON ``ExportMetricsServiceRequest``; None when it has no metric."""
    metrics = prepare(batch)
    if not metrics:
        return None
    out = []
    for name, description, unit, kind, points in metrics:
        data_points = []
        for attributes, start_ns, time_ns, value in points:
            point: dict[str, Any] = {
                "attributes": _attributes_json(attributes),
                "startTimeUnixNano": str(start_ns),
                "timeUnixNano": str(time_ns),
            }
            if kind == "histogram":
                count, total, counts, bounds = value
                point["count"] = str(count)
                point["sum"] = total
                point["bucketCounts"] = [str(c) for c in counts]
                point["explicitBounds"] = bounds
            else:
                point["asDouble"] = value
            data_points.append(point)
        metric: dict[str, Any] = {"name": name, "description": description, "unit": unit}
        if kind == "histogram":
            metric["histogram"] = {"dataPoints": data_points, "aggregationTemporality": CUMULATIVE}
        elif kind == "gauge":
            metric["gauge"] = {"dataPoints": data_points}
        else:
            metric["sum"] = {
                "dataPoints": data_points,
                "aggregationTemporality": CUMULATIVE,
                "isMonotonic": kind == "sum",
            }
        out.append(metric)
    scope = {"name": otlp_encode.SCOPE_NAME, "version": otlp_encode.sdk_version()}
    resource = {"attributes": _attributes_json(_resource(batch, extra_resource))}
    document = {
        "resourceMetrics": [
            {"resource": resource, "scopeMetrics": [{"scope": scope, "metrics": out}]}
        ]
    }
    return encode_json(document)


# -- protobuf --------------------------------------------------------------------------------


def to_protobuf(batch: Mapping[str, Any], extra_resource: Mapping[str, Any]) -> bytes | None:
    """The batch as a binary ``ExportMetricsServiceRequest``; None when it has no metric."""
    metrics = prepare(batch)
    if not metrics:
        return None
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )

    request = ExportMetricsServiceRequest()
    resource_metrics = request.resource_metrics.add()
    otlp_encode._fill(resource_metrics.resource.attributes, _resource(batch, extra_resource))
    scope_metrics = resource_metrics.scope_metrics.add()
    scope_metrics.scope.name = otlp_encode.SCOPE_NAME
    scope_metrics.scope.version = otlp_encode.sdk_version()
    for name, description, unit, kind, points in metrics:
        metric = scope_metrics.metrics.add(
            name=otlp_encode._text(name),
            description=otlp_encode._text(description),
            unit=otlp_encode._text(unit),
        )
        if kind == "histogram":
            metric.histogram.aggregation_temporality = CUMULATIVE  # type: ignore[assignment]
            for attributes, start_ns, time_ns, (count, total, counts, bounds) in points:
                point = metric.histogram.data_points.add(
                    start_time_unix_nano=start_ns,
                    time_unix_nano=time_ns,
                    count=count,
                    sum=total,
                    bucket_counts=counts,
                    explicit_bounds=bounds,
                )
                otlp_encode._fill(point.attributes, attributes)
            continue
        if kind == "gauge":
            container = metric.gauge.data_points
        else:
            metric.sum.aggregation_temporality = CUMULATIVE  # type: ignore[assignment]
            metric.sum.is_monotonic = kind == "sum"
            container = metric.sum.data_points
        for attributes, start_ns, time_ns, value in points:
            number = container.add(
                start_time_unix_nano=start_ns, time_unix_nano=time_ns, as_double=value
            )
            otlp_encode._fill(number.attributes, attributes)
    return request.SerializeToString()
