"""What every trace format reads the same way from a span record: OpenTelemetry's HTTP semantic
conventions (stable since 1.23) applied to tracer's record.

The OTLP and Zipkin encoders both use it, so a span is named, located and judged failed the same
way whichever backend receives it:

* :func:`span_name`: ``{method} {http.route}`` for a server span whose route is known, else the
  method alone (``HTTP`` for an unknown method), as the conventions ask, because a backend
  groups spans by name and a raw path (``GET /users/7``) makes one group per user; an internal
  span keeps its own name.
* :func:`route`: the record's ``http.route`` when it has one, else, for a server span whose name
  is not ``{method} {path}``, the name's second half (aiohttp names a span after the route's
  canonical form, ``GET /users/{id}``). A span named after its raw path gives no route: the path
  is no route.
* :func:`split_url`: scheme, host, port and query of a recorded URL, without ``urllib``'s cost.
* :func:`outcome`: whether the span failed (a recorded exception or network error, a server 5xx,
  a client 4xx or 5xx, a status outside 100..599), its ``error.type`` and status message.

Nothing here imports tracer's other modules: only plain dicts cross into reporters.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "DEFAULT_PORTS",
    "KNOWN_METHODS",
    "HostPort",
    "method_of",
    "outcome",
    "route",
    "span_name",
    "split_url",
]

#: The methods the conventions name; any other is recorded as ``_OTHER``.
KNOWN_METHODS = frozenset(
    ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "QUERY")
)
DEFAULT_PORTS = {"http": 80, "https": 443}

#: ``(scheme, host, port, query)`` of a URL; port is the scheme's default when none is given.
HostPort = tuple[str, str, int | None, str]

# Recorded URLs repeat (a service calls a few endpoints and is called under one Host): the parsed
# prefix is kept per scheme://authority, in a bounded dict.
_authorities: dict[str, tuple[str, str, int | None]] = {}
_MAX_CACHED = 256


def method_of(http: dict[str, Any]) -> tuple[str | None, str | None]:
    """``(http.request.method, http.request.method_original)`` of a record's ``http`` part."""
    method = http.get("method")
    if not isinstance(method, str) or not method:
        return None, None
    if method in KNOWN_METHODS:
        return method, None
    upper = method.upper()
    if upper in KNOWN_METHODS:
        return upper, method
    return "_OTHER", None if method == "_OTHER" else method


def route(record: dict[str, Any], http: dict[str, Any]) -> str | None:
    """The server span's ``http.route``, or None when the framework did not give one."""
    if "route" in http:
        value = http["route"]
        return value if isinstance(value, str) and value else None
    if record.get("kind") != "server":
        return None
    name, method, path = record.get("name"), http.get("method"), http.get("path")
    if not isinstance(name, str) or not isinstance(method, str):
        return None
    prefix = method + " "
    if not name.startswith(prefix):
        return None
    target = name[len(prefix) :]
    if target == path or not target.startswith("/"):
        return None
    return target


def span_name(record: dict[str, Any]) -> str:
    """The span's name as the conventions give it (see the module)."""
    name = record.get("name")
    http = record.get("http")
    kind = record.get("kind")
    if isinstance(http, dict) and kind in ("server", "client"):
        method, _ = method_of(http)
        if method is not None:
            shown = "HTTP" if method == "_OTHER" else method
            if kind == "server":
                matched = route(record, http)
                if matched is not None:
                    return f"{shown} {matched}"
            return shown
    return name if isinstance(name, str) and name else "span"


def split_url(url: Any) -> HostPort | None:
    """``(scheme, host, port, query)`` of an absolute URL, or None for anything else.

    The host is lowercased, an IPv6 literal loses its brackets, credentials are dropped; the
    port is the URL's, else the scheme's default (None for an unknown scheme).
    """
    if not isinstance(url, str):
        return None
    scheme_end = url.find("://")
    if scheme_end <= 0:
        return None
    start = scheme_end + 3
    end = len(url)
    for stop in ("/", "?", "#"):
        at = url.find(stop, start)
        if at != -1 and at < end:
            end = at
    key = url[:end]
    parsed = _authorities.get(key)
    if parsed is None:
        parsed = _authority(url[:scheme_end].lower(), url[start:end])
        if parsed is None:
            return None
        if len(_authorities) >= _MAX_CACHED:
            _authorities.clear()
        _authorities[key] = parsed
    rest = url[end:]
    query = ""
    mark = rest.find("?")
    if mark != -1:
        query = rest[mark + 1 :]
        hash_at = query.find("#")
        if hash_at != -1:
            query = query[:hash_at]
    return parsed[0], parsed[1], parsed[2], query


def _authority(scheme: str, netloc: str) -> tuple[str, str, int | None] | None:
    host_port = netloc.rpartition("@")[2]
    port_text = ""
    if host_port.startswith("["):
        close = host_port.find("]")
        if close == -1:
            return None
        host = host_port[1:close]
        after = host_port[close + 1 :]
        if after.startswith(":"):
            port_text = after[1:]
    else:
        host, _, port_text = host_port.partition(":")
    if not host:
        return None
    port: int | None = DEFAULT_PORTS.get(scheme)
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            return None
        port = int(port_text)
    return scheme, host.lower(), port


def outcome(record: dict[str, Any]) -> tuple[bool, str | None, str | None]:
    """``(failed, error.type, status message)`` of a span.

    A recorded exception or network error fails the span, with the exception's type as
    ``error.type`` (a network error's is the exception named in its message) and
    ``"Type: message"`` as the status message. Otherwise the HTTP status decides: a server 5xx,
    a client 4xx or 5xx, or a status outside 100..599 fails it, with the status code as
    ``error.type`` and no message (the code says it). A server 4xx is the client's mistake, not
    the server's failure: not failed.
    """
    error = record.get("error")
    if isinstance(error, dict):
        kind = error.get("type")
        message = error.get("message")
        text = message if isinstance(message, str) else ""
        if kind == "network-error":
            named, sep, _ = text.partition(": ")
            if sep and named.isidentifier():
                return True, named, text
            return True, "network-error", text or None
        type_name = kind if isinstance(kind, str) and kind else "Exception"
        return True, type_name, f"{type_name}: {text}" if text else type_name
    http = record.get("http")
    if not isinstance(http, dict):
        return False, None, None
    status = http.get("status_code")
    if not isinstance(status, int) or isinstance(status, bool):
        return False, None, None
    kind = record.get("kind")
    code = int(status)
    if code < 100 or code >= 500 or (code >= 400 and kind == "client"):
        return True, str(code), None
    return False, None, None
