"""Span records as an OTLP ``ExportTraceServiceRequest``: binary protobuf, built with the official
``opentelemetry-proto`` classes (the ``otlp`` extra), or OTLP's JSON mapping, which needs nothing.

The mapping follows the OpenTelemetry specification and the stable HTTP semantic conventions
(see :mod:`tracer.reporters.mapping` for names, routes and failures):

* resource: ``service.name`` (the span's service, tracer's app name), ``host.name``,
  ``process.pid``, ``telemetry.sdk.name`` (``tracer``), ``.language`` (``python``),
  ``.version``; ``OTEL_RESOURCE_ATTRIBUTES`` adds to these (it never replaces the service
  name or the ``telemetry.sdk.*`` ones). Spans are grouped by their service, host and pid, so a
  batch replayed from the spool keeps the process it came from.
* one scope: ``tracer`` and its version.
* span: ids, ``parent_span_id``, ``trace_state`` (the inbound ``tracestate``, when the record
  carries it), ``flags`` (the W3C sampled bit, and whether the parent is remote: a server
  span's parent is the caller's span, in another process), kind SERVER / CLIENT / INTERNAL
  (a websocket connection is SERVER, with ``tracer.kind`` ``websocket`` among its attributes),
  start and end in nanoseconds.
* attributes: ``http.request.method`` (``_OTHER`` and ``http.request.method_original`` for an
  unknown one), ``http.response.status_code``; a server's ``url.path``, ``url.query`` (as
  redacted), ``url.scheme`` and ``http.route`` when the framework knows it; a client's
  ``url.full`` (redacted); ``server.address`` and ``server.port`` for both; ``error.type``;
  ``tracer.request_id``; a database call's ``db`` part as it is (``db.system.name``,
  ``db.namespace``, ``db.operation.name``, ``db.collection.name``, ``db.query.text``,
  ``server.address``, ``server.port``); the span's tags (recorded request headers as
  ``http.request.header.<name>``); a tag never replaces one of these.
* events: each ``tracer.report()`` annotation as a ``tracer.report`` event whose attributes are
  the reported dict's items; a recorded exception or network error as the ``exception`` event
  (``exception.type``, ``.message``, ``.stacktrace``) at the span's end.
* status: ERROR (with the exception as its message) for a failed span, else UNSET.

In JSON, as OTLP/HTTP specifies: ids are hex, enums integers, 64-bit integers decimal strings.
Records with unusable ids (not hex, wrong length, all zeros) are left out and counted; OTLP
receivers refuse a whole request for one of them. Nothing here imports tracer's other modules.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterable, Mapping
from importlib import metadata
from typing import Any

from tracer.encoding import encode_json
from tracer.reporters.mapping import method_of, outcome, route, span_name, split_url

__all__ = [
    "FLAG_HAS_IS_REMOTE",
    "FLAG_IS_REMOTE",
    "FLAG_SAMPLED",
    "KINDS",
    "SCOPE_NAME",
    "STATUS_ERROR",
    "STATUS_UNSET",
    "Group",
    "Parts",
    "prepare",
    "protobuf_available",
    "sdk_version",
    "split",
    "to_json",
    "to_protobuf",
]

SCOPE_NAME = "tracer"
#: OTLP's SpanKind values: 1 INTERNAL, 2 SERVER, 3 CLIENT.
KINDS = {"internal": 1, "server": 2, "client": 3}
STATUS_UNSET = 0
STATUS_ERROR = 2
FLAG_SAMPLED = 0x01
FLAG_HAS_IS_REMOTE = 0x100
FLAG_IS_REMOTE = 0x200
#: Nested values deeper than this become their JSON text: backends flatten them anyway.
MAX_DEPTH = 8
_INT64 = 2**63

#: One span, mapped: ``(trace_id, span_id, parent_span_id, name, kind, start_ns, end_ns, flags,
#: trace_state, attributes, events, status_code, status_message)``; ids are bytes (``b""`` for
#: no parent), attributes ``[(key, value)]``, events ``[(time_ns, name, attributes)]``.
Parts = tuple[
    bytes,
    bytes,
    bytes,
    str,
    int,
    int,
    int,
    int,
    str,
    list[tuple[str, Any]],
    list[tuple[int, str, list[tuple[str, Any]]]],
    int,
    str,
]
#: The spans of one resource: ``(resource attributes, spans)``.
Group = tuple[list[tuple[str, Any]], list[Parts]]

_version: str | None = None


def sdk_version() -> str:
    """tracer's version (``telemetry.sdk.version`` and the scope's version)."""
    global _version
    if _version is None:
        try:
            _version = metadata.version("dapper-tracer")
        except metadata.PackageNotFoundError:
            _version = "0.1.0"
    return _version


def protobuf_available() -> bool:
    """Whether the ``opentelemetry-proto`` classes (the ``otlp`` extra) can be imported."""
    try:
        importlib.import_module("opentelemetry.proto.collector.trace.v1.trace_service_pb2")
    except ImportError:
        return False
    return True


_ZERO_IDS = {32: bytes(16), 16: bytes(8)}


def _id(value: Any, length: int) -> bytes | None:
    """An id of ``length`` hex digits as bytes; None when it is not one, or all zeros."""
    if type(value) is not str or len(value) != length:
        return None
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        return None
    # fromhex skips spaces, so a right length of text is not yet a right length of id.
    if len(raw) * 2 != length or raw == _ZERO_IDS[length]:
        return None
    return raw


def _resource(service: Any, host: Any, pid: Any, extra: Mapping[str, Any]) -> list[tuple[str, Any]]:
    fixed: list[tuple[str, Any]] = [("service.name", str(service or "unknown_service"))]
    base: dict[str, Any] = {}
    if host:
        base["host.name"] = str(host)
    if isinstance(pid, int) and not isinstance(pid, bool):
        base["process.pid"] = pid
    base.update(extra)
    version = sdk_version()
    own = {
        "telemetry.sdk.name": SCOPE_NAME,
        "telemetry.sdk.language": "python",
        "telemetry.sdk.version": version,
    }
    for key in ("service.name", *own):
        base.pop(key, None)
    fixed.extend(base.items())
    fixed.extend(own.items())
    return fixed


def _http_attributes(
    kind: str, record: dict[str, Any], http: dict[str, Any], attributes: list[tuple[str, Any]]
) -> None:
    method, original = method_of(http)
    if method is not None:
        attributes.append(("http.request.method", method))
        if original is not None:
            attributes.append(("http.request.method_original", original))
    status = http.get("status_code")
    if isinstance(status, int) and type(status) is not bool:
        # int(): an HTTPStatus given to client_call.response() is a plain number on the wire.
        attributes.append(("http.response.status_code", int(status)))
    url = http.get("url")
    parsed = split_url(url)
    if kind == "server":
        path = http.get("path")
        if isinstance(path, str) and path:
            attributes.append(("url.path", path))
        if parsed is not None:
            if parsed[3]:
                attributes.append(("url.query", parsed[3]))
            attributes.append(("url.scheme", parsed[0]))
        matched = route(record, http)
        if matched is not None:
            attributes.append(("http.route", matched))
    elif kind == "client" and isinstance(url, str) and url:
        attributes.append(("url.full", url))
    if parsed is not None:
        attributes.append(("server.address", parsed[1]))
        if parsed[2] is not None:
            attributes.append(("server.port", parsed[2]))


def _exception_event(error: dict[str, Any], end_ns: int) -> tuple[int, str, list[tuple[str, Any]]]:
    kind = error.get("type")
    message = error.get("message")
    text = message if isinstance(message, str) else ""
    if kind == "network-error":
        named, sep, rest = text.partition(": ")
        if sep and named.isidentifier():
            kind, text = named, rest
    attributes: list[tuple[str, Any]] = [("exception.type", str(kind or "Exception"))]
    if text:
        attributes.append(("exception.message", text))
    stack = error.get("stack")
    if isinstance(stack, str) and stack:
        attributes.append(("exception.stacktrace", stack))
    return end_ns, "exception", attributes


def span_parts(record: dict[str, Any]) -> Parts | None:
    """One record mapped (see the module), or None when its ids are unusable."""
    trace_id = _id(record.get("trace_id"), 32)
    span_id = _id(record.get("span_id"), 16)
    if trace_id is None or span_id is None:
        return None
    parent = record.get("parent_id")
    parent_id = b"" if parent is None else _id(parent, 16)
    if parent_id is None:
        return None
    kind = record.get("kind")
    # A websocket connection is served like a request: OTLP has no kind of its own for it.
    websocket = kind == "websocket"
    kind_name = "server" if websocket else kind if kind in KINDS else "internal"
    start_us = record.get("start_us")
    if type(start_us) is not int or start_us < 0:
        start_us = 0
    duration = record.get("duration_us")
    if type(duration) is not int or duration < 0:
        duration = 0
    start_ns = start_us * 1000
    end_ns = (start_us + duration) * 1000
    flags = FLAG_HAS_IS_REMOTE | (FLAG_SAMPLED if record.get("sampled") is True else 0)
    if kind_name == "server" and parent_id:
        flags |= FLAG_IS_REMOTE
    state = record.get("tracestate")
    trace_state = state if isinstance(state, str) else ""

    attributes: list[tuple[str, Any]] = [("tracer.kind", "websocket")] if websocket else []
    http = record.get("http")
    if isinstance(http, dict):
        _http_attributes(kind_name, record, http, attributes)
    db = record.get("db")
    if isinstance(db, dict):
        # error.type comes from the record's error, as for every span.
        attributes.extend(
            (key, value)
            for key, value in db.items()
            if isinstance(key, str) and key != "error.type" and value is not None
        )
    failed, error_type, message = outcome(record)
    if error_type is not None:
        attributes.append(("error.type", error_type))
    request_id = record.get("request_id")
    if isinstance(request_id, str) and request_id:
        attributes.append(("tracer.request_id", request_id))
    tags = record.get("tags")
    if isinstance(tags, dict) and tags:
        taken = {key for key, _ in attributes}
        for key, value in tags.items():
            if key == "http.request_headers" and isinstance(value, dict):
                for name, text in value.items():
                    attributes.append((f"http.request.header.{name}", [text]))
            elif isinstance(key, str) and key not in taken and value is not None:
                attributes.append((key, value))

    events: list[tuple[int, str, list[tuple[str, Any]]]] = []
    annotations = record.get("annotations")
    if isinstance(annotations, list):
        for annotation in annotations:
            if not isinstance(annotation, dict):
                continue
            at = annotation.get("time_us")
            time_ns = at * 1000 if type(at) is int else end_ns
            data = annotation.get("data")
            if isinstance(data, dict):
                items = [(str(k), v) for k, v in data.items() if v is not None]
            else:
                items = [] if data is None else [("data", data)]
            events.append((time_ns, "tracer.report", items))
    error = record.get("error")
    if isinstance(error, dict):
        events.append(_exception_event(error, end_ns))

    return (
        trace_id,
        span_id,
        parent_id,
        span_name(record),
        KINDS[kind_name],
        start_ns,
        end_ns,
        flags,
        trace_state,
        attributes,
        events,
        STATUS_ERROR if failed else STATUS_UNSET,
        (message or "") if failed else "",
    )


def prepare(batch: Mapping[str, Any], extra_resource: Mapping[str, Any]) -> tuple[list[Group], int]:
    """The batch's spans mapped and grouped by resource, and how many records were left out."""
    records = batch.get("spans")
    if not isinstance(records, list):
        return [], 0
    service, host, pid = batch.get("service"), batch.get("host"), batch.get("pid")
    groups: dict[tuple[Any, Any, Any], Group] = {}
    skipped = 0
    for record in records:
        if not isinstance(record, dict):
            skipped += 1
            continue
        parts = span_parts(record)
        if parts is None:
            skipped += 1
            continue
        key = (
            record.get("service") or service,
            record.get("host") or host,
            record.get("pid") or pid,
        )
        group = groups.get(key)
        if group is None:
            group = groups[key] = (_resource(*key, extra_resource), [])
        group[1].append(parts)
    return list(groups.values()), skipped


def count(groups: Iterable[Group]) -> int:
    """How many spans the groups hold."""
    return sum(len(spans) for _, spans in groups)


def split(groups: list[Group]) -> tuple[list[Group], list[Group]]:
    """The groups' spans in two halves (by count), each keeping its resources."""
    half = count(groups) // 2
    first: list[Group] = []
    second: list[Group] = []
    taken = 0
    for resource, spans in groups:
        room = half - taken
        if room >= len(spans):
            first.append((resource, spans))
            taken += len(spans)
        elif room > 0:
            first.append((resource, spans[:room]))
            second.append((resource, spans[room:]))
            taken = half
        else:
            second.append((resource, spans))
    return first, second


# -- JSON ------------------------------------------------------------------------------------


def _any_json(value: Any, depth: int) -> dict[str, Any]:
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        if -_INT64 <= value < _INT64:
            return {"intValue": str(value)}
        return {"stringValue": str(value)}
    if isinstance(value, float):
        if math.isfinite(value):
            return {"doubleValue": value}
        # The proto3 JSON spelling of the non-finite doubles.
        spelled = "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
        return {"doubleValue": spelled}
    if value is None:
        return {}
    if depth >= MAX_DEPTH:
        return {"stringValue": encode_json(value).decode("utf-8")}
    if isinstance(value, (list, tuple)):
        return {"arrayValue": {"values": [_any_json(v, depth + 1) for v in value]}}
    if isinstance(value, dict):
        return {
            "kvlistValue": {
                "values": [
                    {"key": str(k), "value": _any_json(v, depth + 1)} for k, v in value.items()
                ]
            }
        }
    return {"stringValue": str(value)}


_Shared = dict[tuple[str, type, Any], dict[str, Any]]


def _attributes_json(items: list[tuple[str, Any]], shared: _Shared) -> list[dict[str, Any]]:
    # Most pairs repeat from span to span (the method, the server, the status): one dict per
    # distinct scalar pair serves the whole request, since json.dumps only reads them.
    out = []
    for key, value in items:
        kind = type(value)
        if kind is str or kind is int or kind is bool:
            marker = (key, kind, value)
            pair = shared.get(marker)
            if pair is None:
                pair = shared[marker] = {"key": key, "value": _any_json(value, 0)}
            out.append(pair)
        else:
            out.append({"key": key, "value": _any_json(value, 0)})
    return out


def to_json(groups: list[Group]) -> bytes:
    """The groups as an OTLP/JSON ``ExportTraceServiceRequest``."""
    scope = {"name": SCOPE_NAME, "version": sdk_version()}
    shared: _Shared = {}
    resource_spans = []
    for resource, spans in groups:
        out = []
        for (
            trace_id,
            span_id,
            parent_id,
            name,
            kind,
            start_ns,
            end_ns,
            flags,
            trace_state,
            attributes,
            events,
            status_code,
            status_message,
        ) in spans:
            span: dict[str, Any] = {"traceId": trace_id.hex(), "spanId": span_id.hex()}
            if trace_state:
                span["traceState"] = trace_state
            if parent_id:
                span["parentSpanId"] = parent_id.hex()
            span["flags"] = flags
            span["name"] = name
            span["kind"] = kind
            span["startTimeUnixNano"] = str(start_ns)
            span["endTimeUnixNano"] = str(end_ns)
            if attributes:
                span["attributes"] = _attributes_json(attributes, shared)
            if events:
                span["events"] = [
                    {
                        "timeUnixNano": str(time_ns),
                        "name": event_name,
                        "attributes": _attributes_json(items, shared),
                    }
                    for time_ns, event_name, items in events
                ]
            status: dict[str, Any] = {}
            if status_code:
                status["code"] = status_code
                if status_message:
                    status["message"] = status_message
            span["status"] = status
            out.append(span)
        resource_spans.append(
            {
                "resource": {"attributes": _attributes_json(resource, shared)},
                "scopeSpans": [{"scope": scope, "spans": out}],
            }
        )
    return encode_json({"resourceSpans": resource_spans})


# -- protobuf --------------------------------------------------------------------------------


def _text(value: str) -> str:
    # protobuf refuses strings that are not valid UTF-8 (a lone surrogate); records should not
    # hold one, but a reporter never fails a batch over one character.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", errors="replace").decode("utf-8")
    return value


def _set_any(target: Any, value: Any, depth: int) -> None:
    kind = type(value)
    if kind is str:
        try:
            target.string_value = value
        except ValueError:
            target.string_value = _text(value)
    elif kind is int:
        if -_INT64 <= value < _INT64:
            target.int_value = value
        else:
            target.string_value = str(value)
    elif kind is bool:
        target.bool_value = value
    elif kind is float:
        target.double_value = value
    elif value is None:
        return
    elif isinstance(value, str):
        _set_any(target, str(value), depth)
    elif isinstance(value, bool):
        target.bool_value = bool(value)
    elif isinstance(value, int):
        _set_any(target, int(value), depth)
    elif isinstance(value, float):
        target.double_value = float(value)
    elif depth >= MAX_DEPTH:
        target.string_value = _text(encode_json(value).decode("utf-8"))
    elif isinstance(value, (list, tuple)):
        values = target.array_value.values
        if not value:
            target.array_value.SetInParent()
        for item in value:
            _set_any(values.add(), item, depth + 1)
    elif isinstance(value, dict):
        pairs = target.kvlist_value.values
        if not value:
            target.kvlist_value.SetInParent()
        for key, item in value.items():
            pair = pairs.add()
            pair.key = _text(str(key))
            _set_any(pair.value, item, depth + 1)
    else:
        target.string_value = _text(str(value))


def _fill(container: Any, items: list[tuple[str, Any]]) -> None:
    add = container.add
    for key, value in items:
        pair = add()
        try:
            pair.key = key
        except ValueError:
            pair.key = _text(key)
        _set_any(pair.value, value, 0)


def to_protobuf(groups: list[Group]) -> bytes:
    """The groups as a binary ``ExportTraceServiceRequest``; needs ``opentelemetry-proto``."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    version = sdk_version()
    request = ExportTraceServiceRequest()
    for resource, spans in groups:
        resource_spans = request.resource_spans.add()
        _fill(resource_spans.resource.attributes, resource)
        scope_spans = resource_spans.scope_spans.add()
        scope_spans.scope.name = SCOPE_NAME
        scope_spans.scope.version = version
        add = scope_spans.spans.add
        for (
            trace_id,
            span_id,
            parent_id,
            name,
            kind,
            start_ns,
            end_ns,
            flags,
            trace_state,
            attributes,
            events,
            status_code,
            status_message,
        ) in spans:
            try:
                span = add(
                    trace_id=trace_id,
                    span_id=span_id,
                    parent_span_id=parent_id,
                    name=name,
                    kind=kind,
                    start_time_unix_nano=start_ns,
                    end_time_unix_nano=end_ns,
                    flags=flags,
                    trace_state=trace_state,
                )
            except ValueError:
                # A name that is not valid UTF-8 (a lone surrogate); nothing was added.
                span = add(
                    trace_id=trace_id,
                    span_id=span_id,
                    parent_span_id=parent_id,
                    name=_text(name),
                    kind=kind,
                    start_time_unix_nano=start_ns,
                    end_time_unix_nano=end_ns,
                    flags=flags,
                    trace_state=_text(trace_state),
                )
            if attributes:
                _fill(span.attributes, attributes)
            for time_ns, event_name, items in events:
                event = span.events.add(time_unix_nano=time_ns, name=event_name)
                if items:
                    _fill(event.attributes, items)
            if status_code:
                span.status.code = status_code  # type: ignore[assignment]
                if status_message:
                    span.status.message = _text(status_message)
    return request.SerializeToString()
