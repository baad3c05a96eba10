"""The receivers' decoders (tracer.serve.ingest): tracer's own spans through tracer's OTLP and
Zipkin encoders come back as the records they were; an OpenTelemetry SDK's spans and metrics,
encoded by the SDK's own OTLP encoder, become records and histogram points; anything malformed
is an IngestError, whatever the bytes."""

from __future__ import annotations

import base64
import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import requests
from flask import Flask
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common._internal.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode

import reporters
import tracer
from tests.support.servers import refused_port
from tests.support.waiting import eventually
from tests.wsgi.servers import Wsgiref
from tracer import context
from tracer.encoding import encode_json
from tracer.reporters import otlp_encode, otlp_metrics, zipkin_encode
from tracer.serve import ingest
from tracer.serve.model import Decoded, IngestError

PB = "application/x-protobuf"
JSON = "application/json; charset=utf-8"
DECODERS = {
    "otlp_traces": ingest.decode_otlp_traces,
    "otlp_metrics": ingest.decode_otlp_metrics,
    "zipkin": ingest.decode_zipkin,
    "tracer": ingest.decode_tracer,
}


# -- tracer's own spans ------------------------------------------------------------------------


def _app(base: dict[str, str], refused: int) -> Flask:
    app = Flask("ingest")

    @app.route("/users/<int:uid>")
    def user(uid: int) -> str:
        conn = sqlite3.connect(":memory:")
        conn.execute("CREATE TABLE users (id INTEGER)")
        conn.execute("SELECT id FROM users WHERE id = 3").fetchall()
        with pytest.raises(sqlite3.OperationalError):
            conn.execute("SELECT * FROM missing")
        tracer.report({"user": uid, "nested": {"list": [1, 2.5, True, None], "text": "x"}})
        span = tracer.current_span()
        assert span is not None
        span.set_tag("team", "blue")
        span.set_tag("weight", 0.25)
        with tracer.span("compute"):
            pass
        requests.get(base["url"] + "/inner?x=1", timeout=10)
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{refused}/down", timeout=10)
        return "ok"

    @app.route("/inner")
    def inner() -> str:
        return "inner"

    @app.route("/boom")
    def boom() -> str:
        raise ValueError("view failed")

    return app


@pytest.fixture(scope="module")
def tracer_batch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A span batch of real tracer records: server spans (a route, a 500 with its exception),
    client calls (one answered, one refused), database calls (one failed), an internal span, an
    annotation and tags."""
    memory = reporters.create("memory")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRACE_SPOOL_DIR", str(tmp_path_factory.mktemp("spool")))
        tracer.install(
            app_name="ingest-service",
            reporter=memory,
            flush_interval=0.02,
            sample_rate=1,
            memory_watch=False,
            metrics_interval=None,
        )
        base: dict[str, str] = {}
        try:
            with refused_port() as refused:
                server = Wsgiref(_app(base, refused))
                base["url"] = server.url
                try:
                    with context.suppressed():
                        assert requests.get(server.url + "/users/7", timeout=10).ok
                        assert requests.get(server.url + "/boom", timeout=10).status_code == 500
                    eventually(lambda: len(memory.spans) >= 9, what="the requests' spans")
                    tracer.flush()
                finally:
                    server.close()
        finally:
            tracer.uninstall()
    spans = [dict(span) for span in memory.spans]
    yield {
        "service": "ingest-service",
        "host": spans[0]["host"],
        "pid": spans[0]["pid"],
        "sent_at_us": spans[0]["start_us"],
        "spans": spans,
    }


def by_id(decoded: Decoded) -> dict[str, dict[str, Any]]:
    return {span["span_id"]: span for span in decoded.spans}


def differences(
    original: dict[str, Any], got: dict[str, Any], skip: Sequence[str] = ()
) -> list[str]:
    return [
        f"{original['name']}: {key}: {value!r} became {got.get(key)!r}"
        for key, value in original.items()
        if key not in skip and got.get(key) != value
    ]


def test_the_batch_covers_what_the_mapping_must_bring_back(tracer_batch: dict[str, Any]) -> None:
    spans = tracer_batch["spans"]
    kinds = {(s["kind"], bool(s["http"]), "db" in s, s["error"] is not None) for s in spans}
    assert ("server", True, False, True) in kinds  # the 500 with its exception
    assert ("client", True, False, False) in kinds  # an answered call
    assert ("client", True, False, True) in kinds  # the refused call
    assert ("client", False, True, True) in kinds  # the failed statement
    assert ("client", False, True, False) in kinds
    assert ("internal", False, False, False) in kinds
    assert any(s["annotations"] for s in spans) and any(s["tags"] for s in spans)
    refused = [s for s in spans if s["error"] and s["error"]["type"] == "network-error"]
    assert len(refused) == 1


@pytest.mark.parametrize("media", [PB, JSON])
def test_tracer_spans_through_tracer_otlp_come_back_whole(
    tracer_batch: dict[str, Any], media: str
) -> None:
    groups, skipped = otlp_encode.prepare(tracer_batch, {})
    assert skipped == 0
    body = otlp_encode.to_protobuf(groups) if media == PB else otlp_encode.to_json(groups)
    got = by_id(ingest.decode_otlp_traces(body, media))
    assert len(got) == len(tracer_batch["spans"])
    problems = []
    for span in tracer_batch["spans"]:
        decoded = got[span["span_id"]]
        assert decoded["source"] == "otlp" and decoded["attributes"] == {}
        # must_collect is not in the OTLP encoding.
        problems += differences(span, decoded, skip=("must_collect",))
    assert problems == []


def test_tracer_spans_through_tracer_zipkin_come_back_but_what_zipkin_lacks(
    tracer_batch: dict[str, Any],
) -> None:
    body = zipkin_encode.encode(tracer_batch)
    assert body is not None
    got = by_id(ingest.decode_zipkin(body, "application/json"))
    assert len(got) == len(tracer_batch["spans"])
    lacking = ("host", "pid", "must_collect", "tags", "http")
    problems = []
    for span in tracer_batch["spans"]:
        decoded = got[span["span_id"]]
        assert decoded["source"] == "zipkin" and (decoded["host"], decoded["pid"]) == ("", 0)
        problems += differences(span, decoded, skip=lacking)
        # Every tag is a string in Zipkin.
        assert decoded["tags"] == {key: zipkin_encode._string(v) for key, v in span["tags"].items()}
        if span["http"] is not None:
            # A server's URL is not among Zipkin's tags; a client's is.
            want = dict(span["http"], url=span["http"]["url"] if span["kind"] == "client" else None)
            assert decoded["http"] == want
        else:
            assert decoded["http"] is None
    assert problems == []


def test_tracer_batches_keep_their_records(tracer_batch: dict[str, Any]) -> None:
    other = dict(tracer_batch, spans=tracer_batch["spans"][:2])
    decoded = ingest.decode_tracer(encode_json([tracer_batch, other]), "application/json")
    assert len(decoded.spans) == len(tracer_batch["spans"]) + 2
    for span, got in zip(tracer_batch["spans"], decoded.spans, strict=False):
        assert got == dict(span, source="tracer", attributes={})


# -- an OpenTelemetry SDK's spans --------------------------------------------------------------


class Collected(SpanExporter):
    """Keeps the finished spans (fed by a SimpleSpanProcessor, so as each one ends)."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


@pytest.fixture(scope="module")
def sdk_spans() -> list[ReadableSpan]:
    exporter = Collected()
    resource = Resource.create(
        {"service.name": "otel-shop", "host.name": "box", "process.pid": 777, "team": "x"}
    )
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    sdk = provider.get_tracer("shop.instrumentation", "1.0")
    with sdk.start_as_current_span(
        "GET /orders/{id}",
        kind=SpanKind.SERVER,
        attributes={
            "http.request.method": "GET",
            "url.path": "/orders/12",
            "url.scheme": "http",
            "http.route": "/orders/{id}",
            "http.response.status_code": 500,
            "server.address": "shop.local",
            "user_agent.original": "curl/8",
        },
    ) as server:
        server.add_event("cache.miss", {"key": "order:12", "size": 3})
        with sdk.start_as_current_span(
            "GET",
            kind=SpanKind.CLIENT,
            attributes={
                "http.request.method": "GET",
                "url.full": "http://stock:8080/items/12?fresh=1",
                "http.response.status_code": 200,
                "server.address": "stock",
                "server.port": 8080,
            },
        ):
            pass
        with sdk.start_as_current_span(
            "SELECT orders",
            kind=SpanKind.CLIENT,
            attributes={
                "db.system.name": "postgresql",
                "db.namespace": "shop",
                "db.operation.name": "SELECT",
                "db.query.text": "SELECT * FROM orders WHERE id = $1",
                "server.address": "db",
                "server.port": 5432,
            },
        ):
            pass
        with sdk.start_as_current_span("publish", kind=SpanKind.PRODUCER) as producer:
            producer.set_attribute("messaging.system", "kafka")
            producer.set_attribute("tags", ["a", "b"])
        try:
            raise KeyError("order 12")
        except KeyError as exc:
            server.record_exception(exc)
            server.set_status(Status(StatusCode.ERROR, "order 12 missing"))
    provider.shutdown()
    assert len(exporter.spans) == 4
    return exporter.spans


def otlp_json(message: Any) -> bytes:
    """``message`` in OTLP/JSON: protobuf's JSON mapping with the ids in hex, as OTLP wants."""
    document = json.loads(json_format.MessageToJson(message))

    def fix(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("traceId", "spanId", "parentSpanId") and isinstance(value, str):
                    node[key] = base64.b64decode(value).hex()
                else:
                    fix(value)
        elif isinstance(node, list):
            for item in node:
                fix(item)

    fix(document)
    return json.dumps(document).encode()


@pytest.fixture(scope="module", params=["protobuf", "json"])
def sdk_records(request: pytest.FixtureRequest, sdk_spans: list[ReadableSpan]) -> dict[str, Any]:
    message = encode_spans(sdk_spans)
    if request.param == "protobuf":
        decoded = ingest.decode_otlp_traces(message.SerializeToString(), PB)
    else:
        decoded = ingest.decode_otlp_traces(otlp_json(message), "application/json")
    return {span["name"]: span for span in decoded.spans}


def test_sdk_spans_keep_ids_times_and_their_process(
    sdk_records: dict[str, Any], sdk_spans: list[ReadableSpan]
) -> None:
    for span in sdk_spans:
        got = sdk_records[span.name]
        context_ = span.get_span_context()
        assert got["trace_id"] == f"{context_.trace_id:032x}"
        assert got["span_id"] == f"{context_.span_id:016x}"
        want_parent = None if span.parent is None else f"{span.parent.span_id:016x}"
        assert got["parent_id"] == want_parent
        assert span.start_time is not None and span.end_time is not None
        assert got["start_us"] == span.start_time // 1000
        assert got["duration_us"] == span.end_time // 1000 - span.start_time // 1000
        assert (got["service"], got["host"], got["pid"]) == ("otel-shop", "box", 777)
        assert got["source"] == "otlp" and got["events"] == [] and got["request_id"] is None
        assert got["sampled"] is True and got["must_collect"] is False and got["tags"] == {}
        # Resource attributes stay out of the span's own.
        assert "team" not in got["attributes"] and "telemetry.sdk.name" not in got["attributes"]


def test_sdk_server_span_http_error_and_events(sdk_records: dict[str, Any]) -> None:
    server = sdk_records["GET /orders/{id}"]
    assert server["kind"] == "server"
    assert server["http"] == {
        "method": "GET",
        "url": None,
        "path": "/orders/12",
        "status_code": 500,
        "route": "/orders/{id}",
    }
    error = server["error"]
    assert error["type"] == "KeyError" and error["message"] == "'order 12'"
    assert "Traceback" in error["stack"] and 'raise KeyError("order 12")' in error["stack"]
    # The exception event is the error; the other event is an annotation.
    (annotation,) = server["annotations"]
    assert annotation["data"] == {
        "name": "cache.miss",
        "attributes": {"key": "order:12", "size": 3},
    }
    assert server["start_us"] <= annotation["time_us"] <= server["start_us"] + server["duration_us"]
    assert server["attributes"] == {
        "url.scheme": "http",
        "server.address": "shop.local",
        "user_agent.original": "curl/8",
    }
    assert "db" not in server


def test_sdk_client_and_database_spans(sdk_records: dict[str, Any]) -> None:
    client = sdk_records["GET"]
    assert client["kind"] == "client" and client["error"] is None
    assert client["http"] == {
        "method": "GET",
        "url": "http://stock:8080/items/12?fresh=1",
        "path": "/items/12",
        "status_code": 200,
        "route": None,
    }
    assert client["attributes"] == {"server.address": "stock", "server.port": "8080"}
    db = sdk_records["SELECT orders"]
    assert db["http"] is None and db["attributes"] == {}
    assert db["db"] == {
        "db.system.name": "postgresql",
        "db.namespace": "shop",
        "db.operation.name": "SELECT",
        "db.query.text": "SELECT * FROM orders WHERE id = $1",
        "server.address": "db",
        "server.port": 5432,
    }


def test_sdk_producer_span_is_internal_with_its_otel_kind(sdk_records: dict[str, Any]) -> None:
    producer = sdk_records["publish"]
    assert producer["kind"] == "internal" and producer["http"] is None
    assert producer["attributes"] == {
        "messaging.system": "kafka",
        "tags": '["a","b"]',
        "otel.kind": "producer",
    }


def test_older_http_and_database_attribute_names() -> None:
    body = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "old"}}]
                },
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "0af7651916cd43dd8448eb211c80319c",
                                "spanId": "b7ad6b7169203331",
                                "name": "legacy",
                                "kind": "SPAN_KIND_SERVER",
                                "startTimeUnixNano": 1_700_000_000_000_000_000,
                                "endTimeUnixNano": "1700000000002000000",
                                "attributes": [
                                    {"key": "http.method", "value": {"stringValue": "POST"}},
                                    {"key": "http.target", "value": {"stringValue": "/a?b=1"}},
                                    {"key": "http.status_code", "value": {"intValue": "201"}},
                                    {"key": "db.system", "value": {"stringValue": "mysql"}},
                                    {"key": "db.statement", "value": {"stringValue": "SELECT 1"}},
                                    {"key": "ok", "value": {"boolValue": True}},
                                    {"key": "ratio", "value": {"doubleValue": 0.5}},
                                    {"key": "raw", "value": {"bytesValue": "AAE="}},
                                    {
                                        "key": "kv",
                                        "value": {
                                            "kvlistValue": {
                                                "values": [{"key": "a", "value": {"intValue": 1}}]
                                            }
                                        },
                                    },
                                ],
                                "status": {"code": "STATUS_CODE_ERROR", "message": "bad"},
                            }
                        ]
                    }
                ],
            }
        ]
    }
    (span,) = ingest.decode_otlp_traces(json.dumps(body).encode(), "application/json").spans
    assert span["kind"] == "server" and span["duration_us"] == 2000
    assert span["http"] == {
        "method": "POST",
        "url": None,
        "path": "/a",
        "status_code": 201,
        "route": None,
    }
    assert span["db"] == {"db.system.name": "mysql", "db.query.text": "SELECT 1"}
    assert span["error"] == {"type": "error", "message": "bad", "stack": None}
    assert span["attributes"] == {"ok": "true", "ratio": "0.5", "raw": "AAE=", "kv": '{"a":1}'}
    assert (span["service"], span["host"], span["pid"]) == ("old", "", 0)


# -- metrics -----------------------------------------------------------------------------------


def sdk_metrics(temporality: AggregationTemporality) -> Any:
    reader = InMemoryMetricReader(preferred_temporality={Histogram: temporality})
    resource = Resource.create({"service.name": "otel-shop", "host.name": "box", "process.pid": 9})
    provider = MeterProvider(resource=resource, metric_readers=[reader])
    histogram = provider.get_meter("shop").create_histogram(
        "http.server.request.duration", unit="s"
    )
    labels = {"http.request.method": "GET", "http.route": "/orders/{id}"}
    for seconds in (0.003, 0.02, 0.02, 0.4):
        histogram.record(seconds, {**labels, "http.response.status_code": 200})
    histogram.record(1.5, {**labels, "http.response.status_code": 503})
    first = reader.get_metrics_data()
    histogram.record(0.02, {**labels, "http.response.status_code": 200})
    second = reader.get_metrics_data()
    provider.shutdown()
    return first, second


@pytest.mark.parametrize("media", [PB, "application/json"])
def test_sdk_request_histograms_become_points(media: str) -> None:
    first, second = sdk_metrics(AggregationTemporality.CUMULATIVE)

    def decode(data: Any) -> list[Any]:
        message = encode_metrics(data)
        body = message.SerializeToString() if media == PB else otlp_json(message)
        return ingest.decode_otlp_metrics(body, media).histograms

    points = {p["status_code"]: p for p in decode(first)}
    ok, failed = points[200], points[503]
    assert (ok["service"], ok["host"], ok["pid"], ok["kind"]) == ("otel-shop", "box", 9, "server")
    assert (ok["method"], ok["route"]) == ("GET", "/orders/{id}")
    assert ok["count"] == 4 and ok["sum_s"] == pytest.approx(0.443)
    assert len(ok["bucket_counts"]) == len(ok["bounds"]) + 1 and sum(ok["bucket_counts"]) == 4
    assert ok["bounds"][:3] == [0.0, 5.0, 10.0]  # the SDK's default bounds, taken as given
    assert failed["count"] == 1 and failed["start_us"] <= failed["time_us"] == ok["time_us"]
    later = {p["status_code"]: p for p in decode(second)}[200]
    # Cumulative: the same series (same start), counting on.
    assert later["start_us"] == ok["start_us"] and later["count"] == 5


def test_delta_points_each_count_their_own_interval() -> None:
    first, second = sdk_metrics(AggregationTemporality.DELTA)
    one = {
        p["status_code"]: p
        for p in ingest.decode_otlp_metrics(
            encode_metrics(first).SerializeToString(), PB
        ).histograms
    }[200]
    two = {
        p["status_code"]: p
        for p in ingest.decode_otlp_metrics(
            encode_metrics(second).SerializeToString(), PB
        ).histograms
    }[200]
    assert one["count"] == 4 and two["count"] == 1
    # The second interval starts where the first ended: a series of its own to the store.
    assert two["start_us"] == one["time_us"] and two["start_us"] > one["start_us"]


def metrics_batch() -> dict[str, Any]:
    """A metrics batch as tracer's metrics report makes it (docs/metrics-reports.md)."""
    return {
        "service": "checkout",
        "host": "web-1",
        "pid": 4242,
        "sent_at_us": 1_790_000_060_000_000,
        "metrics": {
            "schema": 1,
            "interval": {"start_us": 1_790_000_000_000_000, "end_us": 1_790_000_060_000_000},
            "memory": {"rss_bytes": 88_000_000},
            "cumulative": {
                "start_us": 1_789_999_000_000_000,
                "time_us": 1_790_000_060_000_000,
                "families": [
                    {
                        "name": "http_server_request_duration_seconds",
                        "type": "histogram",
                        "help": "Duration of HTTP server requests.",
                        "unit": "seconds",
                        "series": [
                            {
                                "labels": {
                                    "http_request_method": "GET",
                                    "http_route": "/users/{id}",
                                    "http_response_status_code": "200",
                                    "url_scheme": "http",
                                },
                                "bounds": [0.005, 0.01, 0.025],
                                "bucket_counts": [3, 5, 1, 1],
                                "count": 10,
                                "sum": 0.25,
                                "start_us": 1_789_999_500_000_000,
                            },
                            {
                                "labels": {
                                    "http_request_method": "GET",
                                    "http_route": "_OTHER",
                                    "http_response_status_code": "404",
                                    "url_scheme": "http",
                                },
                                "bounds": [0.005, 0.01, 0.025],
                                "bucket_counts": [1, 0, 0, 0],
                                "count": 1,
                                "sum": 0.001,
                            },
                        ],
                    },
                    {
                        "name": "http_client_request_duration_seconds",
                        "type": "histogram",
                        "series": [
                            {
                                "labels": {
                                    "http_request_method": "POST",
                                    "server_address": "pay",
                                    "server_port": "443",
                                },
                                "bounds": [0.1],
                                "bucket_counts": [0, 2],
                                "count": 2,
                                "sum": 0.5,
                            }
                        ],
                    },
                    {
                        "name": "process_resident_memory_bytes",
                        "type": "gauge",
                        "series": [{"labels": {}, "value": 88_000_000}],
                    },
                ],
            },
        },
    }


def test_tracer_metrics_the_same_through_its_batches_and_its_otlp_encoder() -> None:
    batch = metrics_batch()
    own = ingest.decode_tracer(encode_json(batch), "application/json")
    body = otlp_metrics.to_protobuf(batch, {})
    assert body is not None
    otlp = ingest.decode_otlp_metrics(body, PB)
    json_body = otlp_metrics.to_json(batch, {})
    assert json_body is not None
    assert ingest.decode_otlp_metrics(json_body, "application/json") == otlp
    assert len(own.histograms) == 3
    key = lambda p: (p["kind"], p["status_code"])  # noqa: E731
    pairs = zip(sorted(own.histograms, key=key), sorted(otlp.histograms, key=key), strict=True)
    for mine, theirs in pairs:
        assert mine == theirs
    server = {p["status_code"]: p for p in own.histograms if p["kind"] == "server"}
    assert server[200] == {
        "service": "checkout",
        "host": "web-1",
        "pid": 4242,
        "kind": "server",
        "method": "GET",
        "route": "/users/{id}",
        "status_code": 200,
        "start_us": 1_789_999_500_000_000,
        "time_us": 1_790_000_060_000_000,
        "count": 10,
        "sum_s": 0.25,
        "bounds": [0.005, 0.01, 0.025],
        "bucket_counts": [3, 5, 1, 1],
    }
    assert server[404]["route"] == "" and server[404]["start_us"] == 1_789_999_000_000_000
    client = next(p for p in own.histograms if p["kind"] == "client")
    assert (client["method"], client["status_code"], client["count"]) == ("POST", 0, 2)
    assert own.memory == [
        {
            "service": "checkout",
            "host": "web-1",
            "pid": 4242,
            "time_us": 1_790_000_060_000_000,
            "rss_bytes": 88_000_000,
            "heap_blocks": None,
        }
    ]
    assert [m["rss_bytes"] for m in otlp.memory] == [88_000_000]


def test_older_duration_histogram_in_milliseconds() -> None:
    point = {
        "attributes": [
            {"key": "http.method", "value": {"stringValue": "GET"}},
            {"key": "http.status_code", "value": {"intValue": "200"}},
        ],
        "startTimeUnixNano": "1000000000",
        "timeUnixNano": "61000000000",
        "count": "3",
        "sum": 30.0,
        "bucketCounts": ["1", "2", "0"],
        "explicitBounds": [5, 25],
    }
    body = {
        "resourceMetrics": [
            {
                "scopeMetrics": [
                    {
                        "metrics": [
                            {
                                "name": "http.server.duration",
                                "unit": "ms",
                                "histogram": {
                                    "aggregationTemporality": "AGGREGATION_TEMPORALITY_CUMULATIVE",
                                    "dataPoints": [point],
                                },
                            },
                            {"name": "queue.depth", "gauge": {"dataPoints": [{"asInt": "4"}]}},
                        ]
                    }
                ]
            }
        ]
    }
    (got,) = ingest.decode_otlp_metrics(json.dumps(body).encode(), "application/json").histograms
    assert got["bounds"] == [0.005, 0.025] and got["sum_s"] == pytest.approx(0.03)
    assert (got["start_us"], got["time_us"], got["count"]) == (1_000_000, 61_000_000, 3)
    assert (got["service"], got["route"], got["status_code"]) == ("unknown_service", "", 200)


def test_memory_and_profile_batches() -> None:
    origin = {"service": "checkout", "host": "web-1", "pid": 4242, "sent_at_us": 1}
    stats = {
        "event": "stats",
        "time": "2026-12-07T12:00:00.250Z",
        "trigger": "timer",
        "rss_bytes": 50_000_000,
        "allocated_blocks": 120_000,
        "num_full_gc": 3,
    }
    leak = {
        "event": "leak",
        "measure": "heap",
        "reason": "heap growth over 5 consecutive full GCs",
        "start": "2026-12-07T11:55:00.000Z",
        "end": "2026-12-07T12:00:00.000Z",
        "growth": 41300,
        "unit": "blocks",
        "observations": 5,
    }
    profile = {
        "format": "tracer-profile",
        "version": 1,
        "reason": "manual",
        "samples": 10,
        "started_at_us": 5,
        "duration_s": 1.0,
        "collapsed": ["a;b 10"],
        "routes": {},
    }
    body = encode_json(
        [dict(origin, memory=stats), dict(origin, memory=leak), dict(origin, profile=profile)]
    )
    decoded = ingest.decode_tracer(body, "application/json")
    noon = 1_796_644_800_000_000
    assert decoded.memory == [
        {
            "service": "checkout",
            "host": "web-1",
            "pid": 4242,
            "time_us": noon + 250_000,
            "rss_bytes": 50_000_000,
            "heap_blocks": 120_000,
        }
    ]
    assert decoded.leaks == [
        {
            "service": "checkout",
            "host": "web-1",
            "pid": 4242,
            "time_us": noon,
            "measure": "heap",
            "reason": leak["reason"],
            "growth": 41300.0,
            "unit": "blocks",
        }
    ]
    assert decoded.profiles == [dict(profile, service="checkout", host="web-1", pid=4242)]
    assert decoded.spans == [] and decoded.histograms == []


# -- Zipkin from other tracers -----------------------------------------------------------------


def test_zipkin_spans_of_another_tracer() -> None:
    spans = [
        {
            "traceId": "463ac35c9f6413ad",
            "id": "A2FB4A1D1A96D312",
            "kind": "CLIENT",
            "name": "get /api",
            "timestamp": 1_700_000_000_000_000,
            "duration": 2500,
            "localEndpoint": {"serviceName": "frontend", "ipv4": "10.0.0.1"},
            "remoteEndpoint": {"serviceName": "backend", "port": 8080},
            "tags": {
                "http.method": "GET",
                "http.path": "/api",
                "http.status_code": "503",
                "error": "Service Unavailable",
                "region": "eu",
            },
            "annotations": [{"timestamp": 1_700_000_000_001_000, "value": "retrying"}],
            "debug": True,
        },
        {
            "traceId": "463ac35c9f6413ad",
            "id": "a2fb4a1d1a96d312",
            "parentId": "0020000000000001",
            "kind": "SERVER",
            "name": "get /api",
            "timestamp": 1_700_000_000_000_400,
            "duration": 2000,
            "localEndpoint": {"serviceName": "backend"},
            "shared": True,
            "tags": {"db.system": "redis", "db.statement": "GET k"},
        },
    ]
    client, server = ingest.decode_zipkin(json.dumps(spans).encode(), "application/json").spans
    assert client["trace_id"] == "0000000000000000463ac35c9f6413ad"
    assert client["span_id"] == "a2fb4a1d1a96d312" and client["parent_id"] is None
    assert (client["kind"], client["service"], client["source"]) == ("client", "frontend", "zipkin")
    assert client["http"] == {
        "method": "GET",
        "url": None,
        "path": "/api",
        "status_code": 503,
        "route": None,
    }
    assert client["error"] == {"type": "error", "message": "Service Unavailable", "stack": None}
    assert client["annotations"] == [
        {"time_us": 1_700_000_000_001_000, "data": {"value": "retrying"}}
    ]
    assert client["attributes"] == {
        "region": "eu",
        "peer.service": "backend",
        "network.peer.port": "8080",
        "zipkin.debug": "true",
    }
    assert client["events"] == [] and client["tags"] == {} and client["request_id"] is None
    assert server["parent_id"] == "0020000000000001" and server["kind"] == "server"
    assert server["db"] == {"db.system.name": "redis", "db.query.text": "GET k"}
    assert server["attributes"] == {"zipkin.shared": "true"} and server["error"] is None


# -- bounds --------------------------------------------------------------------------------------


def test_long_strings_are_cut_and_attributes_capped() -> None:
    attributes = [
        {"key": f"k{n:03d}", "value": {"stringValue": "v"}}
        for n in range(ingest.MAX_ATTRIBUTES + 50)
    ]
    attributes[0]["value"] = {"stringValue": "x" * (ingest.MAX_STRING + 10)}
    body = {
        "resourceSpans": [
            {
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "0af7651916cd43dd8448eb211c80319c",
                                "spanId": "b7ad6b7169203331",
                                "name": "n" * (ingest.MAX_STRING * 2),
                                "attributes": attributes,
                                "events": [{"name": "e", "timeUnixNano": "1"}]
                                * (ingest.MAX_EVENTS + 5),
                            }
                        ]
                    }
                ]
            }
        ]
    }
    (span,) = ingest.decode_otlp_traces(json.dumps(body).encode(), "application/json").spans
    assert len(span["name"]) == ingest.MAX_STRING
    assert len(span["attributes"]) == ingest.MAX_ATTRIBUTES
    assert len(span["attributes"]["k000"]) == ingest.MAX_STRING
    assert len(span["annotations"]) == ingest.MAX_EVENTS


@pytest.mark.parametrize(
    ("decoder", "body"),
    [
        ("zipkin", b"[" + b"0," * ingest.MAX_SPANS + b"0]"),
        ("tracer", b'{"spans": [' + b"0," * ingest.MAX_SPANS + b"0]}"),
        (
            "otlp_traces",
            b'{"resourceSpans": [{"scopeSpans": [{"spans": ['
            + b"0," * ingest.MAX_SPANS
            + b"0]}]}]}",
        ),
    ],
    ids=["zipkin", "tracer", "otlp"],
)
def test_more_than_a_million_spans_is_refused(decoder: str, body: bytes) -> None:
    with pytest.raises(IngestError, match="more than 1,000,000 spans"):
        DECODERS[decoder](body, "application/json")


# -- malformed bodies ----------------------------------------------------------------------------

SPAN = {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331"}


def otlp_body(**span: Any) -> bytes:
    return json.dumps(
        {"resourceSpans": [{"scopeSpans": [{"spans": [dict(SPAN, **span)]}]}]}
    ).encode()


@pytest.mark.parametrize(
    ("decoder", "body", "reason"),
    [
        ("otlp_traces", b"{not json", "not JSON"),
        ("otlp_traces", b"\xff\xfe", "not UTF-8"),
        ("otlp_traces", b"[]", "must be an object"),
        ("otlp_traces", b'{"resourceSpans": {}}', "resourceSpans must be a list"),
        ("otlp_traces", otlp_body(traceId="abc"), "traceId must be 32 hex digits"),
        ("otlp_traces", otlp_body(traceId="0" * 32), "traceId is all zeros"),
        ("otlp_traces", otlp_body(spanId="zz" * 8), "spanId must be 16 hex digits"),
        ("otlp_traces", otlp_body(parentSpanId="12"), "parentSpanId must be 16 hex digits"),
        ("otlp_traces", otlp_body(kind=9), "kind 9 is not an OTLP SpanKind"),
        ("otlp_traces", otlp_body(kind="SERVER"), "kind must be an integer or one of its names"),
        (
            "otlp_traces",
            otlp_body(startTimeUnixNano="soon"),
            "startTimeUnixNano must be an integer",
        ),
        ("otlp_traces", otlp_body(attributes=[{"key": 1}]), "attributes[0].key must be a string"),
        (
            "otlp_traces",
            otlp_body(attributes=[{"key": "a", "value": {"intValue": "x"}}]),
            "attributes[0] must be an integer",
        ),
        ("otlp_traces", b"[" * 100_000, "nested too deeply"),
        (
            "otlp_metrics",
            b'{"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"name": '
            b'"http.server.request.duration", "histogram": {"dataPoints": [{"bucketCounts": '
            b'["1", "2"], "explicitBounds": [1, 2]}]}}]}]}]}',
            "2 bucketCounts for 2 explicitBounds",
        ),
        ("zipkin", b"{}", "must be a JSON list"),
        ("zipkin", b'[{"traceId": "12", "id": "a2fb4a1d1a96d312"}]', "span 0: traceId must be 32"),
        (
            "zipkin",
            b'[{"traceId": "463ac35c9f6413ad", "id": "a2fb4a1d1a96d312", "kind": "X"}]',
            "kind must be SERVER",
        ),
        (
            "zipkin",
            b'[{"traceId": "463ac35c9f6413ad", "id": "a2fb4a1d1a96d312", "tags": {"a": []}}]',
            "tags['a'] must be a string",
        ),
        ("tracer", b'{"hello": 1}', "holds none of spans, metrics, memory or profile"),
        ("tracer", b'{"spans": [{"trace_id": "x"}]}', "spans[0]: trace_id must be 32 hex digits"),
        ("tracer", b'{"memory": {"event": "stats", "time": "noon"}}', "memory.time must be an ISO"),
        ("tracer", b'{"memory": {"event": "other"}}', "memory.event must be stats or leak"),
    ],
)
def test_malformed_bodies_say_why(decoder: str, body: bytes, reason: str) -> None:
    with pytest.raises(IngestError) as caught:
        DECODERS[decoder](body, "application/json")
    assert reason in caught.value.reason and "\n" not in caught.value.reason


def test_a_protobuf_that_does_not_parse() -> None:
    with pytest.raises(IngestError, match="not a protobuf message"):
        ingest.decode_otlp_traces(b"\x0a\xff\xff\xff", PB)
    with pytest.raises(IngestError, match="traceId must be 16 bytes"):
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        request = ExportTraceServiceRequest()
        request.resource_spans.add().scope_spans.add().spans.add(trace_id=b"12", span_id=b"1" * 8)
        ingest.decode_otlp_traces(request.SerializeToString(), "application/protobuf")


def test_content_types_a_receiver_does_not_take() -> None:
    for decoder in DECODERS.values():
        with pytest.raises(ingest.UnsupportedContent, match="text/xml"):
            decoder(b"<x/>", "text/xml")


def test_without_the_otlp_extra_protobuf_is_unsupported_and_json_still_works() -> None:
    script = (
        "import sys; sys.modules['opentelemetry.proto'] = None\n"
        "from tracer.serve import ingest\n"
        "assert not ingest.protobuf_available()\n"
        "try:\n"
        "    ingest.decode_otlp_traces(b'', 'application/x-protobuf')\n"
        "except ingest.UnsupportedContent as exc:\n"
        "    print(exc.reason)\n"
        "print(len(ingest.decode_otlp_traces(b'{}', 'application/json').spans))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    reason, spans = done.stdout.splitlines()
    assert "otlp extra" in reason and "dapper-tracer[otlp]" in reason and spans == "0"
    assert ingest.protobuf_available()


# -- whatever the bytes: IngestError or a Decoded, nothing else --------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
# Documents shaped like the real ones, with arbitrary leaves: they get past the first checks.
KEYS = [
    "resourceSpans",
    "resourceMetrics",
    "resource",
    "attributes",
    "scopeSpans",
    "scopeMetrics",
    "spans",
    "metrics",
    "traceId",
    "spanId",
    "parentSpanId",
    "kind",
    "name",
    "events",
    "status",
    "code",
    "key",
    "value",
    "stringValue",
    "intValue",
    "arrayValue",
    "kvlistValue",
    "values",
    "histogram",
    "dataPoints",
    "bucketCounts",
    "explicitBounds",
    "id",
    "tags",
    "annotations",
    "timestamp",
    "localEndpoint",
    "spans",
    "metrics",
    "memory",
    "event",
    "time",
    "trace_id",
    "span_id",
    "http",
    "error",
    "cumulative",
    "families",
    "series",
    "labels",
    "bounds",
    "bucket_counts",
    "profile",
    "gauge",
    "asInt",
]
ids = st.sampled_from(
    [
        "0af7651916cd43dd8448eb211c80319c",
        "b7ad6b7169203331",
        "463ac35c9f6413ad",
        "",
        "http.server.request.duration",
        "stats",
        "leak",
        "SERVER",
        2,
    ]
)
shaped = st.recursive(
    st.none() | st.integers() | st.text(max_size=8) | ids,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(KEYS), children, max_size=5)
    ),
    max_leaves=40,
)
MEDIA = [PB, "application/json", ""]


def assert_only_ingest_errors(decoder: str, body: bytes, media: str) -> None:
    try:
        decoded = DECODERS[decoder](body, media)
    except IngestError as exc:
        assert isinstance(exc.reason, str) and exc.reason and "\n" not in exc.reason
        # The decoders' last guard names no field: every malformed input found here must be
        # caught, and explained, before it.
        assert "malformed body (" not in exc.reason, exc.reason
    else:
        assert isinstance(decoded, Decoded)
        json.dumps([decoded.spans, decoded.histograms, decoded.memory, decoded.leaks])


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.sampled_from(sorted(DECODERS)), st.binary(max_size=300), st.sampled_from(MEDIA))
def test_arbitrary_bytes(decoder: str, body: bytes, media: str) -> None:
    assert_only_ingest_errors(decoder, body, media)


@FUZZ
@given(st.sampled_from(sorted(DECODERS)), json_values | shaped)
def test_arbitrary_json(decoder: str, document: Any) -> None:
    assert_only_ingest_errors(decoder, json.dumps(document).encode(), "application/json")


SMALL_BATCH = {
    "service": "s",
    "host": "h",
    "pid": 3,
    "spans": [
        {
            "trace_id": "0af7651916cd43dd8448eb211c80319c",
            "span_id": "b7ad6b7169203331",
            "parent_id": None,
            "kind": "server",
            "name": "GET /",
            "start_us": 5,
            "duration_us": 3,
            "events": [{"type": "sr", "time_us": 5}, {"type": "ss", "time_us": 8}],
            "http": {"method": "GET", "status_code": 500, "url": "http://h/x", "path": "/x"},
            "error": {"type": "E", "message": "m", "stack": "s"},
            "tags": {"a": [1, {"b": 2}], "tracer.request_id": "r"},
            "annotations": [{"time_us": 6, "data": {"x": 1}}],
            "request_id": "r",
        },
        {
            "trace_id": "0af7651916cd43dd8448eb211c80319c",
            "span_id": "c7ad6b7169203331",
            "parent_id": "b7ad6b7169203331",
            "kind": "client",
            "name": "SELECT t",
            "start_us": 6,
            "duration_us": 1,
            "db": {"db.system.name": "sqlite", "server.address": "db", "server.port": 5},
            "error": {"type": "network-error", "message": "OSError: down"},
        },
    ],
}
METRICS_BATCH = metrics_batch()


def valid_documents() -> dict[str, Any]:
    groups, _ = otlp_encode.prepare(SMALL_BATCH, {})
    metrics = otlp_metrics.to_json(METRICS_BATCH, {})
    assert metrics is not None
    stats = {"event": "stats", "time": "2026-12-07T12:00:00Z", "rss_bytes": 1}
    leak = {"event": "leak", "measure": "rss", "end": "2026-12-07T12:00:00Z", "growth": 1}
    return {
        "otlp_traces": json.loads(otlp_encode.to_json(groups)),
        "otlp_metrics": json.loads(metrics),
        "zipkin": zipkin_encode.encode_spans(SMALL_BATCH)[0],
        "tracer": [SMALL_BATCH, METRICS_BATCH, {"memory": stats}, {"memory": leak},
                   {"profile": {"samples": 1}}],
    }  # fmt: skip


VALID = valid_documents()


def leaves(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path into ``node``, containers included."""
    yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from leaves(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from leaves(value, (*path, index))


def test_the_valid_documents_decode() -> None:
    for decoder, document in VALID.items():
        decoded = DECODERS[decoder](json.dumps(document).encode(), "application/json")
        assert decoded.spans or decoded.histograms


@FUZZ
@given(st.sampled_from(sorted(VALID)), st.data())
def test_damaged_json(decoder: str, data: st.DataObject) -> None:
    document = json.loads(json.dumps(VALID[decoder]))
    for _ in range(data.draw(st.integers(1, 3))):
        paths = list(leaves(document))[1:]
        path = data.draw(st.sampled_from(paths))
        parent = document
        for step in path[:-1]:
            parent = parent[step]
        parent[path[-1]] = data.draw(json_values | shaped)
    assert_only_ingest_errors(decoder, json.dumps(document).encode(), "application/json")


@FUZZ
@given(st.data())
def test_damaged_protobuf(data: st.DataObject) -> None:
    groups, _ = otlp_encode.prepare(SMALL_BATCH, {})
    body = bytearray(otlp_encode.to_protobuf(groups))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(body) - 1))
        body[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(body)))
    assert_only_ingest_errors("otlp_traces", bytes(body[:cut]), PB)
