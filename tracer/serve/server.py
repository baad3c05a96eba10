"""The HTTP side of ``tracer serve``: the receivers, the JSON API, the pages, the token.

One :class:`Viewer` listens on two ports (the UI's and the receiver's, 4318 by default so that
``OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318`` works); both answer every path. Each port is
an ``http.server.ThreadingHTTPServer`` with daemon threads: one thread per connection, each
socket read bounded by :data:`READ_TIMEOUT`, every request answered inside one guard, so a body or
a request line that nothing expected is a 4xx, and a bug of ours a 500 with one logged line, never
a dead server.

The server never traces itself: when tracer is installed in the same process (the demo), every
request is handled under :func:`tracer.context.suppressed`, so receiving spans makes no spans and
the store's sqlite3 calls make no database spans.
"""

from __future__ import annotations

import http.server
import importlib.resources
import importlib.util
import ipaddress
import json
import logging
import os
import re
import secrets
import socket
import threading
import zlib
from collections.abc import Callable, Iterator, Mapping
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from tracer.context import suppressed
from tracer.serve.model import Decoded, IngestError

if TYPE_CHECKING:
    from tracer.serve.store import Store

__all__ = [
    "DEFAULT_OTLP_PORT",
    "DEFAULT_PORT",
    "MAX_BODY",
    "Viewer",
    "default_db",
    "parse_size",
]

log = logging.getLogger("tracer.serve")

DEFAULT_PORT = 8686
DEFAULT_OTLP_PORT = 4318
#: The largest request body taken, compressed and decompressed alike (else 413).
MAX_BODY = 32 << 20
#: Seconds a connection may take for each socket read before it is closed: a client that sends
#: half a request and stalls holds one thread for at most this long.
READ_TIMEOUT = 30.0
#: Seconds stop() waits for the requests under way before it closes the store.
STOP_TIMEOUT = 10.0
COOKIE = "tracer_token"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
#: The paths that answer the single page (app.js routes on ``location.pathname``).
PAGES = frozenset({"/", "/search", "/map", "/dashboard", "/memory", "/heap", "/profiles"})
PAGE_PREFIXES = ("/trace/", "/profiles/")
#: The static files served: by extension, with their content type. A file of the package's
#: static folder is served only when its name is a plain name with one of these.
STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
}
_STATIC_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,100}")
_HEX = re.compile(r"[0-9a-fA-F]+")
_TOKEN = re.compile(r"[A-Za-z0-9._~-]{8,256}")
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*", re.IGNORECASE)
_PROTOBUF = frozenset({"application/x-protobuf", "application/protobuf"})
_JSON = "application/json"

#: receiver path -> (the decoder's name in tracer.serve.ingest, whether it is OTLP, the media
#: types it takes).
RECEIVERS: dict[str, tuple[str, bool, frozenset[str]]] = {
    "/v1/traces": ("decode_otlp_traces", True, _PROTOBUF | {_JSON}),
    "/v1/metrics": ("decode_otlp_metrics", True, _PROTOBUF | {_JSON}),
    "/api/v2/spans": ("decode_zipkin", False, frozenset({_JSON})),
    "/api/v1/batches": ("decode_tracer", False, frozenset({_JSON})),
}
_GET_API = frozenset(
    {
        "/api/services",
        "/api/operations",
        "/api/traces",
        "/api/dependencies",
        "/api/dashboard",
        "/api/memory",
        "/api/profiles",
        "/api/stats",
    }
)
_POST_API = frozenset({"/api/traces", "/api/heap/diff"})


def default_db(env: Mapping[str, str] = os.environ) -> Path:
    """Where ``tracer serve`` keeps its database when ``--db`` names none:
    ``$XDG_DATA_HOME/tracer/serve.db``, else ``~/.local/share/tracer/serve.db``."""
    base = env.get("XDG_DATA_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".local" / "share"
    return root / "tracer" / "serve.db"


def parse_size(text: str) -> int:
    """A size in bytes from ``1GB``, ``500MB``, ``2G``, ``64KiB`` or a plain number of bytes
    (the units are powers of 1024); ValueError for anything else."""
    match = _SIZE.fullmatch(text)
    if match is None or (match.group(3) and not match.group(2) and match.group(3).lower() != "b"):
        raise ValueError(f"invalid size: {text!r} (bytes, or a number with KB, MB, GB or TB)")
    number, unit = float(match.group(1)), match.group(2).lower()
    return int(number * (1 << (10 * " kmgt".index(unit or " "))))


def _human(size: int) -> str:
    for unit, shift in (("TB", 40), ("GB", 30), ("MB", 20), ("KB", 10)):
        if size >= 1 << shift:
            return f"{size / (1 << shift):g}{unit}"
    return f"{size} bytes"


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _url_host(host: str) -> str:
    """The host as a URL shows it: a wildcard address becomes the loopback one (what a browser on
    this machine can open), an IPv6 address gets its brackets."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _protobuf_available() -> bool:
    try:
        return importlib.util.find_spec("opentelemetry.proto") is not None
    except (ImportError, ValueError):
        return False


def _static_names() -> dict[str, str]:
    """The files of the package's static folder that are served: name -> content type."""
    names: dict[str, str] = {}
    try:
        folder = importlib.resources.files("tracer.serve").joinpath("static")
        for entry in folder.iterdir():
            name = entry.name
            kind = STATIC_TYPES.get(os.path.splitext(name)[1].lower())
            if kind is not None and _STATIC_NAME.fullmatch(name) and entry.is_file():
                names[name] = kind
    except (OSError, ModuleNotFoundError):
        pass
    return names


def _read_static(name: str) -> bytes | None:
    try:
        return (
            importlib.resources.files("tracer.serve").joinpath("static").joinpath(name).read_bytes()
        )
    except OSError:
        return None


class _Refused(Exception):
    """A request answered with ``status`` and ``{"error": reason}``."""

    def __init__(self, status: int, reason: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = dict(headers or {})


def _media_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


def _gunzip(body: bytes) -> bytes:
    """``body`` decompressed, at most :data:`MAX_BODY` bytes of it (a bomb is refused as soon as
    it passes the cap, never inflated whole); concatenated gzip members are all read."""
    out = bytearray()
    data = body
    while True:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out += inflater.decompress(data, MAX_BODY + 1 - len(out))
        except zlib.error as exc:
            raise _Refused(400, f"the body is not valid gzip ({exc})") from None
        if len(out) > MAX_BODY:
            raise _Refused(413, f"the decompressed body is larger than {_human(MAX_BODY)}")
        if not inflater.eof:
            raise _Refused(400, "the gzip body is cut short")
        data = inflater.unused_data
        if not data.strip(b"\0"):
            return bytes(out)


def _one(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


def _int(query: dict[str, list[str]], name: str, least: int | None = None) -> int | None:
    text = _one(query, name)
    if text is None or text == "":
        return None
    try:
        value = int(text)
    except ValueError:
        raise _Refused(400, f"{name} must be a whole number, got {text[:40]!r}") from None
    if least is not None and value < least:
        raise _Refused(400, f"{name} must be {least} or more, got {value}")
    return value


def _ms_to_us(query: dict[str, list[str]], name: str) -> int | None:
    text = _one(query, name)
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value > 1e12:
        raise _Refused(400, f"{name} must be a number of milliseconds, got {text[:40]!r}")
    return int(value * 1000)


def _check_hex(value: Any, length: int, what: str, nullable: bool = False) -> None:
    if value is None and nullable:
        return
    if not isinstance(value, str) or len(value) != length or not _HEX.fullmatch(value):
        raise _Refused(400, f"{what} must be {length} hexadecimal digits")


#: What an uploaded span lacks is filled in, so the store gets whole records.
_UPLOAD_DEFAULTS: dict[str, Any] = {
    "kind": "internal",
    "name": "",
    "service": "",
    "host": "",
    "pid": 0,
    "events": list,
    "http": None,
    "error": None,
    "annotations": list,
    "tags": dict,
    "attributes": dict,
    "sampled": True,
    "must_collect": False,
    "tracestate": None,
    "request_id": None,
    "source": "tracer",
}


def _uploaded_trace(doc: Any) -> tuple[str, list[dict[str, Any]]]:
    """The trace id and spans of an uploaded trace (``{"trace_id", "spans"}`` as
    ``GET /api/traces/<id>`` gives it), checked field by field so the store gets only records."""
    if not isinstance(doc, dict) or not isinstance(doc.get("spans"), list):
        raise _Refused(400, 'a trace upload is a JSON object {"trace_id": ..., "spans": [...]}')
    trace_id = doc.get("trace_id")
    _check_hex(trace_id, 32, "trace_id")
    assert isinstance(trace_id, str)
    trace_id = trace_id.lower()
    spans: list[dict[str, Any]] = []
    for i, span in enumerate(doc["spans"]):
        if not isinstance(span, dict):
            raise _Refused(400, f"span {i} is not a JSON object")
        if str(span.get("trace_id", trace_id)).lower() != trace_id:
            raise _Refused(400, f"span {i} belongs to another trace")
        _check_hex(span.get("span_id"), 16, f"span {i}: span_id")
        _check_hex(span.get("parent_id"), 16, f"span {i}: parent_id", nullable=True)
        for name, kind in (("name", str), ("service", str), ("kind", str)):
            if not isinstance(span.get(name, ""), kind):
                raise _Refused(400, f"span {i}: {name} must be a string")
        for name in ("start_us", "duration_us"):
            value = span.get(name)
            if type(value) is not int or value < 0:
                raise _Refused(400, f"span {i}: {name} must be a whole number, 0 or more")
        record = dict(span)
        record["trace_id"] = trace_id
        record["span_id"] = span["span_id"].lower()
        if span.get("parent_id") is not None:
            record["parent_id"] = span["parent_id"].lower()
        for name, default in _UPLOAD_DEFAULTS.items():
            record.setdefault(name, default() if callable(default) else default)
        spans.append(record)
    if not spans:
        raise _Refused(400, "the uploaded trace has no spans")
    return trace_id, spans


def _heap_diff(doc: Any) -> dict[str, Any]:
    from tracer.memory import cli as heap_cli
    from tracer.memory.snapshot import FORMAT

    if not isinstance(doc, dict):
        raise _Refused(400, 'a heap diff takes {"before": <snapshot>, "after": <snapshot>}')
    for side in ("before", "after"):
        snap = doc.get(side)
        if not isinstance(snap, dict) or snap.get("format") != FORMAT:
            raise _Refused(400, f"{side!r} is not a heap snapshot (no 'format': {FORMAT!r})")
        census = snap.get("census")
        if not isinstance(census, dict) or not isinstance(census.get("types"), list):
            raise _Refused(400, f"{side!r} is a damaged heap snapshot (no census)")
    try:
        return heap_cli.diff(doc["before"], doc["after"])
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise _Refused(400, f"a damaged heap snapshot ({type(exc).__name__}: {exc})") from None


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    # A restart may find the previous process's port in TIME_WAIT.
    allow_reuse_address = True
    viewer: Viewer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Whatever escaped a request's own guard (a connection reset while reading the request
        # line, say): one line, not socketserver's traceback on stderr.
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            return
        log.error("tracer serve: connection from %s failed: %r", client_address, exc)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "tracer-serve"
    sys_version = ""
    timeout = READ_TIMEOUT
    disable_nagle_algorithm = True
    server: _Server

    # -- plumbing ------------------------------------------------------------------------------

    def handle(self) -> None:
        # Suppressed for the whole connection: http.server's instrumentation runs each request
        # in a copy of this context, so none of them makes a span.
        with suppressed():
            try:
                super().handle()
            except (OSError, TimeoutError):
                self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def version_string(self) -> str:
        return self.server_version

    def _headers_common(self, content_type: str | None, length: int) -> None:
        if content_type is not None:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        if self.close_connection:
            self.send_header("Connection", "close")

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str | None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self._headers_common(content_type, len(body))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        for cookie in self._cookies:
            self.send_header("Set-Cookie", cookie)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self._answered = True

    def _json(self, status: int, doc: Any, headers: Mapping[str, str] | None = None) -> None:
        body = json.dumps(doc, separators=(",", ":")).encode()
        extra = {"Cache-Control": "no-store", **(headers or {})}
        self._send(status, body, "application/json", extra)

    def _guarded(self) -> None:
        viewer = self.server.viewer
        with viewer._idle:
            viewer._active += 1
        try:
            self._guarded_request()
        finally:
            with viewer._idle:
                viewer._active -= 1
                viewer._idle.notify_all()

    def _guarded_request(self) -> None:
        self._answered = False
        self._cookies: list[str] = []
        try:
            self._route()
        except _Refused as refused:
            if not self._answered:
                self._json(refused.status, {"error": refused.reason}, refused.headers)
        except (OSError, TimeoutError):
            self.close_connection = True
        except Exception as exc:
            where = ""
            tb = exc.__traceback__
            while tb is not None and tb.tb_next is not None:
                tb = tb.tb_next
            if tb is not None:
                where = f" at {os.path.basename(tb.tb_frame.f_code.co_filename)}:{tb.tb_lineno}"
            log.error(
                "tracer serve: internal error on %s %s: %s: %s%s",
                self.command,
                self.path[:200],
                type(exc).__name__,
                str(exc)[:200],
                where,
            )
            self.close_connection = True
            if not self._answered:
                try:
                    self._json(500, {"error": f"internal error: {type(exc).__name__}"})
                except OSError:
                    pass

    def do_GET(self) -> None:
        self._guarded()

    def do_POST(self) -> None:
        self._guarded()

    def do_HEAD(self) -> None:
        self._guarded()

    def _not_allowed(self) -> None:
        self._guarded()

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed

    # -- checks --------------------------------------------------------------------------------

    def _check_host(self) -> None:
        """On a loopback address, a request must name a loopback host: a page of another site
        whose name was re-pointed at 127.0.0.1 (DNS rebinding) gets nothing."""
        viewer = self.server.viewer
        if not viewer.loopback:
            return
        host = self.headers.get("Host")
        if not host:
            return
        if host.startswith("["):
            name = host[: host.find("]") + 1]
        else:
            name = host.partition(":")[0]
        if not _is_loopback(name):
            raise _Refused(403, "this server answers only requests for 127.0.0.1 or localhost")

    def _check_token(self, query: dict[str, list[str]]) -> None:
        token = self.server.viewer.token
        if token is None:
            return
        auth = self.headers.get("Authorization", "")
        scheme, _, given = auth.partition(" ")
        if scheme.lower() == "bearer" and secrets.compare_digest(given.strip(), token):
            return
        try:
            cookies = SimpleCookie(self.headers.get("Cookie", ""))
        except CookieError:
            cookies = SimpleCookie()
        cookie = cookies.get(COOKIE)
        if cookie is not None and secrets.compare_digest(cookie.value, token):
            return
        in_query = _one(query, "token")
        if self.command in ("GET", "HEAD") and in_query is not None:
            if secrets.compare_digest(in_query, token):
                self._cookies.append(f"{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict")
                return
        raise _Refused(
            401,
            "a token is required: the header 'Authorization: Bearer <token>', or open the URL"
            " that tracer serve printed",
            {"WWW-Authenticate": "Bearer"},
        )

    def _check_origin(self) -> None:
        """A browser's POST from another site is refused: no page elsewhere can store data."""
        origin = self.headers.get("Origin")
        if self.headers.get("Sec-Fetch-Site", "").lower() == "cross-site":
            raise _Refused(403, "cross-site requests are refused")
        if origin is None:
            return
        host = self.headers.get("Host", "")
        if origin.lower() not in (f"http://{host}".lower(), f"https://{host}".lower()):
            raise _Refused(403, f"cross-site requests are refused (Origin {origin[:100]!r})")

    # -- bodies --------------------------------------------------------------------------------

    def _body(self) -> bytes:
        """The request body, whole (``Content-Length`` or chunked), un-gzipped; 411, 413, 415
        or 400 for one that cannot be taken."""
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        if chunked:
            body = self._read_chunked()
        else:
            length_text = self.headers.get("Content-Length")
            if length_text is None:
                self.close_connection = True
                raise _Refused(411, "a Content-Length is required")
            try:
                length = int(length_text)
            except ValueError:
                length = -1
            if length < 0:
                self.close_connection = True
                raise _Refused(400, "a bad Content-Length")
            if length > MAX_BODY:
                # The body is not read: the connection ends after the answer.
                self.close_connection = True
                raise _Refused(413, f"the body is larger than {_human(MAX_BODY)}")
            body = self.rfile.read(length)
            if len(body) < length:
                self.close_connection = True
                raise _Refused(400, "the body is cut short")
        encoding = self.headers.get("Content-Encoding", "").strip().lower()
        if encoding == "gzip" or encoding == "x-gzip":
            return _gunzip(body)
        if encoding not in ("", "identity"):
            raise _Refused(415, f"Content-Encoding {encoding[:40]!r} is not taken (gzip is)")
        return body

    def _read_chunked(self) -> bytes:
        body = bytearray()
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self.close_connection = True
                raise _Refused(400, "a bad chunk size in a chunked body") from None
            if size < 0 or len(body) + size > MAX_BODY:
                self.close_connection = True
                raise _Refused(413, f"the body is larger than {_human(MAX_BODY)}")
            if size == 0:
                # The trailer section, up to its empty line.
                for _ in range(100):
                    if self.rfile.readline(8192) in (b"\r\n", b"\n", b""):
                        break
                return bytes(body)
            chunk = self.rfile.read(size)
            if len(chunk) < size:
                self.close_connection = True
                raise _Refused(400, "the body is cut short")
            body += chunk
            self.rfile.readline(8)

    def _json_body(self) -> Any:
        body = self._body()
        try:
            return json.loads(body)
        except RecursionError:
            raise _Refused(400, "the JSON is nested too deeply") from None
        except ValueError as exc:
            raise _Refused(400, f"the body is not JSON ({str(exc)[:100]})") from None

    # -- routing -------------------------------------------------------------------------------

    def _route(self) -> None:
        try:
            parts = urlsplit(self.path)
            query = parse_qs(parts.query, max_num_fields=200)
        except ValueError:
            raise _Refused(400, "a bad request target") from None
        path = parts.path or "/"
        self._check_host()
        self._check_token(query)
        method = self.command
        if method == "POST":
            self._check_origin()
        receiver = RECEIVERS.get(path)
        if receiver is not None:
            if method != "POST":
                raise _Refused(405, f"{path} takes POST only", {"Allow": "POST"})
            self._receive(path, *receiver)
            return
        if method == "POST":
            if path == "/api/traces":
                self._upload()
                return
            if path == "/api/heap/diff":
                self._json(200, _heap_diff(self._json_body()))
                return
        elif method in ("GET", "HEAD"):
            if path.startswith("/api/"):
                self._api(path, query)
                return
            if path.startswith("/static/"):
                self._static(path[len("/static/") :])
                return
            if path in PAGES or any(
                path.startswith(p) and len(path) > len(p) and "/" not in path[len(p) :]
                for p in PAGE_PREFIXES
            ):
                self._page()
                return
            raise _Refused(404, f"no page {path[:100]!r}")
        if path in _POST_API:
            allow = "GET, POST" if path == "/api/traces" else "POST"
            raise _Refused(405, f"{path} takes {allow}", {"Allow": allow})
        if path in _GET_API or path in PAGES or path.startswith(("/api/", "/static/")):
            raise _Refused(405, f"{path[:100]} takes GET", {"Allow": "GET"})
        raise _Refused(404, f"no page {path[:100]!r}")

    def _page(self) -> None:
        viewer = self.server.viewer
        if "index.html" not in viewer.static:
            raise _Refused(404, "the viewer's pages are not installed (tracer/serve/static)")
        body = _read_static("index.html")
        if body is None:
            raise _Refused(404, "the viewer's pages are not installed (tracer/serve/static)")
        self._send(
            200,
            body,
            STATIC_TYPES[".html"],
            {
                "Content-Security-Policy": CSP,
                "Cache-Control": "no-cache",
                "X-Frame-Options": "DENY",
            },
        )

    def _static(self, name: str) -> None:
        kind = self.server.viewer.static.get(name)
        body = _read_static(name) if kind is not None else None
        if kind is None or body is None:
            raise _Refused(404, f"no static file {name[:100]!r}")
        headers = {"Cache-Control": "no-cache"}
        if kind.startswith("text/html"):
            headers["Content-Security-Policy"] = CSP
        self._send(200, body, kind, headers)

    def _receive(self, path: str, decoder_name: str, otlp: bool, takes: frozenset[str]) -> None:
        from tracer.serve import ingest

        raw_type = self.headers.get("Content-Type")
        media = _media_type(raw_type)
        if not media and not otlp:
            media = raw_type = _JSON
        if media not in takes:
            shown = " or ".join(sorted(takes))
            raise _Refused(415, f"{path} takes Content-Type {shown}, not {media[:60]!r}")
        if media in _PROTOBUF and not self.server.viewer.protobuf:
            raise _Refused(
                415,
                "OTLP protobuf needs the opentelemetry-proto package: pip install"
                " 'dapper-tracer[otlp]' (or send OTLP JSON)",
            )
        body = self._body()
        decode: Callable[[bytes, str], Decoded] = getattr(ingest, decoder_name)
        try:
            decoded = decode(body, raw_type or media)
        except IngestError as exc:
            raise _Refused(400, exc.reason) from None
        self.server.viewer.store.add(decoded)
        if path == "/api/v2/spans":
            self._send(202, b"", None)
        elif otlp and media in _PROTOBUF:
            # An empty Export*ServiceResponse: no fields set encodes as no bytes.
            self._send(200, b"", "application/x-protobuf")
        else:
            self._json(200, {})

    def _upload(self) -> None:
        trace_id, spans = _uploaded_trace(self._json_body())
        self.server.viewer.store.add(Decoded(spans=spans))
        self._json(200, {"trace_id": trace_id})

    def _api(self, path: str, query: dict[str, list[str]]) -> None:
        store = self.server.viewer.store
        if path == "/api/services":
            self._json(200, {"services": store.services()})
        elif path == "/api/operations":
            service = _one(query, "service")
            if not service:
                raise _Refused(400, "name a service: /api/operations?service=S")
            self._json(200, {"operations": store.operations(service)})
        elif path == "/api/traces":
            tags = []
            for tag in query.get("tag", []):
                key, eq, value = tag.partition("=")
                if not eq or not key:
                    raise _Refused(400, f"a tag filter is key=value, got {tag[:60]!r}")
                tags.append((key.strip(), value.strip()))
            errors = (_one(query, "errors") or "").lower() in ("1", "true", "yes", "on")
            found = store.search(
                service=_one(query, "service") or None,
                operation=_one(query, "operation") or None,
                min_duration_us=_ms_to_us(query, "min_duration_ms"),
                max_duration_us=_ms_to_us(query, "max_duration_ms"),
                errors=errors,
                tags=tags,
                start_us=_int(query, "start_us"),
                end_us=_int(query, "end_us"),
                limit=min(_int(query, "limit", 1) or 20, 10_000),
            )
            self._json(200, {"traces": found})
        elif path.startswith("/api/traces/"):
            trace_id = unquote(path[len("/api/traces/") :])
            spans = None
            if 0 < len(trace_id) <= 32 and _HEX.fullmatch(trace_id):
                trace_id = trace_id.lower().rjust(32, "0")
                spans = store.trace(trace_id)
            if spans is None:
                raise _Refused(404, f"no trace {trace_id[:40]!r}")
            self._json(200, {"trace_id": trace_id, "spans": spans})
        elif path == "/api/dependencies":
            self._json(200, store.dependencies(_int(query, "start_us"), _int(query, "end_us")))
        elif path == "/api/dashboard":
            service = _one(query, "service")
            if not service:
                raise _Refused(400, "name a service: /api/dashboard?service=S")
            self._json(
                200,
                store.dashboard(
                    service,
                    _int(query, "start_us"),
                    _int(query, "end_us"),
                    _int(query, "step_s", 1) or 60,
                ),
            )
        elif path == "/api/memory":
            self._json(
                200,
                store.memory(
                    _one(query, "service") or None, _int(query, "start_us"), _int(query, "end_us")
                ),
            )
        elif path == "/api/profiles":
            self._json(200, {"profiles": store.profiles(_one(query, "service") or None)})
        elif path.startswith("/api/profiles/"):
            text = path[len("/api/profiles/") :]
            profile = store.profile(int(text)) if text.isdigit() and len(text) < 19 else None
            if profile is None:
                raise _Refused(404, f"no profile {text[:40]!r}")
            self._json(200, profile)
        elif path == "/api/stats":
            self._json(200, {**store.stats(), "receiver_url": self.server.viewer.receiver_url})
        else:
            raise _Refused(404, f"no API {path[:100]!r}")


class Viewer:
    """``tracer serve`` in a process: the store, the receiver port and the UI port.

    ``Viewer(db).start()`` opens (or creates) the SQLite file ``db`` and listens on ``host``;
    a port of 0 takes a free one (:attr:`url` and :attr:`receiver_url` say which). On any
    address but a loopback one a token is required: ``token``, or one generated here. Both
    ports answer every path. :meth:`stop` stops listening and closes the store; it is also
    what leaving a ``with`` block does.
    """

    def __init__(
        self,
        db: str | os.PathLike[str],
        host: str = "127.0.0.1",
        port: int = 0,
        otlp_port: int = 0,
        max_size: int = 1 << 30,
        token: str | None = None,
    ) -> None:
        self.db = Path(db)
        self.host = host
        self.max_size = max_size
        self.loopback = _is_loopback(host)
        if token is None and not self.loopback:
            token = secrets.token_urlsafe(24)
        #: The token every request must carry, or None (loopback only).
        self.token = token
        self._ports = (port, otlp_port)
        self._servers: list[_Server] = []
        self._threads: list[threading.Thread] = []
        self._store: Store | None = None
        # Requests under way, so that stop() closes the store only after they are answered.
        self._active = 0
        self._idle = threading.Condition()
        self.static: dict[str, str] = {}
        self.protobuf = _protobuf_available()

    # -- life ----------------------------------------------------------------------------------

    def start(self) -> Viewer:
        """Open the store and start listening; OSError when a port cannot be had (the store
        is closed again then)."""
        from tracer.serve.store import Store

        if self._servers:
            return self
        self.static = _static_names()
        self.db.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with suppressed():
            self._store = Store(self.db, max_size=self.max_size)
        try:
            ui_port, otlp_port = self._ports
            self._servers.append(self._listen(ui_port))
            if otlp_port == 0 or otlp_port != self.port:
                self._servers.append(self._listen(otlp_port))
        except BaseException:
            self._close_servers()
            with suppressed():
                self._store.close()
            self._store = None
            raise
        for server in self._servers:
            thread = threading.Thread(
                target=self._serve, args=(server,), name="tracer-serve", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    def _listen(self, port: int) -> _Server:
        cls = _Server6 if ":" in self.host else _Server
        server = cls((self.host.strip("[]"), port), _Handler)
        server.viewer = self
        return server

    @staticmethod
    def _serve(server: _Server) -> None:
        with suppressed():
            server.serve_forever(poll_interval=0.2)

    def _close_servers(self) -> None:
        for server in self._servers:
            server.server_close()

    def stop(self) -> None:
        """Stop listening, wait for the serving threads, and close the store."""
        for server, thread in zip(self._servers, self._threads, strict=False):
            server.shutdown()
            thread.join()
        self._close_servers()
        self._servers.clear()
        self._threads.clear()
        with self._idle:
            self._idle.wait_for(lambda: self._active == 0, timeout=STOP_TIMEOUT)
        if self._store is not None:
            with suppressed():
                self._store.close()
            self._store = None

    def __enter__(self) -> Viewer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- where ---------------------------------------------------------------------------------

    @property
    def store(self) -> Store:
        """The open :class:`tracer.serve.store.Store` (after :meth:`start`)."""
        if self._store is None:
            raise RuntimeError("the viewer is not started")
        return self._store

    @property
    def port(self) -> int:
        """The UI's port (the real one once started)."""
        return self._servers[0].server_address[1] if self._servers else self._ports[0]

    @property
    def otlp_port(self) -> int:
        """The receiver's port (the real one once started)."""
        return self._servers[-1].server_address[1] if self._servers else self._ports[1]

    @property
    def base_url(self) -> str:
        """The UI's address without the token: ``http://127.0.0.1:8686``."""
        return f"http://{_url_host(self.host)}:{self.port}"

    @property
    def url(self) -> str:
        """The UI's URL, ``http://127.0.0.1:8686/``, with ``?token=...`` when one is in force."""
        return f"{self.base_url}/" + ("" if self.token is None else f"?token={self.token}")

    @property
    def receiver_url(self) -> str:
        """The receiver's address, ``http://127.0.0.1:4318``: OTLP exporters take it as their
        endpoint, the paths are ``/v1/traces``, ``/v1/metrics``, ``/api/v2/spans`` and
        ``/api/v1/batches``."""
        return f"http://{_url_host(self.host)}:{self.otlp_port}"

    def banner(self) -> Iterator[str]:
        """The lines ``tracer serve`` prints: the URL first, then the receiver and the db."""
        yield self.url
        yield (
            f"receiver {self.receiver_url} (POST /v1/traces, /v1/metrics, /api/v2/spans,"
            f" /api/v1/batches); database {self.db} (at most {_human(self.max_size)})"
        )


def run(
    db: str | os.PathLike[str] | None,
    host: str,
    port: int,
    otlp_port: int,
    max_size: int,
    token: str | None,
) -> int:
    """``tracer serve``: serve until SIGINT or SIGTERM, then close the store; the exit status."""
    import signal
    import sys

    viewer = Viewer(
        default_db() if db is None else db,
        host=host,
        port=port,
        otlp_port=otlp_port,
        max_size=max_size,
        token=token,
    )
    try:
        viewer.start()
    except OSError as exc:
        print(
            f"tracer serve: cannot start on {host} (ports {port}, {otlp_port}) with database"
            f" {viewer.db}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    except Exception as exc:  # the store refusing the file: one line, not a traceback
        print(f"tracer serve: cannot open the database {viewer.db}: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for line in viewer.banner():
            print(line, flush=True)
        while not stop.wait(1.0):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        viewer.stop()
    return 0
