"""The OTLP encoder on hand-made records (the plain dicts every reporter gets), decoded with the
official classes: the parts of the mapping no service run here produces (fields the record may
carry, unknown methods, recorded headers, odd values, several processes in one batch)."""

from __future__ import annotations

import math
from typing import Any

import pytest

pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2")

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from reporters import otlp
from tests.export.receiver import attributes, parse_otlp_json, strict_json

ERROR, UNSET = 2, 0


def record(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "span_id": "00f067aa0ba902b7",
        "parent_id": "a3ce929d0e0e4736",
        "request_id": "req-1",
        "kind": "server",
        "name": "GET /things/1",
        "service": "svc",
        "host": "web-1",
        "pid": 7,
        "start_us": 1_714_564_800_000_000,
        "duration_us": 1500,
        "events": [],
        "http": {
            "method": "GET",
            "url": "https://api.example:8443/things/1",
            "path": "/things/1",
            "status_code": 200,
        },
        "error": None,
        "annotations": [],
        "tags": {},
        "sampled": True,
        "must_collect": False,
    }
    base.update(fields)
    return base


def decode(protocol: str, *records: dict[str, Any], **options: Any) -> ExportTraceServiceRequest:
    reporter = otlp.create("http://127.0.0.1:9", protocol=protocol, **options)
    batch = {"service": "svc", "host": "web-1", "pid": 7, "spans": list(records)}
    (body,), _ = reporter.encode(batch)
    if protocol == "http/json":
        return parse_otlp_json(strict_json(body))
    return ExportTraceServiceRequest.FromString(body)


def only_span(message: ExportTraceServiceRequest) -> Any:
    (resource_spans,) = message.resource_spans
    (scope_spans,) = resource_spans.scope_spans
    (span,) = scope_spans.spans
    return span


def test_start_end_and_ids(protocol: str) -> None:
    span = only_span(decode(protocol, record()))
    assert span.trace_id.hex() == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert span.span_id.hex() == "00f067aa0ba902b7"
    assert span.parent_span_id.hex() == "a3ce929d0e0e4736"
    assert span.start_time_unix_nano == 1_714_564_800_000_000_000
    assert span.end_time_unix_nano == 1_714_564_800_001_500_000


def test_https_server_attributes(protocol: str) -> None:
    span = only_span(decode(protocol, record()))
    found = attributes(span.attributes)
    assert found["url.scheme"] == "https"
    assert found["server.address"] == "api.example"
    assert found["server.port"] == 8443
    assert "url.query" not in found


def test_tracestate_from_the_record(protocol: str) -> None:
    span = only_span(decode(protocol, record(tracestate="congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")))
    assert span.trace_state == "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"


def test_route_from_the_record(protocol: str) -> None:
    http = {**record()["http"], "route": "/things/{id}"}
    span = only_span(decode(protocol, record(http=http)))
    assert span.name == "GET /things/{id}"
    assert attributes(span.attributes)["http.route"] == "/things/{id}"
    # A record that says "no route" is believed over its name.
    http = {**record()["http"], "route": None}
    span = only_span(decode(protocol, record(name="GET /things/{id}", http=http)))
    assert span.name == "GET"
    assert "http.route" not in attributes(span.attributes)


def test_unknown_method(protocol: str) -> None:
    http = {**record()["http"], "method": "PROPFIND", "path": "/dav"}
    span = only_span(decode(protocol, record(name="PROPFIND /dav", http=http)))
    found = attributes(span.attributes)
    assert found["http.request.method"] == "_OTHER"
    assert found["http.request.method_original"] == "PROPFIND"
    assert span.name == "HTTP"


def test_recorded_headers_and_tags(protocol: str) -> None:
    tags = {
        "http.request_headers": {"user-agent": "curl/8", "authorization": "[REDACTED]"},
        "http.request.method": "POST",  # a tag never replaces a mapped attribute
        "customer": "c-9",
        "nothing": None,
        "big": 2**70,
        "ratio": math.inf,
        "deep": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": 1}}}}}}}}},
        "text": "bad \ud800 surrogate",
    }
    span = only_span(decode(protocol, record(tags=tags)))
    found = attributes(span.attributes)
    assert found["http.request.header.user-agent"] == ["curl/8"]
    assert found["http.request.header.authorization"] == ["[REDACTED]"]
    assert found["http.request.method"] == "GET"
    assert found["customer"] == "c-9"
    assert "nothing" not in found
    assert found["big"] == str(2**70)
    assert found["ratio"] == math.inf
    leaf = found["deep"]
    for key in "abcdefgh":
        leaf = leaf[key]
    assert isinstance(leaf, str) and '"i":1' in leaf
    assert found["text"].startswith("bad ") and found["text"].endswith(" surrogate")


@pytest.mark.parametrize(
    ("kind", "status", "failed"),
    [
        ("server", 200, False),
        ("server", 404, False),
        ("server", 500, True),
        ("client", 404, True),
        ("client", 302, False),
        ("server", 99, True),
        ("server", 600, True),
    ],
)
def test_status_from_http_status(protocol: str, kind: str, status: int, failed: bool) -> None:
    http = {**record()["http"], "status_code": status}
    span = only_span(decode(protocol, record(kind=kind, http=http)))
    assert span.status.code == (ERROR if failed else UNSET)
    assert attributes(span.attributes).get("error.type") == (str(status) if failed else None)


def test_a_network_error_without_an_exception_name(protocol: str) -> None:
    error = {"type": "network-error", "message": "connection reset", "stack": None}
    http = {**record()["http"], "status_code": None}
    span = only_span(decode(protocol, record(kind="client", error=error, http=http)))
    assert span.status.code == ERROR
    assert attributes(span.attributes)["error.type"] == "network-error"
    (event,) = span.events
    assert event.name == "exception"
    assert attributes(event.attributes) == {
        "exception.type": "network-error",
        "exception.message": "connection reset",
    }


def test_annotations_that_are_not_dicts(protocol: str) -> None:
    annotations = [{"time_us": 1_714_564_800_000_100, "data": [1, 2]}]
    span = only_span(decode(protocol, record(annotations=annotations)))
    (event,) = span.events
    assert event.name == "tracer.report"
    assert event.time_unix_nano == 1_714_564_800_000_100_000
    assert attributes(event.attributes) == {"data": [1, 2]}


def test_spans_of_several_processes_keep_their_resources(protocol: str) -> None:
    other = record(span_id="00f067aa0ba902b8", service="billing", host="web-2", pid=8)
    message = decode(
        protocol,
        record(),
        other,
        resource_attributes={"deployment.environment.name": "prod", "service.name": "ignored"},
    )
    resources = {}
    for resource_spans in message.resource_spans:
        found = attributes(resource_spans.resource.attributes)
        resources[found["service.name"]] = (found, len(resource_spans.scope_spans[0].spans))
    assert set(resources) == {"svc", "billing"}
    billing, count = resources["billing"]
    assert count == 1
    assert billing["host.name"] == "web-2" and billing["process.pid"] == 8
    assert billing["deployment.environment.name"] == "prod"
    assert resources["svc"][0]["deployment.environment.name"] == "prod"


@pytest.mark.parametrize(
    "bad",
    [
        {"trace_id": "0" * 32},
        {"trace_id": "abc"},
        {"span_id": "zz" * 8},
        {"parent_id": "1234"},
    ],
)
def test_unusable_ids_are_left_out(protocol: str, bad: dict[str, Any]) -> None:
    reporter = otlp.create("http://127.0.0.1:9", protocol=protocol)
    batch = {"service": "svc", "spans": [record(**bad), record(span_id="00f067aa0ba902b9")]}
    (body,), skipped = reporter.encode(batch)
    assert skipped == 1
    decoded = (
        parse_otlp_json(strict_json(body))
        if protocol == "http/json"
        else ExportTraceServiceRequest.FromString(body)
    )
    assert only_span(decoded).span_id.hex() == "00f067aa0ba902b9"
