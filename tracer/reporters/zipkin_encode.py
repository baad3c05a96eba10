"""Span records as Zipkin v2 JSON (``POST /api/v2/spans``), which Zipkin, Jaeger's collector
(its Zipkin port) and Grafana Tempo (its Zipkin receiver) accept.

Each record becomes one span of the ``ListOfSpans`` that openzipkin/zipkin-api's
``zipkin2-api.yaml`` defines:

* ``traceId`` (32 hex), ``id``, ``parentId`` (absent at the root); ``kind`` ``SERVER`` or
  ``CLIENT`` (absent for an internal span, as Zipkin has it for local spans; a websocket
  connection is ``SERVER`` with the tag ``tracer.kind`` ``websocket``);
* ``name`` as the other formats name it (:func:`tracer.reporters.mapping.span_name`: the
  method and, on a server whose framework knows it, the route);
* ``timestamp`` and ``duration`` in microseconds, the duration at least 1 (Zipkin's rule);
* ``localEndpoint.serviceName``: the service; ``remoteEndpoint`` for a client span: the host it
  called (``ipv4``/``ipv6`` for an address, else ``serviceName``) and the port;
* ``tags``, all strings: a database call's ``db`` part (``db.system.name``, ``db.namespace``,
  ``db.operation.name``, ``db.collection.name``, ``db.query.text``; its ``server.address`` and
  ``server.port`` are the ``remoteEndpoint``), ``http.method``, ``http.path``, ``http.route``
  (when known), ``http.url`` (a client's, redacted), ``http.status_code``, ``error`` (the
  exception as ``Type: message``, a network error's message, or the status code of a failed
  response, by the same rules as the OTLP status), ``exception.stacktrace``,
  ``tracer.request_id``, the span's tags (other values as their JSON text; recorded request
  headers as ``http.request.header.<name>``);
* ``annotations``: each ``tracer.report()`` annotation, its dict as compact JSON text, at its
  time (identical ones once, as the schema wants them unique).

Records with unusable ids are left out (a Zipkin server refuses the whole list for one of them);
:func:`encode_spans` says how many. Nothing here imports tracer's other modules.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from tracer.encoding import encode_json
from tracer.reporters.mapping import outcome, route, span_name, split_url

__all__ = ["encode", "encode_spans", "span_json"]

_KINDS = {"server": "SERVER", "client": "CLIENT", "websocket": "SERVER"}
_remotes: dict[tuple[str, int | None], dict[str, Any]] = {}
_MAX_CACHED = 256


def _hex_id(value: Any, length: int) -> str | None:
    if not isinstance(value, str) or len(value) != length:
        return None
    try:
        if not any(bytes.fromhex(value)):
            return None
    except ValueError:
        return None
    return value.lower()


def _string(value: Any) -> str:
    if isinstance(value, str):
        return value
    return encode_json(value).decode("utf-8")


def _remote(host: str, port: int | None) -> dict[str, Any]:
    key = (host, port)
    endpoint = _remotes.get(key)
    if endpoint is None:
        endpoint = {}
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            endpoint["serviceName"] = host
        else:
            endpoint["ipv4" if address.version == 4 else "ipv6"] = str(address)
        if port:
            endpoint["port"] = port
        if len(_remotes) >= _MAX_CACHED:
            _remotes.clear()
        _remotes[key] = endpoint
    return dict(endpoint)


def span_json(record: dict[str, Any], service: Any) -> dict[str, Any] | None:
    """One record as a Zipkin v2 span, or None when its ids are unusable."""
    trace_id = _hex_id(record.get("trace_id"), 32)
    span_id = _hex_id(record.get("span_id"), 16)
    if trace_id is None or span_id is None:
        return None
    parent = record.get("parent_id")
    parent_id = None if parent is None else _hex_id(parent, 16)
    if parent is not None and parent_id is None:
        return None
    span: dict[str, Any] = {"traceId": trace_id, "id": span_id}
    if parent_id is not None:
        span["parentId"] = parent_id
    kind = record.get("kind")
    zipkin_kind = _KINDS.get(kind) if isinstance(kind, str) else None
    if zipkin_kind is not None:
        span["kind"] = zipkin_kind
    span["name"] = span_name(record)
    start = record.get("start_us")
    if isinstance(start, int) and not isinstance(start, bool) and start > 0:
        span["timestamp"] = start
    duration = record.get("duration_us")
    if not isinstance(duration, int) or isinstance(duration, bool):
        duration = 0
    span["duration"] = max(1, duration)
    name = record.get("service") or service
    span["localEndpoint"] = {"serviceName": str(name or "unknown")}

    # Zipkin has no kind for a websocket connection: it goes as SERVER, and the tag keeps it apart.
    tags: dict[str, str] = {"tracer.kind": "websocket"} if kind == "websocket" else {}
    http = record.get("http")
    if isinstance(http, dict):
        method = http.get("method")
        if isinstance(method, str) and method:
            tags["http.method"] = method
        path = http.get("path")
        if isinstance(path, str) and path:
            tags["http.path"] = path
        matched = route(record, http)
        if matched is not None:
            tags["http.route"] = matched
        url = http.get("url")
        if kind == "client" and isinstance(url, str) and url:
            tags["http.url"] = url
            parsed = split_url(url)
            if parsed is not None:
                span["remoteEndpoint"] = _remote(parsed[1], parsed[2])
        status = http.get("status_code")
        if isinstance(status, int) and not isinstance(status, bool):
            tags["http.status_code"] = str(int(status))
    db = record.get("db")
    if isinstance(db, dict):
        for key, value in db.items():
            if isinstance(key, str) and value is not None and key != "error.type":
                tags[key] = value if isinstance(value, str) else _string(value)
        address = db.get("server.address")
        if kind == "client" and isinstance(address, str) and address:
            port = db.get("server.port")
            span["remoteEndpoint"] = _remote(address, port if isinstance(port, int) else None)
    failed, error_type, message = outcome(record)
    if failed:
        tags["error"] = message or error_type or "error"
    error = record.get("error")
    if isinstance(error, dict):
        stack = error.get("stack")
        if isinstance(stack, str) and stack:
            tags["exception.stacktrace"] = stack
    request_id = record.get("request_id")
    if isinstance(request_id, str) and request_id:
        tags["tracer.request_id"] = request_id
    user_tags = record.get("tags")
    if isinstance(user_tags, dict):
        for key, value in user_tags.items():
            if key == "http.request_headers" and isinstance(value, dict):
                for header, text in value.items():
                    tags[f"http.request.header.{header}"] = _string(text)
            elif isinstance(key, str) and key not in tags and value is not None:
                tags[key] = _string(value)
    if tags:
        span["tags"] = tags

    annotations = record.get("annotations")
    if isinstance(annotations, list) and annotations:
        out: list[dict[str, Any]] = []
        seen: set[tuple[int, str]] = set()
        for annotation in annotations:
            if not isinstance(annotation, dict):
                continue
            at = annotation.get("time_us")
            if not isinstance(at, int) or isinstance(at, bool):
                continue
            value = _string(annotation.get("data"))
            if (at, value) in seen:
                continue
            seen.add((at, value))
            out.append({"timestamp": at, "value": value})
        if out:
            span["annotations"] = out
    return span


def encode_spans(batch: Mapping[str, Any]) -> tuple[list[dict[str, Any]], int]:
    """The batch's records as Zipkin spans, and how many records were left out."""
    records = batch.get("spans")
    if not isinstance(records, list):
        return [], 0
    service = batch.get("service")
    spans: list[dict[str, Any]] = []
    skipped = 0
    for record in records:
        span = span_json(record, service) if isinstance(record, dict) else None
        if span is None:
            skipped += 1
        else:
            spans.append(span)
    return spans, skipped


def encode(batch: Mapping[str, Any]) -> bytes | None:
    """The request body for a batch (a JSON array of spans), or None when it has no span."""
    spans, _ = encode_spans(batch)
    if not spans:
        return None
    return encode_json(spans)
