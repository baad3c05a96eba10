"""Metrics batches through the OTLP reporter: ``POST /v1/metrics`` with an
``ExportMetricsServiceRequest`` that a real receiver on 127.0.0.1 decodes with the official
classes (protobuf, and JSON through ``json_format`` refusing unknown fields): OpenTelemetry's
names and attributes, cumulative histograms with the Prometheus buckets, the delivery rules of
spans, the ``OTEL_EXPORTER_OTLP_METRICS_*`` variables; the Zipkin reporter acknowledges metrics
batches without sending them; and the OpenTelemetry SDK's own metrics exporter, sent to the same
receiver, gives the same shape."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

pytest.importorskip("opentelemetry.proto.collector.metrics.v1.metrics_service_pb2")

from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsPartialSuccess,
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, Metric
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

import tracer
from reporters import otlp, zipkin
from tests.conftest import refused_port
from tests.delivery.helpers import Outcomes
from tests.export.receiver import OtlpReceiver, ZipkinReceiver, attributes
from tests.support.servers import QuietHandler, ReceiverBase
from tracer import installer
from tracer.metrics import report

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
Answer = tuple[int, dict[str, str], bytes]


@dataclass
class Posted:
    path: str
    headers: dict[str, str]
    message: ExportMetricsServiceRequest


@dataclass
class MetricsReceiver(ReceiverBase):
    """``POST /v1/metrics`` (any path) on 127.0.0.1, decoded strictly; ``plan`` answers first."""

    plan: list[Answer] = field(default_factory=list)
    posted: list[Posted] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                _, body = self.read_body()
                content_type = self.headers.get("Content-Type", "")
                try:
                    if content_type == "application/json":
                        message = json_format.ParseDict(
                            json.loads(body), ExportMetricsServiceRequest()
                        )
                    else:
                        assert content_type == "application/x-protobuf", content_type
                        message = ExportMetricsServiceRequest.FromString(body)
                except Exception as exc:
                    with receiver.changed:
                        receiver.errors.append(exc)
                    answer: Answer = (400, {}, b"")
                else:
                    with receiver.changed:
                        if receiver.plan:
                            answer = receiver.plan.pop(0)
                        else:
                            empty = b"{}" if content_type == "application/json" else b""
                            answer = (200, {"Content-Type": content_type}, empty)
                        if answer[0] == 200:
                            receiver.posted.append(
                                Posted(self.path, dict(self.headers.items()), message)
                            )
                        receiver.changed.notify_all()
                status, headers, reply = answer
                self.reply(status, headers, reply)

        return Handler

    def wait(self, count: int, timeout: float = 15.0) -> list[Posted]:
        deadline = time.monotonic() + timeout
        with self.changed:
            while len(self.posted) < count and time.monotonic() < deadline:
                self.changed.wait(0.05)
            got = list(self.posted)
        assert len(got) >= count, f"expected {count} metrics requests, got {len(got)}"
        return got


@pytest.fixture
def metrics_receiver() -> Iterator[MetricsReceiver]:
    started = MetricsReceiver().start()
    yield started
    tracer.uninstall()
    started.stop()
    assert not started.errors, f"the receiver could not decode: {started.errors!r}"


def fill() -> tuple[CollectorRegistry, Any, Any, Any]:
    """A registry with the request metrics' names, labels and buckets, observed a known way."""
    registry = CollectorRegistry()
    server = Histogram(
        "http_server_request_duration_seconds",
        "Duration of HTTP server requests.",
        ["http_request_method", "http_route", "http_response_status_code", "url_scheme"],
        buckets=BUCKETS,
        registry=registry,
    )
    client = Histogram(
        "http_client_request_duration_seconds",
        "Duration of HTTP client requests.",
        [
            "http_request_method",
            "server_address",
            "server_port",
            "http_response_status_code",
            "error_type",
        ],
        buckets=BUCKETS,
        registry=registry,
    )
    active = Gauge("http_server_active_requests", "Active requests.", registry=registry)
    Counter("process_cpu_seconds", "CPU.", registry=registry).inc(1.5)
    Gauge("process_resident_memory_bytes", "RSS.", registry=registry).set(123456)
    return registry, server, client, active


def metrics_batch(registry: CollectorRegistry, base: report.Snapshot) -> dict[str, Any]:
    return {
        "service": "svc",
        "host": "web-1",
        "pid": 4242,
        "sent_at_us": 1,
        "metrics": report.build_body(report.snapshot(registry), base, base.time),
    }


def by_name(message: ExportMetricsServiceRequest) -> dict[str, Metric]:
    out: dict[str, Metric] = {}
    for rm in message.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                assert metric.name not in out, f"{metric.name} sent twice"
                out[metric.name] = metric
    return out


def send(reporter: Any, data: dict[str, Any]) -> Outcomes:
    outcomes = Outcomes()
    reporter.send(data, outcomes)
    return outcomes


def test_a_metrics_batch_is_an_export_metrics_service_request(
    metrics_receiver: MetricsReceiver, protocol: str
) -> None:
    registry, server, client, active = fill()
    base = report.snapshot(registry)
    for _ in range(3):
        server.labels("GET", "/users/{id}", "200", "http").observe(0.02)
    server.labels("GET", "/users/{id}", "500", "http").observe(0.3)
    client.labels("GET", "127.0.0.1", "8080", "", "ConnectionRefusedError").observe(0.001)
    active.set(2)
    reporter = otlp.create(metrics_receiver.endpoint, protocol=protocol)
    assert send(reporter, metrics_batch(registry, base)).only is None
    (posted,) = metrics_receiver.wait(1)
    reporter.close()
    assert posted.path == "/v1/metrics"
    rm = posted.message.resource_metrics[0]
    resource = attributes(rm.resource.attributes)
    assert resource["service.name"] == "svc" and resource["process.pid"] == 4242
    assert rm.scope_metrics[0].scope.name == "tracer"
    metrics = by_name(posted.message)

    duration = metrics["http.server.request.duration"]
    assert duration.unit == "s"
    assert duration.WhichOneof("data") == "histogram"
    assert duration.histogram.aggregation_temporality == CUMULATIVE
    points = {
        attributes(p.attributes)["http.response.status_code"]: p
        for p in duration.histogram.data_points
    }
    assert set(points) == {200, 500}
    ok = points[200]
    assert attributes(ok.attributes) == {
        "http.request.method": "GET",
        "http.route": "/users/{id}",
        "http.response.status_code": 200,
        "url.scheme": "http",
    }
    assert list(ok.explicit_bounds) == list(BUCKETS)
    assert ok.count == 3 and ok.sum == pytest.approx(0.06)
    # Per-bucket (not cumulative) counts, one more than the bounds: 0.02 s falls in (0.01, 0.025].
    assert list(ok.bucket_counts) == [0, 0, 3] + [0] * 12
    assert list(points[500].bucket_counts)[7] == 1  # (0.25, 0.5]
    assert 0 < ok.start_time_unix_nano <= ok.time_unix_nano

    outgoing = metrics["http.client.request.duration"]
    (call,) = outgoing.histogram.data_points
    assert attributes(call.attributes) == {
        "http.request.method": "GET",
        "server.address": "127.0.0.1",
        "server.port": 8080,
        "error.type": "ConnectionRefusedError",
    }

    serving = metrics["http.server.active_requests"]
    assert serving.WhichOneof("data") == "sum"
    assert serving.sum.is_monotonic is False
    assert serving.sum.aggregation_temporality == CUMULATIVE
    assert serving.sum.data_points[0].as_double == 2

    cpu = metrics["process_cpu_seconds"]
    assert cpu.unit == "s" and cpu.sum.is_monotonic is True
    assert cpu.sum.data_points[0].as_double == 1.5
    rss = metrics["process_resident_memory_bytes"]
    assert rss.WhichOneof("data") == "gauge" and rss.unit == "By"
    assert rss.gauge.data_points[0].as_double == 123456


def test_points_stay_cumulative_from_batch_to_batch(metrics_receiver: MetricsReceiver) -> None:
    registry, server, _, _ = fill()
    base = report.snapshot(registry)
    reporter = otlp.create(metrics_receiver.endpoint)
    server.labels("GET", "/", "200", "http").observe(0.02)
    first = metrics_batch(registry, base)
    middle = report.snapshot(registry)
    server.labels("GET", "/", "200", "http").observe(0.02)
    second = metrics_batch(registry, middle)
    # The interval's own count is 1 each time; OTLP's points count everything since the start.
    assert first["metrics"]["server"]["requests"] == second["metrics"]["server"]["requests"] == 1
    assert send(reporter, first).only is None
    assert send(reporter, second).only is None
    posted = metrics_receiver.wait(2)
    reporter.close()
    counts = [
        by_name(p.message)["http.server.request.duration"].histogram.data_points[0].count
        for p in posted
    ]
    starts = {
        by_name(p.message)["http.server.request.duration"]
        .histogram.data_points[0]
        .start_time_unix_nano
        for p in posted
    }
    assert counts == [1, 2]
    assert len(starts) == 1


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_retryable_answers(metrics_receiver: MetricsReceiver, status: int) -> None:
    registry, server, _, _ = fill()
    base = report.snapshot(registry)
    server.labels("GET", "/", "200", "http").observe(0.02)
    metrics_receiver.plan = [(status, {"Retry-After": "2"}, b"")]
    reporter = otlp.create(metrics_receiver.endpoint)
    error = send(reporter, metrics_batch(registry, base)).error()
    assert error.retryable is True and error.retry_after == 2.0
    assert send(reporter, metrics_batch(registry, base)).only is None
    metrics_receiver.wait(1)
    reporter.close()


def test_a_400_is_not_retried_and_a_refused_connection_is() -> None:
    registry, _, _, _ = fill()
    data = metrics_batch(registry, report.snapshot(registry))
    receiver = MetricsReceiver(plan=[(400, {}, b"bad metrics")]).start()
    try:
        reporter = otlp.create(receiver.endpoint, protocol="http/json")
        error = send(reporter, data).error()
        assert error.retryable is False and "HTTP 400" in str(error)
        reporter.close()
    finally:
        receiver.stop()
    with refused_port() as port:
        reporter = otlp.create(f"http://127.0.0.1:{port}")
        assert send(reporter, data).error().retryable is True
        reporter.close()


def test_partial_success_is_delivered_and_counted(
    metrics_receiver: MetricsReceiver, protocol: str
) -> None:
    registry, _, _, _ = fill()
    data = metrics_batch(registry, report.snapshot(registry))
    answer = ExportMetricsServiceResponse(
        partial_success=ExportMetricsPartialSuccess(rejected_data_points=3, error_message="too old")
    )
    if protocol == "http/json":
        reply, content_type = json_format.MessageToJson(answer).encode(), "application/json"
    else:
        reply, content_type = answer.SerializeToString(), "application/x-protobuf"
    metrics_receiver.plan = [(200, {"Content-Type": content_type}, reply)]
    reporter = otlp.create(metrics_receiver.endpoint, protocol=protocol)
    assert send(reporter, data).only is None
    assert reporter.rejected_data_points == 3
    # Spans' count is the pipeline's partial_rejected; metrics points are not spans.
    assert reporter.rejected_spans == 0
    reporter.close()


@pytest.mark.parametrize(
    ("variables", "path"),
    [
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "{base}"}, "/v1/metrics"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "{base}/otlp/"}, "/otlp/v1/metrics"),
        # The signal's own variable is used as it is, and wins over the generic one.
        (
            {
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "{base}/m",
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
            },
            "/m",
        ),
    ],
)
def test_metrics_endpoint_variables(
    metrics_receiver: MetricsReceiver, variables: dict[str, str], path: str
) -> None:
    env = {k: v.format(base=metrics_receiver.endpoint) for k, v in variables.items()}
    registry, _, _, _ = fill()
    reporter = otlp.create(env=env)
    assert send(reporter, metrics_batch(registry, report.snapshot(registry))).only is None
    (posted,) = metrics_receiver.wait(1)
    assert posted.path == path
    reporter.close()


def test_metrics_variables_win_over_generic_ones(metrics_receiver: MetricsReceiver) -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": metrics_receiver.endpoint,
        "OTEL_EXPORTER_OTLP_HEADERS": "x-team=spans",
        "OTEL_EXPORTER_OTLP_METRICS_HEADERS": "x-team=metrics",
        "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/json",
        "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION": "none",
        "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT": "2500",
    }
    reporter = otlp.create(env=env)
    assert reporter.protocol == "http/protobuf"
    assert reporter.metrics is not None and reporter.metrics.timeout == 2.5
    registry, _, _, _ = fill()
    assert send(reporter, metrics_batch(registry, report.snapshot(registry))).only is None
    (posted,) = metrics_receiver.wait(1)
    assert posted.headers["x-team"] == "metrics"
    assert posted.headers["Content-Type"] == "application/json"
    assert "Content-Encoding" not in posted.headers
    reporter.close()


def test_the_metrics_endpoint_option_and_a_traces_url() -> None:
    reporter = otlp.create("http://collector:4318/v1/traces")
    assert reporter.url == "http://collector:4318/v1/traces"
    assert reporter.metrics is not None
    assert reporter.metrics.url == "http://collector:4318/v1/metrics"
    chosen = otlp.create("http://collector:4318", metrics_endpoint="http://other:9090/api/otlp")
    assert chosen.metrics is not None and chosen.metrics.url == "http://other:9090/api/otlp"


def test_metrics_through_the_pipeline_balance_the_ledger(
    metrics_receiver: MetricsReceiver,
) -> None:
    registry, server, _, _ = fill()
    tracer.install(
        app_name="svc",
        reporter=otlp.create(metrics_receiver.endpoint),
        flush_interval=0.02,
        metrics=False,
        metrics_interval=0.2,
        ignore_paths=["/v1/metrics", "/v1/traces"],
    )
    runtime = installer.runtime
    assert runtime is not None
    report.start(runtime, registry)
    try:
        for n in range(5):
            server.labels("GET", "/", "200", "http").observe(0.01 * (n + 1))
        posted = metrics_receiver.wait(2)
    finally:
        report.stop()
    assert tracer.flush(10)
    last = by_name(metrics_receiver.posted[-1].message)["http.server.request.duration"]
    assert last.histogram.data_points[0].count == 5
    assert posted[0].path == "/v1/metrics"
    counts = tracer.stats()["reports"]["metrics"]
    assert counts["created"] == counts["delivered"] == len(metrics_receiver.posted)
    assert counts["created"] == (
        counts["delivered"] + counts["dropped"] + counts["spooled"] + counts["pending"]
    )


def test_real_requests_follow_the_attribute_conventions(
    metrics_receiver: MetricsReceiver, protocol: str
) -> None:
    """A request no route matched has no ``http.route`` (OpenTelemetry's rule: only "if it's
    available"), one that got an answer no ``error.type``, one that got none no status code;
    overflow series send no port or status code that is not a number."""
    from tests.metrics.helpers import AioService, get

    service = AioService()
    # The spans of these requests go to a receiver of their own.
    spans = OtlpReceiver().start()
    try:
        tracer.install(
            app_name="svc",
            reporter=otlp.create(
                spans.endpoint,
                protocol=protocol,
                metrics_endpoint=f"{metrics_receiver.endpoint}/v1/metrics",
            ),
            flush_interval=0.02,
            memory_watch=False,
            metrics_interval=0.2,
            # The receivers run in this process: their requests are not the ones looked at.
            ignore_paths=["/v1/metrics", "/v1/traces"],
        )
        import requests

        with requests.Session() as session:
            assert session.get(f"{service.url}/users/1").status_code == 200
            with refused_port() as port:
                with pytest.raises(requests.ConnectionError):
                    session.get(f"http://127.0.0.1:{port}/down")
        assert get(f"{service.url}/nowhere") == 404

        def points(name: str) -> list[dict[str, Any]]:
            for posted in reversed(metrics_receiver.posted):
                metric = by_name(posted.message).get(name)
                if metric is not None:
                    return [attributes(p.attributes) for p in metric.histogram.data_points]
            return []

        def arrived() -> bool:
            with metrics_receiver.changed:
                server = points("http.server.request.duration")
                client = points("http.client.request.duration")
            return len(server) >= 2 and len(client) >= 2

        deadline = time.monotonic() + 15
        while not arrived() and time.monotonic() < deadline:
            metrics_receiver.wait(len(metrics_receiver.posted) + 1, timeout=1)
        with metrics_receiver.changed:
            server = points("http.server.request.duration")
            client = points("http.client.request.duration")
    finally:
        tracer.uninstall()
        service.close()
        spans.stop()
    by_status = {p["http.response.status_code"]: p for p in server}
    assert by_status[200]["http.route"] == "/users/{id}"
    assert "http.route" not in by_status[404]
    assert by_status[404]["url.scheme"] == "http"
    answered = [p for p in client if "http.response.status_code" in p]
    assert answered and all("error.type" not in p for p in answered)
    (failed,) = [p for p in client if "http.response.status_code" not in p]
    assert failed["error.type"] == "network-error"
    assert isinstance(failed["server.port"], int)


def test_overflow_series_send_no_text_for_a_number() -> None:
    """Past the series cap the Prometheus labels are ``_OTHER``; the OTLP attributes that are
    integers (status code, port) are left out rather than sent as text."""
    from tracer.reporters import otlp_metrics

    batch = {
        "metrics": {
            "cumulative": {
                "start_us": 1,
                "time_us": 2,
                "families": [
                    {
                        "name": "http_client_request_duration_seconds",
                        "type": "histogram",
                        "series": [
                            {
                                "labels": {
                                    "http_request_method": "_OTHER",
                                    "server_address": "_OTHER",
                                    "server_port": "_OTHER",
                                    "http_response_status_code": "_OTHER",
                                    "error_type": "_OTHER",
                                },
                                "bounds": [0.1],
                                "bucket_counts": [1, 0],
                                "sum": 0.05,
                            }
                        ],
                    }
                ],
            }
        }
    }
    ((_, _, _, _, ((attrs, _, _, _),)),) = otlp_metrics.prepare(batch)
    assert dict(attrs) == {
        "http.request.method": "_OTHER",
        "server.address": "_OTHER",
        "error.type": "_OTHER",
    }


def test_zipkin_acknowledges_metrics_batches_without_sending_them() -> None:
    receiver = ZipkinReceiver().start()
    try:
        registry, server, _, _ = fill()
        base = report.snapshot(registry)
        server.labels("GET", "/", "200", "http").observe(0.02)
        reporter = zipkin.create(receiver.url)
        assert send(reporter, metrics_batch(registry, base)).only is None
        # A span batch still goes out, so the receiver is listening.
        span = {
            "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
            "span_id": "00f067aa0ba902b7",
            "kind": "internal",
            "name": "job",
            "start_us": 1_714_564_800_000_000,
            "duration_us": 5,
        }
        assert send(reporter, {"service": "svc", "spans": [span]}).only is None
        receiver.wait_spans(1)
        assert len(receiver.requests) == 1
        reporter.close()
    finally:
        receiver.stop()


def test_the_sdk_metrics_exporter_sends_the_same_shape(metrics_receiver: MetricsReceiver) -> None:
    """The OpenTelemetry SDK's own OTLP/HTTP metrics exporter, recording the same histogram
    with the same attributes, is decoded by the same receiver: same name, unit, temporality,
    attributes and bucket layout as ours."""
    exporter_module = pytest.importorskip("opentelemetry.exporter.otlp.proto.http.metric_exporter")
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View

    exporter = exporter_module.OTLPMetricExporter(
        endpoint=metrics_receiver.endpoint + "/v1/metrics"
    )
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=60_000)
    provider = MeterProvider(
        metric_readers=[reader],
        views=[
            View(
                instrument_name="http.server.request.duration",
                aggregation=ExplicitBucketHistogramAggregation(list(BUCKETS)),
            )
        ],
    )
    histogram = provider.get_meter("peer").create_histogram("http.server.request.duration", "s")
    labels = {
        "http.request.method": "GET",
        "http.route": "/users/{id}",
        "http.response.status_code": 200,
        "url.scheme": "http",
    }
    for _ in range(3):
        histogram.record(0.02, labels)
    provider.force_flush()
    provider.shutdown()
    theirs = by_name(metrics_receiver.wait(1)[0].message)["http.server.request.duration"]

    registry, server, _, _ = fill()
    base = report.snapshot(registry)
    for _ in range(3):
        server.labels("GET", "/users/{id}", "200", "http").observe(0.02)
    reporter = otlp.create(metrics_receiver.endpoint)
    assert send(reporter, metrics_batch(registry, base)).only is None
    ours = by_name(metrics_receiver.wait(2)[1].message)["http.server.request.duration"]
    reporter.close()

    assert (ours.name, ours.unit) == (theirs.name, theirs.unit)
    assert ours.WhichOneof("data") == theirs.WhichOneof("data") == "histogram"
    assert ours.histogram.aggregation_temporality == theirs.histogram.aggregation_temporality
    (mine,) = ours.histogram.data_points
    (peer,) = theirs.histogram.data_points
    assert attributes(mine.attributes) == attributes(peer.attributes)
    assert list(mine.explicit_bounds) == list(peer.explicit_bounds)
    assert list(mine.bucket_counts) == list(peer.bucket_counts)
    assert (mine.count, mine.sum) == (peer.count, pytest.approx(peer.sum))
