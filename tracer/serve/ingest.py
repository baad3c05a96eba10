"""The receivers' decoders: one request body in, one :class:`~tracer.serve.model.Decoded` out.

Four bodies are understood, each by one function of the same signature
(``decode_*(body, content_type) -> Decoded``; the body already un-gzipped):

* :func:`decode_otlp_traces`: an OTLP ``ExportTraceServiceRequest`` (``POST /v1/traces``),
  binary protobuf (``application/x-protobuf``, read with the ``opentelemetry-proto`` classes of
  the ``otlp`` extra, imported only when such a body comes) or OTLP/JSON (``application/json``,
  read by hand: ids in hex, enums as integers or names, 64-bit integers as strings or numbers,
  lowerCamelCase field names, snake_case accepted too).
* :func:`decode_otlp_metrics`: an ``ExportMetricsServiceRequest`` (``POST /v1/metrics``): the
  request-duration histograms and the memory gauges, everything else skipped.
* :func:`decode_zipkin`: Zipkin v2 JSON, the list of spans of ``POST /api/v2/spans``.
* :func:`decode_tracer`: tracer's own batches (``POST /api/v1/batches``), one batch dict or a
  list of them as tracer's HTTP reporter POSTs them: ``spans``, ``metrics``, ``memory`` and
  ``profile`` batches.

Every span becomes tracer's span record (docs/reporters.md, "The span record") with ``source``
(``"tracer"``, ``"otlp"``, ``"zipkin"``) and ``attributes`` (str -> str: what no field of the
record holds). A span another tracer sent keeps its attributes there, less the ones a field
took (``http``, ``db``); its ``events`` are empty (only tracer records Dapper's four), its
non-``exception`` span events (Zipkin annotations) are its ``annotations``, and resource
attributes other than ``service.name``, ``host.name`` and ``process.pid`` are not kept.

A span that tracer itself sent through its OTLP reporter (resource ``telemetry.sdk.name`` and
scope both ``tracer``) or its Zipkin reporter (the tag ``tracer.request_id``) is mapped back to
the record it had, read off the encoders (:mod:`tracer.reporters.otlp_encode`,
:mod:`tracer.reporters.zipkin_encode`): the four events again (they are the span's start and
end), ``http`` from its attributes or tags, ``error`` from the ``exception`` event (or Zipkin's
``error`` and ``exception.stacktrace`` tags), ``db`` from the ``db.*`` and ``server.*``
attributes, ``request_id`` from ``tracer.request_id``, ``tracer.report`` events as its
annotations, the rest as its ``tags``. What those encodings cannot bring back:

* ``must_collect`` (neither carries it: always False);
* a server span's name when the framework gave no route (the encodings name it by its method
  alone, and so does the record of most frameworks, but ``http.server`` names it by its path);
  a client span's name is rebuilt from its method and URL as tracer builds it;
* a server URL's explicit default port (``http://h:80/`` comes back as ``http://h/``);
* an annotation whose data was not a dict (it comes back as ``{"data": value}``);
* an exception with an empty message comes back with ``""``;
* through Zipkin: ``host`` and ``pid`` (Zipkin has no place for them: ``""`` and 0), a server's
  URL (null), the type of a tag's value (every tag is a string), a zero duration (Zipkin's is at
  least 1), ``sampled`` (True), ``tracestate`` (null), and the annotations' order and
  duplicates (Zipkin keeps each distinct one once).

Bounds: at most :data:`MAX_SPANS` spans in one body (more is refused), strings longer than
:data:`MAX_STRING` characters are cut there, at most :data:`MAX_ATTRIBUTES` attributes (or tags)
and :data:`MAX_EVENTS` events or annotations per span are kept (the first ones), nested
attribute values deeper than :data:`MAX_DEPTH` become their JSON text.

Anything malformed raises :class:`~tracer.serve.model.IngestError` whose reason names the field
and what was wrong; no other exception comes out of a decoder, whatever the bytes. A protobuf
body without the ``otlp`` extra raises :class:`UnsupportedContent` (an IngestError: the server
answers it 415), as does a content type the receiver does not take.
"""

from __future__ import annotations

import base64
import importlib
import json
import math
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from tracer.serve.model import Decoded, HistogramPoint, IngestError, LeakEvent, MemoryPoint

__all__ = [
    "MAX_ATTRIBUTES",
    "MAX_DEPTH",
    "MAX_EVENTS",
    "MAX_SPANS",
    "MAX_STRING",
    "UnsupportedContent",
    "decode_otlp_metrics",
    "decode_otlp_traces",
    "decode_tracer",
    "decode_zipkin",
    "protobuf_available",
]

#: Spans one body may hold; a body with more is refused whole.
MAX_SPANS = 1_000_000
#: Characters a string (name, attribute value, statement, stack) keeps.
MAX_STRING = 64 * 1024
#: Attributes (OTLP) or tags (Zipkin) kept per span, and per event.
MAX_ATTRIBUTES = 128
#: Span events (OTLP) or annotations (Zipkin) kept per span.
MAX_EVENTS = 128
#: Nesting of array and kvlist attribute values kept; deeper ones become their JSON text.
MAX_DEPTH = 8

_PROTOBUF = frozenset(("application/x-protobuf", "application/protobuf"))
_JSON = "application/json"
_KINDS = {0: "internal", 1: "internal", 2: "server", 3: "client", 4: "internal", 5: "internal"}
_OTEL_KINDS = {4: "producer", 5: "consumer"}
_KIND_NAMES = {
    "SPAN_KIND_UNSPECIFIED": 0,
    "SPAN_KIND_INTERNAL": 1,
    "SPAN_KIND_SERVER": 2,
    "SPAN_KIND_CLIENT": 3,
    "SPAN_KIND_PRODUCER": 4,
    "SPAN_KIND_CONSUMER": 5,
}
_STATUS_NAMES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}
_TEMPORALITY_NAMES = {
    "AGGREGATION_TEMPORALITY_UNSPECIFIED": 0,
    "AGGREGATION_TEMPORALITY_DELTA": 1,
    "AGGREGATION_TEMPORALITY_CUMULATIVE": 2,
}
_DELTA = 1
_STATUS_ERROR = 2
_FLAG_SAMPLED = 0x01
_DEFAULT_PORTS = {"http": 80, "https": 443}
_EVENT_TYPES = {"server": ("sr", "ss"), "client": ("cs", "cr"), "websocket": ("sr", "ss")}
_TRACER_KINDS = frozenset(("server", "client", "internal", "websocket"))
_HEADER_PREFIX = "http.request.header."
#: Older database attribute names (semantic conventions before 1.26) and their stable names.
_DB_RENAMES = {
    "db.system": "db.system.name",
    "db.statement": "db.query.text",
    "db.name": "db.namespace",
    "db.operation": "db.operation.name",
    "db.sql.table": "db.collection.name",
}
#: The request-duration histograms: OTLP name -> (kind, seconds per unit of the default unit).
_HISTOGRAMS = {
    "http.server.request.duration": ("server", 1.0),
    "http.client.request.duration": ("client", 1.0),
    "http.server.duration": ("server", 0.001),
    "http.client.duration": ("client", 0.001),
}
_UNIT_SECONDS = {"s": 1.0, "ms": 0.001, "us": 1e-6, "\u00b5s": 1e-6, "ns": 1e-9}
_MEMORY_GAUGES = frozenset(("process.memory.usage", "process_resident_memory_bytes"))
#: tracer's Prometheus histogram families (metrics batches' ``cumulative`` part).
_PROM_HISTOGRAMS = {
    "http_server_request_duration_seconds": "server",
    "http_client_request_duration_seconds": "client",
}


class UnsupportedContent(IngestError):
    """A body in a content type this receiver cannot read (a protobuf body without the
    ``otlp`` extra among them): the server answers it 415 rather than 400."""


def protobuf_available() -> bool:
    """Whether OTLP protobuf bodies can be read (the ``otlp`` extra's ``opentelemetry-proto``)."""
    try:
        importlib.import_module("opentelemetry.proto.collector.trace.v1.trace_service_pb2")
        importlib.import_module("opentelemetry.proto.collector.metrics.v1.metrics_service_pb2")
    except ImportError:
        return False
    return True


# -- common ----------------------------------------------------------------------------------


def _media(content_type: str) -> str:
    if not isinstance(content_type, str):
        return ""
    return content_type.partition(";")[0].strip().lower()


def _guarded(what: str, run: Callable[[], Decoded]) -> Decoded:
    """``run()``, with any failure of a malformed body turned into an IngestError."""
    try:
        return run()
    except IngestError:
        raise
    except RecursionError:
        raise IngestError(f"{what}: values nested too deeply") from None
    except MemoryError:
        raise IngestError(f"{what}: too large to decode") from None
    except Exception as exc:  # a malformed body must never crash a receiver
        raise IngestError(f"{what}: malformed body ({type(exc).__name__})") from None


def _load_json(body: bytes, what: str) -> Any:
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise IngestError(f"{what}: the body is not bytes")
    try:
        # JSON on the wire is UTF-8 (RFC 8259); json.loads alone would guess UTF-16 and -32 too.
        return json.loads(bytes(body).decode("utf-8"))
    except RecursionError:
        raise IngestError(f"{what}: JSON nested too deeply") from None
    except UnicodeDecodeError:
        raise IngestError(f"{what}: the body is not UTF-8 JSON") from None
    except ValueError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else "invalid"
        raise IngestError(f"{what}: not JSON ({reason})") from None


def _cap(text: str) -> str:
    return text if len(text) <= MAX_STRING else text[:MAX_STRING]


def _text_of(value: Any) -> str:
    """An attribute value as the string ``attributes`` holds."""
    if isinstance(value, str):
        return value
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, (int, float)):
        return str(value)
    if value is None:
        return ""
    return _cap(json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str))


def _hex_id(value: Any, length: int, field: str) -> str:
    """A hex id of ``length`` digits, lowercased; IngestError when it is not one."""
    if not isinstance(value, str) or len(value) != length:
        shown = repr(value)[:40]
        raise IngestError(f"{field} must be {length} hex digits, got {shown}")
    lowered = value.lower()
    if lowered.strip("0123456789abcdef"):
        raise IngestError(f"{field} must be {length} hex digits, got {value[:40]!r}")
    if not lowered.strip("0"):
        raise IngestError(f"{field} is all zeros")
    return lowered


def _bytes_id(value: bytes, size: int, field: str) -> str:
    if len(value) != size:
        raise IngestError(f"{field} must be {size} bytes, got {len(value)}")
    if not any(value):
        raise IngestError(f"{field} is all zeros")
    return value.hex()


def _int(value: Any, field: str) -> int:
    """An integer given as a JSON number or a decimal string (OTLP/JSON's int64)."""
    if isinstance(value, bool):
        raise IngestError(f"{field} must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit() and len(value) <= 24:
        return int(value)
    raise IngestError(f"{field} must be an integer, got {repr(value)[:40]}")


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool):
        raise IngestError(f"{field} must be a number, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        spelled = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}.get(value)
        if spelled is not None:
            return spelled
        try:
            return float(value)
        except ValueError:
            pass
    raise IngestError(f"{field} must be a number, got {repr(value)[:40]}")


def _enum(value: Any, names: dict[str, int], field: str) -> int:
    if isinstance(value, str) and value in names:
        return names[value]
    if value is None:
        return 0
    try:
        return _int(value, field)
    except IngestError:
        shown = repr(value)[:40]
        raise IngestError(f"{field} must be an integer or one of its names, got {shown}") from None


def _get(node: dict[str, Any], camel: str, snake: str) -> Any:
    value = node.get(camel)
    return node.get(snake) if value is None else value


def _dict(value: Any, field: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise IngestError(f"{field} must be an object, got {type(value).__name__}")
    return value


def _list(value: Any, field: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise IngestError(f"{field} must be a list, got {type(value).__name__}")
    return value


def _str(value: Any, field: str, default: str = "") -> str:
    if value is None:
        return default
    if not isinstance(value, str):
        raise IngestError(f"{field} must be a string, got {type(value).__name__}")
    return _cap(value)


def _us(ns: int) -> int:
    return ns // 1000


# -- OTLP spans: one mapping for both encodings ------------------------------------------------

#: One span, read from either encoding: ``(trace_id, span_id, parent_id, name, kind, start_ns,
#: end_ns, flags, trace_state, attributes, events, status_code, status_message)``; ids hex
#: (parent "" for none), events ``[(time_ns, name, attributes)]``.
_Span = tuple[
    str,
    str,
    str,
    str,
    int,
    int,
    int,
    int,
    str,
    dict[str, Any],
    list[tuple[int, str, dict[str, Any]]],
    int,
    str,
]


def _status_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit() and len(value) <= 4:
        return int(value)
    return None


def _http_foreign(attributes: dict[str, Any]) -> dict[str, Any] | None:
    method = attributes.pop("http.request.method", None)
    if method is None:
        method = attributes.pop("http.method", None)
    original = attributes.pop("http.request.method_original", None)
    if method == "_OTHER" and isinstance(original, str):
        method = original
    url = attributes.pop("url.full", None)
    if url is None:
        url = attributes.pop("http.url", None)
    path = attributes.pop("url.path", None)
    if path is None:
        target = attributes.pop("http.target", None)
        if isinstance(target, str):
            path = target.partition("?")[0]
    status = attributes.pop("http.response.status_code", None)
    if status is None:
        status = attributes.pop("http.status_code", None)
    route = attributes.pop("http.route", None)
    if method is None and status is None and url is None and route is None:
        return None
    if path is None and isinstance(url, str):
        try:
            path = urlsplit(url).path or None
        except ValueError:
            path = None
    return {
        "method": None if method is None else _text_of(method),
        "url": None if url is None else _text_of(url),
        "path": None if path is None else _text_of(path),
        "status_code": _status_int(status),
        "route": None if route is None else _text_of(route),
    }


def _db_part(attributes: dict[str, Any]) -> dict[str, Any] | None:
    if "db.system.name" not in attributes and "db.system" not in attributes:
        return None
    db: dict[str, Any] = {}
    for key in [k for k in attributes if k.startswith("db.")]:
        db[_DB_RENAMES.get(key, key)] = attributes.pop(key)
    for key in ("server.address", "server.port"):
        if key in attributes:
            db[key] = attributes.pop(key)
    port = db.get("server.port")
    if port is not None and not isinstance(port, int):
        parsed = _status_int(port)
        db["server.port"] = port if parsed is None else parsed
    return db


def _exception(events: list[tuple[int, str, dict[str, Any]]]) -> dict[str, Any] | None:
    for _, name, items in events:
        if name == "exception":
            stack = items.get("exception.stacktrace")
            message = items.get("exception.message")
            return {
                "type": _text_of(items.get("exception.type") or "Exception"),
                "message": "" if message is None else _text_of(message),
                "stack": None if stack is None else _text_of(stack),
            }
    return None


def _foreign_record(
    span: _Span, service: str, host: str, pid: int, source: str = "otlp"
) -> dict[str, Any]:
    (
        trace_id,
        span_id,
        parent_id,
        name,
        kind,
        start_ns,
        end_ns,
        _flags,
        state,
        attributes,
        events,
        status_code,
        status_message,
    ) = span
    kind_name = _KINDS[kind]
    otel_kind = _OTEL_KINDS.get(kind)
    http = _http_foreign(attributes)
    db = _db_part(attributes)
    error = None
    annotations = []
    for time_ns, event_name, items in events:
        if event_name == "exception":
            continue
        data: dict[str, Any] = {"name": event_name}
        if items:
            data["attributes"] = items
        annotations.append({"time_us": _us(time_ns), "data": data})
    if status_code == _STATUS_ERROR:
        error = _exception(events) or {
            "type": _text_of(attributes.get("error.type") or "error"),
            "message": status_message,
            "stack": None,
        }
    else:
        # A recorded exception on a span that did not fail stays visible as an annotation.
        for time_ns, event_name, items in events:
            if event_name == "exception":
                annotations.append(
                    {"time_us": _us(time_ns), "data": {"name": event_name, "attributes": items}}
                )
    texts = {key: _text_of(value) for key, value in attributes.items()}
    if otel_kind is not None:
        texts["otel.kind"] = otel_kind
    record: dict[str, Any] = {
        "trace_id": trace_id,
        "request_id": None,
        "span_id": span_id,
        "parent_id": parent_id or None,
        "kind": kind_name,
        "name": name,
        "service": service,
        "host": host,
        "pid": pid,
        "start_us": _us(start_ns),
        "duration_us": max(0, _us(end_ns) - _us(start_ns)),
        "events": [],
        "http": http,
        "error": error,
        "annotations": annotations,
        "tags": {},
        # A span that was exported was sampled; SDKs do not all set the flag's bit.
        "sampled": True,
        "must_collect": False,
        "tracestate": state or None,
        "source": source,
        "attributes": texts,
    }
    if db is not None:
        record["db"] = db
    return record


def _dapper_events(kind: str, start_us: int, duration_us: int) -> list[dict[str, Any]]:
    types = _EVENT_TYPES.get(kind)
    if types is None:
        return []
    return [
        {"type": types[0], "time_us": start_us},
        {"type": types[1], "time_us": start_us + duration_us},
    ]


def _client_name(method: str, url: str) -> tuple[str, str] | None:
    """``(name, path)`` of a client span as tracer's runtime builds them from its URL."""
    try:
        parts = urlsplit(url)
        hostname = parts.hostname or ""
        port = parts.port
    except ValueError:
        return None
    path = parts.path or "/"
    where = hostname if port is None else f"{hostname}:{port}"
    return f"{method} {where}{path}", path


def _server_url(attributes: dict[str, Any], path: Any) -> str | None:
    scheme = attributes.pop("url.scheme", None)
    query = attributes.pop("url.query", None)
    address = attributes.get("server.address")
    port = attributes.get("server.port")
    if not isinstance(scheme, str) or not isinstance(address, str):
        return None
    attributes.pop("server.address", None)
    attributes.pop("server.port", None)
    host = f"[{address}]" if ":" in address else address
    if isinstance(port, int) and port != _DEFAULT_PORTS.get(scheme):
        host = f"{host}:{port}"
    url = f"{scheme}://{host}{path if isinstance(path, str) else ''}"
    if isinstance(query, str) and query:
        url = f"{url}?{query}"
    return url


def _tracer_tags(attributes: dict[str, Any]) -> dict[str, Any]:
    tags: dict[str, Any] = {}
    headers: dict[str, Any] = {}
    for key, value in attributes.items():
        if key.startswith(_HEADER_PREFIX):
            headers[key[len(_HEADER_PREFIX) :]] = (
                value[0] if isinstance(value, list) and len(value) == 1 else value
            )
        else:
            tags[key] = value
    if headers:
        tags["http.request_headers"] = headers
    return tags


def _tracer_record(span: _Span, service: str, host: str, pid: int) -> dict[str, Any]:
    """A span tracer's OTLP encoder made, mapped back to its record (see the module)."""
    (
        trace_id,
        span_id,
        parent_id,
        name,
        kind,
        start_ns,
        end_ns,
        flags,
        state,
        attributes,
        events,
        _,
        _,
    ) = span
    kind_name = _KINDS[kind]
    if kind_name == "server" and attributes.get("tracer.kind") == "websocket":
        del attributes["tracer.kind"]
        kind_name = "websocket"
    start_us = _us(start_ns)
    duration_us = max(0, _us(end_ns) - start_us)
    request_id = attributes.pop("tracer.request_id", None)
    http: dict[str, Any] | None = None
    method = attributes.pop("http.request.method", None)
    original = attributes.pop("http.request.method_original", None)
    if method == "_OTHER" and original is not None:
        method = original
    status = attributes.pop("http.response.status_code", None)
    if method is not None or status is not None:
        route = attributes.pop("http.route", None)
        if kind_name == "client":
            url = attributes.pop("url.full", None)
            attributes.pop("server.address", None)
            attributes.pop("server.port", None)
            path = None
            if isinstance(url, str) and isinstance(method, str):
                built = _client_name(method, url)
                if built is not None:
                    name, path = built
        else:
            path = attributes.pop("url.path", None)
            url = _server_url(attributes, path)
        http = {
            "method": method,
            "url": url,
            "path": path,
            "status_code": _status_int(status),
            "route": route,
        }
    db = None
    if "db.system.name" in attributes:
        db = {key: attributes.pop(key) for key in [k for k in attributes if k.startswith("db.")]}
        for key in ("server.address", "server.port"):
            if key in attributes:
                db[key] = attributes.pop(key)
    error = _exception(events)
    attributes.pop("error.type", None)
    if error is not None:
        if error["type"] == "network-error":
            pass
        elif http is not None and http["status_code"] is None and kind_name == "client":
            # A call that got no answer: the encoder split its network error's message.
            text = error["message"]
            error["message"] = f"{error['type']}: {text}" if text else error["type"]
            error["type"] = "network-error"
        if db is not None:
            db["error.type"] = error["type"] or "_OTHER"
    annotations = []
    for time_ns, event_name, items in events:
        if event_name == "tracer.report":
            annotations.append({"time_us": _us(time_ns), "data": items})
    record: dict[str, Any] = {
        "trace_id": trace_id,
        "request_id": None if request_id is None else _text_of(request_id),
        "span_id": span_id,
        "parent_id": parent_id or None,
        "kind": kind_name,
        "name": name,
        "service": service,
        "host": host,
        "pid": pid,
        "start_us": start_us,
        "duration_us": duration_us,
        "events": _dapper_events(kind_name, start_us, duration_us),
        "http": http,
        "error": error,
        "annotations": annotations,
        "tags": _tracer_tags(attributes),
        "sampled": bool(flags & _FLAG_SAMPLED),
        "must_collect": False,
        "tracestate": state or None,
        "source": "otlp",
        "attributes": {},
    }
    if db is not None:
        record["db"] = db
    return record


def _resource_fields(attributes: dict[str, Any]) -> tuple[str, str, int, bool]:
    service = attributes.get("service.name")
    host = attributes.get("host.name")
    pid = attributes.get("process.pid")
    return (
        _text_of(service) if service is not None else "unknown_service",
        _text_of(host) if host is not None else "",
        pid if isinstance(pid, int) and not isinstance(pid, bool) else 0,
        attributes.get("telemetry.sdk.name") == "tracer",
    )


# -- OTLP protobuf ---------------------------------------------------------------------------


def _pb_any(value: Any, depth: int) -> Any:
    which = value.WhichOneof("value")
    if which == "string_value":
        return _cap(value.string_value)
    if which == "int_value":
        return value.int_value
    if which == "bool_value":
        return value.bool_value
    if which == "double_value":
        return value.double_value
    if which == "bytes_value":
        return base64.b64encode(value.bytes_value[:MAX_STRING]).decode("ascii")
    if which == "array_value":
        items = [_pb_any(v, depth + 1) for v in value.array_value.values[:MAX_ATTRIBUTES]]
        return _too_deep(items) if depth >= MAX_DEPTH else items
    if which == "kvlist_value":
        pairs = {
            _cap(kv.key): _pb_any(kv.value, depth + 1)
            for kv in value.kvlist_value.values[:MAX_ATTRIBUTES]
        }
        return _too_deep(pairs) if depth >= MAX_DEPTH else pairs
    return None


def _too_deep(value: Any) -> str:
    return _cap(json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str))


def _pb_attributes(pairs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in pairs[:MAX_ATTRIBUTES] if len(pairs) > MAX_ATTRIBUTES else pairs:
        value = kv.value
        which = value.WhichOneof("value")
        # The common scalar cases inline: this runs for every attribute of every span.
        if which == "string_value":
            text = value.string_value
            out[kv.key] = text if len(text) <= MAX_STRING else text[:MAX_STRING]
        elif which == "int_value":
            out[kv.key] = value.int_value
        else:
            out[kv.key] = _pb_any(value, 0)
    return out


def _parse_pb(message: Any, body: bytes, what: str) -> Any:
    from google.protobuf.message import DecodeError

    try:
        message.ParseFromString(bytes(body))
    except (DecodeError, ValueError, RuntimeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else "does not parse"
        raise IngestError(f"{what}: not a protobuf message ({reason[:120]})") from None
    return message


def _import_pb(module: str, name: str) -> Any:
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError:
        raise UnsupportedContent(
            "OTLP protobuf needs the otlp extra (pip install 'dapper-tracer[otlp]'); "
            "send application/json instead"
        ) from None


def _traces_pb(body: bytes) -> Decoded:
    request_class = _import_pb(
        "opentelemetry.proto.collector.trace.v1.trace_service_pb2", "ExportTraceServiceRequest"
    )
    request = _parse_pb(request_class(), body, "ExportTraceServiceRequest")
    out: list[dict[str, Any]] = []
    for r_index, resource_spans in enumerate(request.resource_spans):
        resource = _pb_attributes(resource_spans.resource.attributes)
        service, host, pid, ours = _resource_fields(resource)
        for scope_spans in resource_spans.scope_spans:
            mine = ours and scope_spans.scope.name == "tracer"
            build = _tracer_record if mine else _foreign_record
            if len(out) + len(scope_spans.spans) > MAX_SPANS:
                raise IngestError(f"more than {MAX_SPANS:,} spans in one body")
            for s_index, span in enumerate(scope_spans.spans):
                where = f"resourceSpans[{r_index}] span {s_index}"
                kind = span.kind
                if kind not in _KINDS:
                    raise IngestError(f"{where}: kind {kind} is not an OTLP SpanKind")
                parent = span.parent_span_id
                events = [
                    (event.time_unix_nano, _cap(event.name), _pb_attributes(event.attributes))
                    for event in (
                        span.events[:MAX_EVENTS] if len(span.events) > MAX_EVENTS else span.events
                    )
                ]
                name = span.name
                parts: _Span = (
                    _bytes_id(span.trace_id, 16, f"{where}: traceId"),
                    _bytes_id(span.span_id, 8, f"{where}: spanId"),
                    _bytes_id(parent, 8, f"{where}: parentSpanId") if parent else "",
                    name if len(name) <= MAX_STRING else name[:MAX_STRING],
                    kind,
                    span.start_time_unix_nano,
                    span.end_time_unix_nano,
                    span.flags,
                    _cap(span.trace_state),
                    _pb_attributes(span.attributes),
                    events,
                    span.status.code,
                    _cap(span.status.message),
                )
                out.append(build(parts, service, host, pid))
    return Decoded(spans=out)


# -- OTLP JSON -------------------------------------------------------------------------------


def _json_any(value: Any, field: str, depth: int) -> Any:
    if not isinstance(value, dict):
        raise IngestError(f"{field} must be an AnyValue object, got {type(value).__name__}")
    for key, item in value.items():
        if key in ("stringValue", "string_value"):
            return _str(item, field)
        if key in ("intValue", "int_value"):
            return _int(item, field)
        if key in ("boolValue", "bool_value"):
            if not isinstance(item, bool):
                raise IngestError(f"{field}: boolValue must be true or false")
            return item
        if key in ("doubleValue", "double_value"):
            return _number(item, field)
        if key in ("bytesValue", "bytes_value"):
            return _str(item, field)
        if key in ("arrayValue", "array_value"):
            values = _list(_dict(item, field).get("values"), f"{field}.arrayValue.values")
            items = [_json_any(v, field, depth + 1) for v in values[:MAX_ATTRIBUTES]]
            return _too_deep(items) if depth >= MAX_DEPTH else items
        if key in ("kvlistValue", "kvlist_value"):
            values = _list(_dict(item, field).get("values"), f"{field}.kvlistValue.values")
            pairs = _json_attributes(values, field, depth + 1)
            return _too_deep(pairs) if depth >= MAX_DEPTH else pairs
    return None


def _json_attributes(items: Any, field: str, depth: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for index, pair in enumerate(_list(items, field)[:MAX_ATTRIBUTES]):
        if not isinstance(pair, dict):
            raise IngestError(f"{field}[{index}] must be a {{key, value}} object")
        key = pair.get("key")
        if not isinstance(key, str):
            raise IngestError(f"{field}[{index}].key must be a string")
        value = pair.get("value")
        out[_cap(key)] = None if value is None else _json_any(value, f"{field}[{index}]", depth)
    return out


def _json_id(value: Any, length: int, field: str) -> str:
    return _hex_id(value, length, field)


def _json_span(span: Any, where: str) -> _Span:
    if not isinstance(span, dict):
        raise IngestError(f"{where} must be an object")
    trace_id = _json_id(_get(span, "traceId", "trace_id"), 32, f"{where}: traceId")
    span_id = _json_id(_get(span, "spanId", "span_id"), 16, f"{where}: spanId")
    parent = _get(span, "parentSpanId", "parent_span_id")
    parent_id = _json_id(parent, 16, f"{where}: parentSpanId") if parent else ""
    kind = _enum(span.get("kind"), _KIND_NAMES, f"{where}: kind")
    if kind not in _KINDS:
        raise IngestError(f"{where}: kind {kind} is not an OTLP SpanKind")
    start = _get(span, "startTimeUnixNano", "start_time_unix_nano")
    end = _get(span, "endTimeUnixNano", "end_time_unix_nano")
    start_ns = 0 if start is None else _int(start, f"{where}: startTimeUnixNano")
    end_ns = start_ns if end is None else _int(end, f"{where}: endTimeUnixNano")
    flags = span.get("flags")
    events = []
    for index, event in enumerate(_list(span.get("events"), f"{where}: events")[:MAX_EVENTS]):
        field = f"{where}: events[{index}]"
        if not isinstance(event, dict):
            raise IngestError(f"{field} must be an object")
        at = _get(event, "timeUnixNano", "time_unix_nano")
        events.append(
            (
                0 if at is None else _int(at, f"{field}.timeUnixNano"),
                _str(event.get("name"), f"{field}.name"),
                _json_attributes(event.get("attributes"), f"{field}.attributes"),
            )
        )
    status = _dict(span.get("status"), f"{where}: status")
    return (
        trace_id,
        span_id,
        parent_id,
        _str(span.get("name"), f"{where}: name"),
        kind,
        start_ns,
        end_ns,
        0 if flags is None else _int(flags, f"{where}: flags"),
        _str(_get(span, "traceState", "trace_state"), f"{where}: traceState"),
        _json_attributes(span.get("attributes"), f"{where}: attributes"),
        events,
        _enum(status.get("code"), _STATUS_NAMES, f"{where}: status.code"),
        _str(status.get("message"), f"{where}: status.message"),
    )


def _traces_json(body: bytes) -> Decoded:
    document = _dict(_load_json(body, "ExportTraceServiceRequest"), "ExportTraceServiceRequest")
    out: list[dict[str, Any]] = []
    resources = _list(_get(document, "resourceSpans", "resource_spans"), "resourceSpans")
    for r_index, resource_spans in enumerate(resources):
        where = f"resourceSpans[{r_index}]"
        node = _dict(resource_spans, where)
        resource = _dict(node.get("resource"), f"{where}.resource")
        attributes = _json_attributes(resource.get("attributes"), f"{where}.resource.attributes")
        service, host, pid, ours = _resource_fields(attributes)
        scopes = _get(node, "scopeSpans", "scope_spans")
        if scopes is None:
            scopes = _get(node, "instrumentationLibrarySpans", "instrumentation_library_spans")
        for c_index, scope_spans in enumerate(_list(scopes, f"{where}.scopeSpans")):
            field = f"{where}.scopeSpans[{c_index}]"
            scope_node = _dict(scope_spans, field)
            scope = _dict(scope_node.get("scope"), f"{field}.scope")
            mine = ours and scope.get("name") == "tracer"
            build = _tracer_record if mine else _foreign_record
            spans = _list(scope_node.get("spans"), f"{field}.spans")
            if len(out) + len(spans) > MAX_SPANS:
                raise IngestError(f"more than {MAX_SPANS:,} spans in one body")
            for s_index, span in enumerate(spans):
                parts = _json_span(span, f"{field}.spans[{s_index}]")
                out.append(build(parts, service, host, pid))
    return Decoded(spans=out)


def decode_otlp_traces(body: bytes, content_type: str) -> Decoded:
    """The spans of an OTLP ``ExportTraceServiceRequest`` (protobuf or JSON) as span records."""
    media = _media(content_type)
    if media in _PROTOBUF:
        return _guarded("ExportTraceServiceRequest", lambda: _traces_pb(body))
    if media == _JSON:
        return _guarded("ExportTraceServiceRequest", lambda: _traces_json(body))
    raise UnsupportedContent(
        f"content type {media or 'none'!r}: OTLP takes application/x-protobuf or application/json"
    )


# -- OTLP metrics ----------------------------------------------------------------------------

#: One histogram point, read from either encoding: ``(attributes, start_ns, time_ns, count,
#: sum, bucket_counts, bounds)``.
_HistPoint = tuple[dict[str, Any], int, int, int, float, list[int], list[float]]


def _histogram_point(
    kind: str,
    scale: float,
    temporality: int,
    point: _HistPoint,
    resource: tuple[str, str, int],
    where: str,
) -> HistogramPoint:
    attributes, start_ns, time_ns, count, total, counts, bounds = point
    if not counts:
        counts, bounds = [count], []
    if len(counts) != len(bounds) + 1:
        raise IngestError(
            f"{where}: {len(counts)} bucketCounts for {len(bounds)} explicitBounds "
            "(one more count than bounds expected)"
        )
    method = attributes.get("http.request.method", attributes.get("http.method"))
    route = attributes.get("http.route")
    status = attributes.get("http.response.status_code", attributes.get("http.status_code"))
    time_us = _us(time_ns)
    # A DELTA point counts only its own interval: its start is that interval's start, so the
    # store sees a series of one point for it (start_us = time_us - interval).
    start_us = _us(start_ns) if start_ns else time_us
    del temporality
    return {
        "service": resource[0],
        "host": resource[1],
        "pid": resource[2],
        "kind": kind,
        "method": "" if method is None else _text_of(method),
        "route": "" if route is None else _text_of(route),
        "status_code": _status_int(status) or 0,
        "start_us": start_us,
        "time_us": time_us,
        "count": count,
        "sum_s": total * scale,
        "bounds": [b * scale for b in bounds],
        "bucket_counts": counts,
    }


def _memory_point(resource: tuple[str, str, int], time_ns: int, value: float) -> MemoryPoint:
    return {
        "service": resource[0],
        "host": resource[1],
        "pid": resource[2],
        "time_us": _us(time_ns),
        "rss_bytes": int(value) if math.isfinite(value) else None,
        "heap_blocks": None,
    }


def _scale(name: str, unit: str) -> float:
    default = _HISTOGRAMS[name][1]
    return _UNIT_SECONDS.get(unit, default) if unit else default


def _metrics_pb(body: bytes) -> Decoded:
    request_class = _import_pb(
        "opentelemetry.proto.collector.metrics.v1.metrics_service_pb2",
        "ExportMetricsServiceRequest",
    )
    request = _parse_pb(request_class(), body, "ExportMetricsServiceRequest")
    out = Decoded()
    for r_index, resource_metrics in enumerate(request.resource_metrics):
        service, host, pid, _ = _resource_fields(
            _pb_attributes(resource_metrics.resource.attributes)
        )
        resource = (service, host, pid)
        for scope_metrics in resource_metrics.scope_metrics:
            for m_index, metric in enumerate(scope_metrics.metrics):
                where = f"resourceMetrics[{r_index}] metric {m_index} ({metric.name[:80]})"
                data = metric.WhichOneof("data")
                if metric.name in _HISTOGRAMS and data == "histogram":
                    kind = _HISTOGRAMS[metric.name][0]
                    scale = _scale(metric.name, metric.unit)
                    temporality = metric.histogram.aggregation_temporality
                    for point in metric.histogram.data_points:
                        out.histograms.append(
                            _histogram_point(
                                kind,
                                scale,
                                temporality,
                                (
                                    _pb_attributes(point.attributes),
                                    point.start_time_unix_nano,
                                    point.time_unix_nano,
                                    point.count,
                                    point.sum,
                                    list(point.bucket_counts),
                                    list(point.explicit_bounds),
                                ),
                                resource,
                                where,
                            )
                        )
                elif metric.name in _MEMORY_GAUGES and data in ("gauge", "sum"):
                    points = getattr(metric, data).data_points
                    for number in points:
                        which = number.WhichOneof("value")
                        if which is None:
                            continue
                        value = float(getattr(number, which))
                        out.memory.append(_memory_point(resource, number.time_unix_nano, value))
    return out


def _metrics_json(body: bytes) -> Decoded:
    what = "ExportMetricsServiceRequest"
    document = _dict(_load_json(body, what), what)
    out = Decoded()
    resources = _list(_get(document, "resourceMetrics", "resource_metrics"), "resourceMetrics")
    for r_index, resource_metrics in enumerate(resources):
        where = f"resourceMetrics[{r_index}]"
        node = _dict(resource_metrics, where)
        attributes = _json_attributes(
            _dict(node.get("resource"), f"{where}.resource").get("attributes"),
            f"{where}.resource.attributes",
        )
        service, host, pid, _ = _resource_fields(attributes)
        resource = (service, host, pid)
        scopes = _get(node, "scopeMetrics", "scope_metrics")
        if scopes is None:
            scopes = _get(node, "instrumentationLibraryMetrics", "instrumentation_library_metrics")
        for c_index, scope in enumerate(_list(scopes, f"{where}.scopeMetrics")):
            field = f"{where}.scopeMetrics[{c_index}]"
            metrics = _list(_dict(scope, field).get("metrics"), f"{field}.metrics")
            for m_index, metric in enumerate(metrics):
                _metric_json(metric, f"{field}.metrics[{m_index}]", resource, out)
    return out


def _metric_json(metric: Any, where: str, resource: tuple[str, str, int], out: Decoded) -> None:
    node = _dict(metric, where)
    name = _str(node.get("name"), f"{where}.name")
    unit = _str(node.get("unit"), f"{where}.unit")
    if name in _HISTOGRAMS and node.get("histogram") is not None:
        histogram = _dict(node.get("histogram"), f"{where}.histogram")
        temporality = _enum(
            _get(histogram, "aggregationTemporality", "aggregation_temporality"),
            _TEMPORALITY_NAMES,
            f"{where}.histogram.aggregationTemporality",
        )
        kind, _ = _HISTOGRAMS[name]
        scale = _scale(name, unit)
        points = _list(_get(histogram, "dataPoints", "data_points"), f"{where}.dataPoints")
        for p_index, point in enumerate(points):
            field = f"{where}.dataPoints[{p_index}]"
            p = _dict(point, field)
            start = _get(p, "startTimeUnixNano", "start_time_unix_nano")
            at = _get(p, "timeUnixNano", "time_unix_nano")
            counts = _list(_get(p, "bucketCounts", "bucket_counts"), f"{field}.bucketCounts")
            bounds = _list(_get(p, "explicitBounds", "explicit_bounds"), f"{field}.explicitBounds")
            total = p.get("sum")
            count = p.get("count")
            out.histograms.append(
                _histogram_point(
                    kind,
                    scale,
                    temporality,
                    (
                        _json_attributes(p.get("attributes"), f"{field}.attributes"),
                        0 if start is None else _int(start, f"{field}.startTimeUnixNano"),
                        0 if at is None else _int(at, f"{field}.timeUnixNano"),
                        0 if count is None else _int(count, f"{field}.count"),
                        0.0 if total is None else _number(total, f"{field}.sum"),
                        [_int(c, f"{field}.bucketCounts") for c in counts],
                        [_number(b, f"{field}.explicitBounds") for b in bounds],
                    ),
                    resource,
                    field,
                )
            )
    elif name in _MEMORY_GAUGES:
        data = node.get("gauge") if node.get("gauge") is not None else node.get("sum")
        if data is None:
            return
        points = _list(_get(_dict(data, where), "dataPoints", "data_points"), f"{where}.dataPoints")
        for p_index, point in enumerate(points):
            field = f"{where}.dataPoints[{p_index}]"
            p = _dict(point, field)
            raw = _get(p, "asInt", "as_int")
            if raw is None:
                raw = _get(p, "asDouble", "as_double")
                if raw is None:
                    continue
                value = _number(raw, f"{field}.asDouble")
            else:
                value = float(_int(raw, f"{field}.asInt"))
            at = _get(p, "timeUnixNano", "time_unix_nano")
            time_ns = 0 if at is None else _int(at, f"{field}.timeUnixNano")
            out.memory.append(_memory_point(resource, time_ns, value))


def decode_otlp_metrics(body: bytes, content_type: str) -> Decoded:
    """The request-duration histograms (``http.server.request.duration``,
    ``http.client.request.duration``, and the older ``http.server.duration`` and
    ``http.client.duration`` in milliseconds) and memory gauges (``process.memory.usage``,
    tracer's ``process_resident_memory_bytes``) of an OTLP ``ExportMetricsServiceRequest``;
    every other metric is skipped.

    Bounds and sums are converted to seconds from the metric's unit (``s``, ``ms``, ``us``,
    ``ns``; without one, the name's conventional unit). A CUMULATIVE point keeps its series'
    start time as ``start_us``; a DELTA point's start time is the start of the interval it
    counts (``start_us == time_us - interval``), so each delta point is a series of its own
    to the store, whose first point's counts are the counts since ``start_us``: no state across
    requests is needed. A point without a start time gets ``start_us == time_us``. Histogram
    points without buckets get one bucket holding their count.
    """
    media = _media(content_type)
    if media in _PROTOBUF:
        return _guarded("ExportMetricsServiceRequest", lambda: _metrics_pb(body))
    if media == _JSON:
        return _guarded("ExportMetricsServiceRequest", lambda: _metrics_json(body))
    raise UnsupportedContent(
        f"content type {media or 'none'!r}: OTLP takes application/x-protobuf or application/json"
    )


# -- Zipkin v2 -------------------------------------------------------------------------------

_ZIPKIN_KINDS = {
    "SERVER": "server",
    "CLIENT": "client",
    "PRODUCER": "internal",
    "CONSUMER": "internal",
}


def _zipkin_int(value: Any, field: str) -> int:
    if value is None:
        return 0
    number = _int(value, field)
    if number < 0:
        raise IngestError(f"{field} must not be negative")
    return number


def _zipkin_tags(span: dict[str, Any], where: str) -> dict[str, str]:
    tags = _dict(span.get("tags"), f"{where}: tags")
    out: dict[str, str] = {}
    for key, value in list(tags.items())[:MAX_ATTRIBUTES]:
        if isinstance(value, str):
            out[_cap(key)] = _cap(value)
        elif isinstance(value, (bool, int, float)):
            out[_cap(key)] = _text_of(value)
        else:
            raise IngestError(f"{where}: tags[{key[:40]!r}] must be a string")
    return out


def _zipkin_annotations(span: dict[str, Any], where: str) -> list[tuple[int, str]]:
    out = []
    items = _list(span.get("annotations"), f"{where}: annotations")
    for index, annotation in enumerate(items[:MAX_EVENTS]):
        field = f"{where}: annotations[{index}]"
        if not isinstance(annotation, dict):
            raise IngestError(f"{field} must be an object")
        out.append(
            (
                _zipkin_int(annotation.get("timestamp"), f"{field}.timestamp"),
                _str(annotation.get("value"), f"{field}.value"),
            )
        )
    return out


def _endpoint_address(endpoint: dict[str, Any]) -> str | None:
    for key in ("ipv4", "ipv6", "serviceName"):
        value = endpoint.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _zipkin_span(span: Any, where: str) -> dict[str, Any]:
    if not isinstance(span, dict):
        raise IngestError(f"{where} must be an object")
    trace = span.get("traceId")
    if isinstance(trace, str) and len(trace) == 16:
        trace = "0" * 16 + trace
    trace_id = _hex_id(trace, 32, f"{where}: traceId")
    span_id = _hex_id(span.get("id"), 16, f"{where}: id")
    parent = span.get("parentId")
    parent_id = _hex_id(parent, 16, f"{where}: parentId") if parent else None
    kind_text = span.get("kind")
    if kind_text is not None and (not isinstance(kind_text, str) or kind_text not in _ZIPKIN_KINDS):
        raise IngestError(f"{where}: kind must be SERVER, CLIENT, PRODUCER or CONSUMER")
    kind = "internal" if kind_text is None else _ZIPKIN_KINDS[kind_text]
    start_us = _zipkin_int(span.get("timestamp"), f"{where}: timestamp")
    duration_us = _zipkin_int(span.get("duration"), f"{where}: duration")
    local = _dict(span.get("localEndpoint"), f"{where}: localEndpoint")
    remote = _dict(span.get("remoteEndpoint"), f"{where}: remoteEndpoint")
    service = _str(local.get("serviceName"), f"{where}: localEndpoint.serviceName", "unknown")
    tags = _zipkin_tags(span, where)
    annotations = _zipkin_annotations(span, where)
    name = _str(span.get("name"), f"{where}: name")
    for flag in ("shared", "debug"):
        if span.get(flag) is not None and not isinstance(span.get(flag), bool):
            raise IngestError(f"{where}: {flag} must be true or false")
    if "tracer.request_id" in tags:
        return _zipkin_tracer(
            trace_id,
            span_id,
            parent_id,
            kind,
            name,
            start_us,
            duration_us,
            service,
            remote,
            tags,
            annotations,
        )
    attributes: dict[str, Any] = dict(tags)
    if kind_text in ("PRODUCER", "CONSUMER"):
        attributes["otel.kind"] = kind_text.lower()
    http = _http_foreign(attributes)
    if http is not None and http["path"] is None:
        path = attributes.pop("http.path", None)
        http["path"] = path
    db = None
    if "db.system.name" in attributes or "db.system" in attributes:
        address = _endpoint_address(remote)
        if address is not None:
            attributes.setdefault("server.address", address)
        port = remote.get("port")
        if isinstance(port, int) and not isinstance(port, bool):
            attributes.setdefault("server.port", port)
        db = _db_part(attributes)
    elif remote:
        for key, name_of in (
            ("serviceName", "peer.service"),
            ("ipv4", "network.peer.address"),
            ("ipv6", "network.peer.address"),
            ("port", "network.peer.port"),
        ):
            value = remote.get(key)
            if value is not None and not isinstance(value, (dict, list)):
                attributes.setdefault(name_of, _text_of(value))
    error = None
    if "error" in attributes:
        message = attributes.pop("error")
        stack = attributes.pop("exception.stacktrace", None)
        error = {"type": "error", "message": message, "stack": stack}
    if span.get("shared") is True:
        attributes["zipkin.shared"] = "true"
    if span.get("debug") is True:
        attributes["zipkin.debug"] = "true"
    record: dict[str, Any] = {
        "trace_id": trace_id,
        "request_id": None,
        "span_id": span_id,
        "parent_id": parent_id,
        "kind": kind,
        "name": name,
        "service": service,
        "host": "",
        "pid": 0,
        "start_us": start_us,
        "duration_us": duration_us,
        "events": [],
        "http": http,
        "error": error,
        "annotations": [{"time_us": at, "data": {"value": value}} for at, value in annotations],
        "tags": {},
        "sampled": True,
        "must_collect": False,
        "tracestate": None,
        "source": "zipkin",
        "attributes": {key: _text_of(value) for key, value in attributes.items()},
    }
    if db is not None:
        record["db"] = db
    return record


def _zipkin_tracer(
    trace_id: str,
    span_id: str,
    parent_id: str | None,
    kind: str,
    name: str,
    start_us: int,
    duration_us: int,
    service: str,
    remote: dict[str, Any],
    tags: dict[str, str],
    annotations: list[tuple[int, str]],
) -> dict[str, Any]:
    """A span tracer's Zipkin encoder made, mapped back to its record (see the module)."""
    if kind == "server" and tags.get("tracer.kind") == "websocket":
        del tags["tracer.kind"]
        kind = "websocket"
    request_id = tags.pop("tracer.request_id")
    http = None
    method = tags.pop("http.method", None)
    status_text = tags.pop("http.status_code", None)
    if method is not None or status_text is not None:
        url = tags.pop("http.url", None)
        path = tags.pop("http.path", None)
        if kind == "client" and url is not None and method is not None:
            built = _client_name(method, url)
            if built is not None:
                name = built[0]
        http = {
            "method": method,
            "url": url if kind == "client" else None,
            "path": path,
            "status_code": _status_int(status_text),
            "route": tags.pop("http.route", None),
        }
    db: dict[str, Any] | None = None
    if "db.system.name" in tags:
        db = {key: tags.pop(key) for key in [k for k in tags if k.startswith("db.")]}
        address = tags.pop("server.address", None)
        port = tags.pop("server.port", None)
        if address is not None:
            db["server.address"] = address
        if port is not None:
            number = _status_int(port)
            db["server.port"] = port if number is None else number
    error: dict[str, Any] | None = None
    failure = tags.pop("error", None)
    stack = tags.pop("exception.stacktrace", None)
    status = None if http is None else http["status_code"]
    if failure is not None and not (
        stack is None and status is not None and failure == str(status)
    ):
        if kind == "client" and http is not None and status is None:
            error = {"type": "network-error", "message": failure, "stack": stack}
        else:
            kind_name, sep, message = failure.partition(": ")
            error = {"type": kind_name, "message": message if sep else "", "stack": stack}
        if db is not None:
            db["error.type"] = error["type"]
    del remote
    out_annotations = []
    for at, value in annotations:
        try:
            data = json.loads(value)
        except ValueError:
            data = value
        out_annotations.append(
            {"time_us": at, "data": data if isinstance(data, dict) else {"data": data}}
        )
    headers = {}
    for key in [k for k in tags if k.startswith(_HEADER_PREFIX)]:
        headers[key[len(_HEADER_PREFIX) :]] = tags.pop(key)
    user_tags: dict[str, Any] = dict(tags)
    if headers:
        user_tags["http.request_headers"] = headers
    record: dict[str, Any] = {
        "trace_id": trace_id,
        "request_id": request_id,
        "span_id": span_id,
        "parent_id": parent_id,
        "kind": kind,
        "name": name,
        "service": service,
        "host": "",
        "pid": 0,
        "start_us": start_us,
        "duration_us": duration_us,
        "events": _dapper_events(kind, start_us, duration_us),
        "http": http,
        "error": error,
        "annotations": out_annotations,
        "tags": user_tags,
        "sampled": True,
        "must_collect": False,
        "tracestate": None,
        "source": "zipkin",
        "attributes": {},
    }
    if db is not None:
        record["db"] = db
    return record


def _zipkin(body: bytes) -> Decoded:
    spans = _load_json(body, "Zipkin spans")
    if not isinstance(spans, list):
        raise IngestError("Zipkin spans: the body must be a JSON list of spans (v2)")
    if len(spans) > MAX_SPANS:
        raise IngestError(f"more than {MAX_SPANS:,} spans in one body")
    return Decoded(spans=[_zipkin_span(span, f"span {i}") for i, span in enumerate(spans)])


def decode_zipkin(body: bytes, content_type: str) -> Decoded:
    """The spans of a Zipkin v2 JSON list (``POST /api/v2/spans``) as span records.

    A 16-digit ``traceId`` is padded with zeros on the left to 32. PRODUCER and CONSUMER spans
    are internal with ``otel.kind``; ``remoteEndpoint`` becomes ``peer.service``,
    ``network.peer.address`` and ``network.peer.port`` (a database span's, ``server.address``
    and ``server.port`` of its ``db``); the ``error`` tag (with ``exception.stacktrace``) the
    error; each annotation ``{"time_us", "data": {"value": text}}``; ``shared`` and ``debug``
    the attributes ``zipkin.shared`` and ``zipkin.debug``. A shared server span keeps its id,
    which is its caller's: the store keeps one span per id.
    """
    media = _media(content_type)
    if media not in (_JSON, ""):
        raise UnsupportedContent(
            f"content type {media!r}: Zipkin v2 is taken as application/json only"
        )
    return _guarded("Zipkin spans", lambda: _zipkin(body))


# -- tracer's own batches --------------------------------------------------------------------


def _iso_us(value: Any, field: str) -> int:
    if not isinstance(value, str):
        raise IngestError(f"{field} must be an ISO 8601 time")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise IngestError(f"{field} must be an ISO 8601 time, got {value[:40]!r}") from None
    if moment.tzinfo is None:
        raise IngestError(f"{field} must carry its time zone (Z), got {value[:40]!r}")
    return int(moment.timestamp() * 1_000_000)


def _optional_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _tracer_span(record: Any, batch: dict[str, Any], where: str) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise IngestError(f"{where} must be an object")
    trace_id = _hex_id(record.get("trace_id"), 32, f"{where}: trace_id")
    span_id = _hex_id(record.get("span_id"), 16, f"{where}: span_id")
    parent = record.get("parent_id")
    parent_id = None if parent is None else _hex_id(parent, 16, f"{where}: parent_id")
    kind = record.get("kind")
    if not isinstance(kind, str) or kind not in _TRACER_KINDS:
        raise IngestError(f"{where}: kind must be server, client, internal or websocket")
    start = record.get("start_us")
    duration = record.get("duration_us")
    start_us = 0 if start is None else _int(start, f"{where}: start_us")
    duration_us = 0 if duration is None else _int(duration, f"{where}: duration_us")
    events = []
    for index, event in enumerate(_list(record.get("events"), f"{where}: events")[:MAX_EVENTS]):
        field = f"{where}: events[{index}]"
        if not isinstance(event, dict) or event.get("type") not in ("sr", "ss", "cs", "cr"):
            raise IngestError(f"{field} must be {{type: sr|ss|cs|cr, time_us}}")
        events.append({"type": event["type"], "time_us": _int(event.get("time_us"), field)})
    http = record.get("http")
    if http is not None:
        http = _dict(http, f"{where}: http")
        http = {
            "method": _str(http.get("method"), f"{where}: http.method", "") or None,
            "url": _str(http.get("url"), f"{where}: http.url", "") or None,
            "path": _str(http.get("path"), f"{where}: http.path", "") or None,
            "status_code": _optional_int(http.get("status_code")),
            "route": _str(http.get("route"), f"{where}: http.route", "") or None,
        }
    error = record.get("error")
    if error is not None:
        error = _dict(error, f"{where}: error")
        error = {
            "type": _str(error.get("type"), f"{where}: error.type", "Exception"),
            "message": _text_of(error.get("message")) if error.get("message") is not None else "",
            "stack": None
            if error.get("stack") is None
            else _str(error.get("stack"), f"{where}: error.stack"),
        }
    annotations = []
    for index, item in enumerate(_list(record.get("annotations"), f"{where}: annotations")):
        if index >= MAX_EVENTS:
            break
        if not isinstance(item, dict):
            raise IngestError(f"{where}: annotations[{index}] must be {{time_us, data}}")
        at = item.get("time_us")
        annotations.append(
            {
                "time_us": 0 if at is None else _int(at, f"{where}: annotations[{index}].time_us"),
                "data": item.get("data"),
            }
        )
    tags = _dict(record.get("tags"), f"{where}: tags")
    if len(tags) > MAX_ATTRIBUTES:
        tags = dict(list(tags.items())[:MAX_ATTRIBUTES])
    state = record.get("tracestate")
    request_id = record.get("request_id")
    pid = record.get("pid", batch.get("pid"))
    out: dict[str, Any] = {
        "trace_id": trace_id,
        "request_id": None if request_id is None else _str(request_id, f"{where}: request_id"),
        "span_id": span_id,
        "parent_id": parent_id,
        "kind": kind,
        "name": _str(record.get("name"), f"{where}: name"),
        "service": _str(
            record.get("service") or batch.get("service"), f"{where}: service", "unknown"
        ),
        "host": _str(record.get("host") or batch.get("host"), f"{where}: host"),
        "pid": _optional_int(pid) or 0,
        "start_us": start_us,
        "duration_us": duration_us,
        "events": events,
        "http": http,
        "error": error,
        "annotations": annotations,
        "tags": tags,
        "sampled": record.get("sampled") is not False,
        "must_collect": record.get("must_collect") is True,
        "tracestate": None if state is None else _str(state, f"{where}: tracestate"),
        "source": "tracer",
        "attributes": {},
    }
    db = record.get("db")
    if db is not None:
        out["db"] = _dict(db, f"{where}: db")
    return out


def _origin(batch: dict[str, Any], where: str) -> tuple[str, str, int]:
    service = batch.get("service")
    host = batch.get("host")
    return (
        _str(service, f"{where}: service", "unknown"),
        _str(host, f"{where}: host"),
        _optional_int(batch.get("pid")) or 0,
    )


def _tracer_metrics(batch: dict[str, Any], where: str, out: Decoded) -> None:
    service, host, pid = _origin(batch, where)
    body = _dict(batch.get("metrics"), f"{where}: metrics")
    memory = body.get("memory")
    interval = body.get("interval")
    end_us = interval.get("end_us") if isinstance(interval, dict) else None
    time_us = _optional_int(end_us) or _optional_int(batch.get("sent_at_us")) or 0
    if isinstance(memory, dict) and _optional_int(memory.get("rss_bytes")) is not None:
        out.memory.append(
            {
                "service": service,
                "host": host,
                "pid": pid,
                "time_us": time_us,
                "rss_bytes": memory["rss_bytes"],
                "heap_blocks": None,
            }
        )
    cumulative = body.get("cumulative")
    if cumulative is None:
        return
    cumulative = _dict(cumulative, f"{where}: metrics.cumulative")
    at = _optional_int(cumulative.get("time_us")) or time_us
    begin = _optional_int(cumulative.get("start_us")) or at
    families = _list(cumulative.get("families"), f"{where}: metrics.cumulative.families")
    for f_index, family in enumerate(families):
        field = f"{where}: metrics.cumulative.families[{f_index}]"
        family = _dict(family, field)
        name = family.get("name")
        kind = _PROM_HISTOGRAMS.get(name) if isinstance(name, str) else None
        if kind is None:
            continue
        for s_index, series in enumerate(_list(family.get("series"), f"{field}.series")):
            point = _dict(series, f"{field}.series[{s_index}]")
            labels = _dict(point.get("labels"), f"{field}.series[{s_index}].labels")
            bounds = [
                _number(b, f"{field}.series[{s_index}].bounds")
                for b in _list(point.get("bounds"), f"{field}.series[{s_index}].bounds")
            ]
            counts = [
                _int(c, f"{field}.series[{s_index}].bucket_counts")
                for c in _list(
                    point.get("bucket_counts"), f"{field}.series[{s_index}].bucket_counts"
                )
            ]
            if len(counts) != len(bounds) + 1:
                raise IngestError(
                    f"{field}.series[{s_index}]: {len(counts)} bucket_counts for "
                    f"{len(bounds)} bounds (one more count than bounds expected)"
                )
            route = labels.get("http_route")
            count = point.get("count")
            total = point.get("sum")
            out.histograms.append(
                {
                    "service": service,
                    "host": host,
                    "pid": pid,
                    "kind": kind,
                    "method": _text_of(labels.get("http_request_method", "")),
                    "route": "" if route in (None, "_OTHER") else _text_of(route),
                    "status_code": _status_int(labels.get("http_response_status_code")) or 0,
                    "start_us": _optional_int(point.get("start_us")) or begin,
                    "time_us": at,
                    "count": sum(counts) if count is None else _int(count, f"{field}.count"),
                    "sum_s": 0.0 if total is None else _number(total, f"{field}.sum"),
                    "bounds": bounds,
                    "bucket_counts": counts,
                }
            )


def _tracer_memory(batch: dict[str, Any], where: str, out: Decoded) -> None:
    service, host, pid = _origin(batch, where)
    event = _dict(batch.get("memory"), f"{where}: memory")
    kind = event.get("event")
    if kind == "stats":
        rss = _optional_int(event.get("rss_bytes"))
        blocks = _optional_int(event.get("allocated_blocks"))
        point: MemoryPoint = {
            "service": service,
            "host": host,
            "pid": pid,
            "time_us": _iso_us(event.get("time"), f"{where}: memory.time"),
            "rss_bytes": rss,
            "heap_blocks": blocks,
        }
        out.memory.append(point)
    elif kind == "leak":
        measure = event.get("measure")
        if measure not in ("heap", "rss"):
            raise IngestError(f"{where}: memory.measure must be heap or rss")
        growth = event.get("growth")
        leak: LeakEvent = {
            "service": service,
            "host": host,
            "pid": pid,
            "time_us": _iso_us(event.get("end"), f"{where}: memory.end"),
            "measure": measure,
            "reason": _str(event.get("reason"), f"{where}: memory.reason"),
            "growth": 0.0 if growth is None else _number(growth, f"{where}: memory.growth"),
            "unit": _str(
                event.get("unit"),
                f"{where}: memory.unit",
                "blocks" if measure == "heap" else "bytes",
            ),
        }
        out.leaks.append(leak)
    else:
        raise IngestError(f"{where}: memory.event must be stats or leak")


def _tracer_batch(batch: Any, where: str, out: Decoded) -> None:
    if not isinstance(batch, dict):
        raise IngestError(f"{where} must be a batch object")
    if "spans" in batch:
        spans = _list(batch.get("spans"), f"{where}: spans")
        if len(out.spans) + len(spans) > MAX_SPANS:
            raise IngestError(f"more than {MAX_SPANS:,} spans in one body")
        out.spans.extend(
            _tracer_span(r, batch, f"{where}: spans[{i}]") for i, r in enumerate(spans)
        )
    elif "metrics" in batch:
        _tracer_metrics(batch, where, out)
    elif "memory" in batch:
        _tracer_memory(batch, where, out)
    elif "profile" in batch:
        profile = dict(_dict(batch.get("profile"), f"{where}: profile"))
        service, host, pid = _origin(batch, where)
        profile["service"] = profile.get("service") or service
        profile["host"] = profile.get("host") or host
        profile["pid"] = _optional_int(profile.get("pid")) or pid
        out.profiles.append(profile)
    else:
        raise IngestError(f"{where} holds none of spans, metrics, memory or profile")


def _tracer(body: bytes) -> Decoded:
    document = _load_json(body, "tracer batch")
    out = Decoded()
    if isinstance(document, list):
        for index, batch in enumerate(document):
            _tracer_batch(batch, f"batch {index}", out)
    else:
        _tracer_batch(document, "batch", out)
    return out


def decode_tracer(body: bytes, content_type: str) -> Decoded:
    """tracer's own batches (``POST /api/v1/batches``): one batch dict or a JSON list of them,
    as tracer's HTTP reporter sends them. ``spans`` batches give span records as they were
    (``source`` ``"tracer"``); ``metrics`` batches HistogramPoints from their ``cumulative``
    request histograms and a MemoryPoint from ``memory.rss_bytes``; ``memory`` batches a
    MemoryPoint (``stats``: ``rss_bytes``, ``allocated_blocks``) or a LeakEvent (``leak``, at
    its ``end``); ``profile`` batches their profile dict, with the batch's service, host and pid
    where the profile lacks them."""
    media = _media(content_type)
    if media not in (_JSON, ""):
        raise UnsupportedContent(f"content type {media!r}: tracer batches are application/json")
    return _guarded("tracer batch", lambda: _tracer(body))
