"""Real receivers on 127.0.0.1 for the export tests.

:class:`OtlpReceiver` is an OTLP/HTTP endpoint (``POST /v1/traces``) served by ``http.server``. It
decodes every request with the official ``opentelemetry-proto`` classes: binary protobuf with
``ExportTraceServiceRequest.FromString``, JSON with ``google.protobuf.json_format`` after turning
the hex ids (OTLP's one deviation from the proto3 JSON mapping) into what the mapping expects, and
refusing unknown fields, so a misspelled key fails the test. It answers as a collector does, an
empty ``ExportTraceServiceResponse`` in the request's encoding, unless told otherwise.

:class:`ZipkinReceiver` takes ``POST /api/v2/spans`` and keeps the JSON lists it was sent.
"""

from __future__ import annotations

import base64
import http.server
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.support.servers import QuietHandler, ReceiverBase, strict_loads

#: (status, headers, body) of one planned answer.
Answer = tuple[int, dict[str, str], bytes]


def strict_json(data: bytes) -> Any:
    """json.loads that refuses NaN and Infinity, which are not JSON."""
    return strict_loads(data)


def any_value(value: AnyValue) -> Any:
    """An OTLP AnyValue as the Python value it carries."""
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, which)


def attributes(items: Any) -> dict[str, Any]:
    """Repeated KeyValue as a dict; a key sent twice fails (OTLP keys are unique)."""
    out: dict[str, Any] = {}
    for kv in items:
        assert kv.key not in out, f"attribute {kv.key!r} sent twice"
        out[kv.key] = any_value(kv.value)
    return out


def _hex_to_base64(value: Any, length: int) -> str:
    assert isinstance(value, str) and len(value) == length * 2, value
    return base64.b64encode(bytes.fromhex(value)).decode("ascii")


def parse_otlp_json(document: Any) -> ExportTraceServiceRequest:
    """An OTLP/JSON request decoded by json_format, strictly: ids must be hex of the right
    length; unknown fields and enum names are refused."""
    assert isinstance(document, dict)
    copy = json.loads(json.dumps(document))
    for resource_spans in copy.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                span["traceId"] = _hex_to_base64(span["traceId"], 16)
                span["spanId"] = _hex_to_base64(span["spanId"], 8)
                if "parentSpanId" in span:
                    span["parentSpanId"] = _hex_to_base64(span["parentSpanId"], 8)
                assert isinstance(span.get("kind", 0), int), "enums must be integers"
                assert isinstance(span.get("status", {}).get("code", 0), int)
    message = ExportTraceServiceRequest()
    json_format.ParseDict(copy, message, ignore_unknown_fields=False)
    return message


@dataclass
class Seen:
    """One span as the receiver got it, with its resource and scope."""

    span: Span
    resource: dict[str, Any]
    scope: tuple[str, str]
    attributes: dict[str, Any]
    request: int

    @property
    def service(self) -> str:
        return str(self.resource.get("service.name"))

    @property
    def trace_id(self) -> str:
        return self.span.trace_id.hex()

    @property
    def span_id(self) -> str:
        return self.span.span_id.hex()

    @property
    def parent_id(self) -> str:
        return self.span.parent_span_id.hex()

    def events(self, name: str) -> list[dict[str, Any]]:
        return [
            {"time": e.time_unix_nano, **attributes(e.attributes)}
            for e in self.span.events
            if e.name == name
        ]


@dataclass
class OtlpRequest:
    path: str
    headers: dict[str, str]
    raw: bytes
    body: bytes
    content_type: str
    message: ExportTraceServiceRequest
    document: Any = None
    client_port: int = 0


def partial_success(rejected: int, message: str, content_type: str) -> bytes:
    """An ExportTraceServiceResponse with ``partial_success`` in the given encoding."""
    response = ExportTraceServiceResponse(
        partial_success=ExportTracePartialSuccess(rejected_spans=rejected, error_message=message)
    )
    if content_type == "application/json":
        return json_format.MessageToJson(response).encode()
    return response.SerializeToString()


@dataclass
class OtlpReceiver(ReceiverBase):
    """An OTLP/HTTP receiver on 127.0.0.1 (see the module).

    ``plan`` holds answers given in turn (each an :data:`Answer`, or a callable making one from
    the request); ``outage_until`` (a ``time.monotonic()`` value) makes it answer 503 with
    ``Retry-After: 1`` until then. A refused request is still recorded in ``refused``, never in
    ``requests``. A body it cannot decode is answered 400 and kept in ``errors``.
    """

    plan: list[Answer | Callable[[OtlpRequest], Answer]] = field(default_factory=list)
    requests: list[OtlpRequest] = field(default_factory=list)
    refused: list[OtlpRequest] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    outage_until: float = 0.0
    drop_connection: int = 0
    changed: threading.Condition = field(default_factory=threading.Condition)

    @property
    def endpoint(self) -> str:
        """The base URL, as OTEL_EXPORTER_OTLP_ENDPOINT takes it."""
        return f"http://127.0.0.1:{self.port}"

    def handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                raw, body = self.read_body()
                if self.path.endswith("/v1/metrics"):
                    # Metrics batches (tests/export/test_otlp_metrics.py checks them): taken.
                    self.reply(200)
                    return
                with receiver.changed:
                    if receiver.drop_connection > 0:
                        receiver.drop_connection -= 1
                        # Gone without an answer, as a collector that crashed mid-request.
                        self.close_connection = True
                        return
                content_type = self.headers.get("Content-Type", "")
                document = None
                try:
                    if content_type == "application/json":
                        document = strict_json(body)
                        message = parse_otlp_json(document)
                    elif content_type == "application/x-protobuf":
                        message = ExportTraceServiceRequest.FromString(body)
                    else:
                        raise ValueError(f"unexpected Content-Type {content_type!r}")
                except Exception as exc:
                    # What a collector does with a body it cannot decode; the test fails on it.
                    with receiver.changed:
                        receiver.errors.append(exc)
                    self.reply(400)
                    return
                request = OtlpRequest(
                    self.path,
                    dict(self.headers.items()),
                    raw,
                    body,
                    content_type,
                    message,
                    document,
                    self.client_address[1],
                )
                with receiver.changed:
                    if time.monotonic() < receiver.outage_until:
                        answer: Answer = (503, {"Retry-After": "1"}, b"")
                        receiver.refused.append(request)
                    elif receiver.plan:
                        planned = receiver.plan.pop(0)
                        answer = planned(request) if callable(planned) else planned
                        if 200 <= answer[0] < 300:
                            receiver.requests.append(request)
                        else:
                            receiver.refused.append(request)
                    else:
                        empty = b"{}" if content_type == "application/json" else b""
                        answer = (200, {"Content-Type": content_type}, empty)
                        receiver.requests.append(request)
                    receiver.changed.notify_all()
                status, headers, reply = answer
                self.reply(status, headers, reply)

        return Handler

    def spans(self) -> list[Seen]:
        """Every span of every accepted request, in arrival order."""
        out: list[Seen] = []
        with self.changed:
            requests = list(enumerate(self.requests))
        for index, request in requests:
            for resource_spans in request.message.resource_spans:
                resource = attributes(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    scope = (scope_spans.scope.name, scope_spans.scope.version)
                    for span in scope_spans.spans:
                        out.append(Seen(span, resource, scope, attributes(span.attributes), index))
        return out

    def wait_spans(self, count: int, timeout: float = 15.0) -> list[Seen]:
        """At least ``count`` spans, waiting up to ``timeout`` seconds for them."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                total = sum(
                    len(ss.spans)
                    for r in self.requests
                    for rs in r.message.resource_spans
                    for ss in rs.scope_spans
                )
                left = deadline - time.monotonic()
                if total >= count or left <= 0:
                    break
                self.changed.wait(min(left, 0.1))
        spans = self.spans()
        assert len(spans) >= count, f"expected {count} spans, got {len(spans)}"
        return spans


@dataclass
class ZipkinRequest:
    path: str
    headers: dict[str, str]
    spans: list[dict[str, Any]]


@dataclass
class ZipkinReceiver(ReceiverBase):
    """A Zipkin v2 endpoint on 127.0.0.1: answers 202 (as Zipkin does) unless ``plan`` says
    otherwise, and keeps each request's JSON list."""

    plan: list[Answer] = field(default_factory=list)
    requests: list[ZipkinRequest] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v2/spans"

    def handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                _, body = self.read_body()
                with receiver.changed:
                    status, headers, reply = (
                        receiver.plan.pop(0) if receiver.plan else (202, {}, b"")
                    )
                    if 200 <= status < 300:
                        receiver.requests.append(
                            ZipkinRequest(self.path, dict(self.headers.items()), strict_json(body))
                        )
                    receiver.changed.notify_all()
                self.reply(status, headers, reply)

        return Handler

    def spans(self) -> list[dict[str, Any]]:
        with self.changed:
            return [span for request in self.requests for span in request.spans]

    def wait_spans(self, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        with self.changed:
            while sum(len(r.spans) for r in self.requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.changed.wait(min(left, 0.1))
        spans = self.spans()
        assert len(spans) >= count, f"expected {count} spans, got {len(spans)}"
        return spans
