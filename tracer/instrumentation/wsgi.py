"""The WSGI core: a server span (SR/SS) for every request of a WSGI application.

Frameworks sit on it (:mod:`tracer.instrumentation.flask`, Django), and ``tracer.wsgi(app)``
wraps any other WSGI application with it. Its interface:

* :func:`wrap` ``(app, runtime)``: a WSGI callable that traces each request of ``app``;
* :func:`call` ``(runtime, app, environ, start_response)``: the same for one request, for a
  framework's patched ``__call__``;
* a framework names the route by setting ``.route`` on the server span, which it finds with
  ``tracer.context.current.get()`` while the request runs (``span.route = "/users/<int:id>"``).
  The span is then named ``"GET /users/<int:id>"``; a request whose route no one named is named
  by its method alone, and counted under ``http_route="_OTHER"`` in metrics, never by its raw
  path.

SR is when the core is entered. SS is when the response is over: when the server calls the
response iterable's ``close()``, not when the application returned it, so a streamed response's
span covers the whole streaming. ``ttfb_us`` (a tag) is the time from SR to the first non-empty
chunk handed to the server. The status comes from ``start_response``, through which tracer's
response headers are added (the ones http.server sends, :meth:`Runtime.response_headers`).
Propagation (trace headers, W3C, B3), sampling, redaction and metrics are the runtime's, as for
every server.

Each request runs in a context of its own (a copy of the caller's), entered again for every chunk
and for ``close()``: code in a streaming generator sees the request's span, and nothing set while
serving one request is visible to the next one on the same worker thread.

One span per request, whatever the layers: the core marks the environ (:data:`ENVIRON_KEY`), so an
application wrapped twice (``tracer.wsgi()`` around a Flask app) is traced once, by the outer
layer, and the inner one only lets its framework name the route. A server built on http.server
(``wsgiref``, werkzeug's development server) already started a span when it parsed the request:
the core adopts that span and ends it, instead of starting another.

An exception raised by the application is recorded on the span, with status 500, and propagates
unchanged; an error inside tracer is counted (:func:`tracer.safety.internal_error`) and the
request goes on untraced.
"""

from __future__ import annotations

import contextvars
import time
import types
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from tracer import safety
from tracer.context import current
from tracer.instrumentation.base import Instrumentation
from tracer.propagation import header_map
from tracer.span import SERVER, Span

if TYPE_CHECKING:
    from tracer.runtime import Runtime

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

#: The environ key the core sets to the request's server span (None for an ignored request):
#: an inner layer that finds it adds no span of its own.
ENVIRON_KEY = "tracer.span"

_time_ns = time.time_ns
_copy_context = contextvars.copy_context

# The runtime whose propagation headers were last turned into environ keys, and those keys
# (None: the propagator reads headers it does not list, so every request's headers are read).
_environ_names: tuple[object, frozenset[str] | None] = (None, None)


def _names(runtime: Runtime) -> frozenset[str] | None:
    global _environ_names
    cached = _environ_names
    if cached[0] is runtime:
        return cached[1]
    names = runtime.propagator.header_names
    keys = (
        None if names is None else frozenset("HTTP_" + n.upper().replace("-", "_") for n in names)
    )
    _environ_names = (runtime, keys)
    return keys


def _headers(environ: dict[str, Any]) -> dict[str, str]:
    """All the request's headers as a header map, from the environ's ``HTTP_*`` keys."""
    items = [
        (key[5:].replace("_", "-"), value)
        for key, value in environ.items()
        if key[:5] == "HTTP_" and type(value) is str
    ]
    for key, name in (("CONTENT_TYPE", "content-type"), ("CONTENT_LENGTH", "content-length")):
        value = environ.get(key)
        if value:
            items.append((name, value))
    return header_map(items)


def _target(environ: dict[str, Any]) -> str:
    """The request target as received when the server kept it, else rebuilt from the environ."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if type(raw) is str and raw:
        return raw
    path = (environ.get("SCRIPT_NAME") or "") + (environ.get("PATH_INFO") or "") or "/"
    query = environ.get("QUERY_STRING")
    return f"{path}?{query}" if query else path


def _start(runtime: Runtime, environ: dict[str, Any]) -> Span | None:
    names = _names(runtime)
    host = environ.get("HTTP_HOST")
    if (
        names is None
        or runtime._ignoring
        or runtime.record_headers
        or not names.isdisjoint(environ)
    ):
        hmap = _headers(environ)
    else:
        # No trace header came, and nothing else reads the headers: only Host is needed.
        hmap = {} if host is None else {"host": host}
    return runtime.server_span(
        environ.get("REQUEST_METHOD") or "GET",
        _target(environ),
        hmap,
        environ.get("wsgi.url_scheme") or "http",
    )


def _adoptable(span: Span | None) -> bool:
    """Whether ``span`` is an http.server span for this very request, not yet answered."""
    return (
        span is not None
        and span.kind == SERVER
        and not span.finished
        and span.status_code is None
        and span.route is None
    )


def call(
    runtime: Runtime,
    app: WSGIApp,
    environ: dict[str, Any],
    start_response: Callable[..., Any],
) -> Iterable[bytes]:
    """Serve one request of ``app`` under a server span (see the module docstring)."""
    if ENVIRON_KEY in environ:
        # An outer layer traces this request: its span is current, the framework names it.
        return app(environ, start_response)
    ctx = _copy_context()
    return ctx.run(_serve, runtime, app, environ, start_response, ctx)


def _serve(
    runtime: Runtime,
    app: WSGIApp,
    environ: dict[str, Any],
    start_response: Callable[..., Any],
    ctx: contextvars.Context,
) -> Iterable[bytes]:
    try:
        span = current.get()
        if span is None or not _adoptable(span):
            span = _start(runtime, environ)
        environ[ENVIRON_KEY] = span
        if span is None:
            return app(environ, start_response)
        current.set(span)
        # Named by its route once a framework names one, else by its method alone.
        span.name = span.method or "GET"
        exchange = _Exchange(span, ctx, start_response, runtime.response_headers)
    except Exception as exc:
        safety.internal_error("wsgi.start", exc)
        return app(environ, start_response)
    try:
        result = app(environ, exchange)
    except BaseException as exc:
        _failed(span, exc)
        _end(span)
        raise
    try:
        wrapper = environ.get("wsgi.file_wrapper")
        if wrapper is not None and type(result) is wrapper:
            return _file(result, span, ctx)
        # The same object is the server's response iterable now.
        exchange._next = iter(result).__next__
        exchange._close = getattr(result, "close", None)
        return exchange
    except Exception as exc:
        safety.internal_error("wsgi.body", exc)
        _end(span)
        return result


def _failed(span: Span, exc: BaseException) -> None:
    try:
        span.record_exception(exc)
        span.status_code = 500
    except Exception as inner:
        safety.internal_error("wsgi.error", inner)


def _end(span: Span) -> None:
    try:
        route = span.route
        if route is not None:
            span.name = f"{span.method} {route}"
        tags = span.tags
        if tags is None:
            # Nothing was sent before the end: the first byte went with the last.
            span.tags = {"ttfb_us": max(0, _time_ns() // 1000 - span.start_us)}
        elif "ttfb_us" not in tags:
            tags["ttfb_us"] = max(0, _time_ns() // 1000 - span.start_us)
        span.finish()
    except Exception as exc:
        safety.internal_error("wsgi.finish", exc)


def _file(result: Any, span: Span, ctx: contextvars.Context) -> Iterable[bytes]:
    """A ``wsgi.file_wrapper`` response, which the server may send with ``sendfile()`` when it
    gets its own wrapper back: the span ends in the wrapper's ``close()``."""
    original = getattr(result, "close", None)

    def close() -> None:
        try:
            if original is not None:
                ctx.run(original)
        finally:
            _end(span)

    result.close = close
    out: Iterable[bytes] = result
    return out


class _Exchange:
    """One request: the ``start_response`` the application is given, then the response iterable
    the server gets, running the application's in the request's context; the span ends when
    the server closes it. One object, so a request allocates one thing here."""

    __slots__ = ("_close", "_ctx", "_headers", "_next", "_sent", "_span", "_start_response")

    def __init__(
        self,
        span: Span,
        ctx: contextvars.Context,
        start_response: Callable[..., Any],
        headers: Callable[..., bytes],
    ) -> None:
        self._span = span
        self._ctx = ctx
        self._start_response = start_response
        self._headers = headers
        self._sent = False
        self._next: Callable[[], bytes] | None = None
        self._close: Callable[[], Any] | None = None

    # -- start_response ---------------------------------------------------------------------

    def __call__(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        try:
            span = self._span
            span.status_code = int(status[:3])
            extra: dict[str, str] = {}
            self._headers(span, extra)
            # A new list: the application's may be a constant it passes on every request.
            headers = [*headers, *extra.items()]
        except Exception as exc:
            safety.internal_error("wsgi.headers", exc)
        if exc_info is None:
            return self._start_response(status, headers)
        return self._start_response(status, headers, exc_info)

    # -- the response iterable --------------------------------------------------------------

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        next_ = self._next
        if next_ is None:
            raise StopIteration
        try:
            chunk: bytes = self._ctx.run(next_)
        except BaseException as exc:
            if type(exc) is not StopIteration:
                span = self._span
                try:
                    span.record_exception(exc)
                    if not self._sent:
                        # Nothing went out yet: the server answers 500 itself.
                        span.status_code = 500
                except Exception as inner:
                    safety.internal_error("wsgi.error", inner)
            raise
        if chunk and not self._sent:
            self._sent = True
            span = self._span
            ttfb = _time_ns() // 1000 - span.start_us
            tags = span.tags
            if tags is None:
                span.tags = {"ttfb_us": ttfb}
            else:
                tags["ttfb_us"] = ttfb
        return chunk

    def close(self) -> None:
        try:
            close = self._close
            if close is not None:
                self._ctx.run(close)
        except BaseException as exc:
            _failed(self._span, exc)
            raise
        finally:
            _end(self._span)


class Traced:
    """A WSGI application traced by the core: what :func:`wrap` returns.

    ``runtime`` is a :class:`~tracer.runtime.Runtime`, or a function giving the one installed
    now (or None, and the request is served untraced at the cost of that one call).
    """

    __slots__ = ("__wrapped__", "_runtime", "_source")

    def __init__(self, app: WSGIApp, runtime: Runtime | Callable[[], Runtime | None]) -> None:
        self.__wrapped__ = app
        if callable(runtime):
            self._runtime: Runtime | None = None
            self._source: Callable[[], Runtime | None] | None = runtime
        else:
            self._runtime = runtime
            self._source = None

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        source = self._source
        runtime = self._runtime if source is None else source()
        if runtime is None:
            return self.__wrapped__(environ, start_response)
        return call(runtime, self.__wrapped__, environ, start_response)

    def __getattr__(self, name: str) -> Any:
        # The application's own attributes (Flask's config, a Django handler's) stay reachable.
        return getattr(self.__wrapped__, name)


def wrap(app: WSGIApp, runtime: Runtime | Callable[[], Runtime | None]) -> Traced:
    """``app`` traced by the core: each request gets a server span (see the module docstring).

    ``runtime`` is the runtime to use, or a function returning the installed one or None.
    Wrapping a :class:`Traced` application again returns it as it is.
    """
    if isinstance(app, Traced):
        return app
    return Traced(app, runtime)


class WsgirefInstrumentation(Instrumentation):
    """``wsgiref.simple_server``: every application it serves goes through the core.

    http.server's instrumentation starts the span when wsgiref's handler parses the request, but
    wsgiref's ``handle()`` serves it without ``handle_one_request`` or ``end_headers``, where that
    span would be answered and ended: here the core adopts it (status, headers, SS at
    ``close()``), and each connection is served in a context of its own.
    """

    name = "wsgiref"
    module = "wsgiref.simple_server"

    def _install(self, module: types.ModuleType) -> None:
        runtime = self.runtime
        assert runtime is not None
        copy_context = _copy_context

        def make_handle(original: Callable[..., Any]) -> Any:
            def handle(self: Any) -> Any:
                return copy_context().run(serve, self)

            def serve(self: Any) -> Any:
                try:
                    return original(self)
                finally:
                    # A request refused before the application ran (a malformed one) still
                    # ends the span http.server started for it.
                    span = getattr(self, "_tracer_span", None)
                    if span is not None:
                        self._tracer_span = None
                        if not span.finished:
                            _end(span)

            return handle

        def make_get_app(original: Callable[..., Any]) -> Any:
            def get_app(self: Any) -> Any:
                app = original(self)
                if app is None or not _adoptable(current.get()):
                    # No span for this request (tracer's own metrics server, an ignored path).
                    return app
                traced = self.__dict__.get("_tracer_app")
                # Made again for another application, or after tracer was installed again.
                if (
                    traced is None
                    or traced.__wrapped__ is not app
                    or traced._runtime is not runtime
                ):
                    traced = self._tracer_app = Traced(app, runtime)
                return traced

            return get_app

        self.replace(module.WSGIRequestHandler, "handle", make_handle)
        self.replace(module.WSGIServer, "get_app", make_get_app)
