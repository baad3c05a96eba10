"""The ASGI core: a server span (SR/SS) for every ``http`` and ``websocket`` scope of an ASGI app.

Frameworks sit on it (:mod:`tracer.instrumentation.starlette`, Django's ASGI handler), and
``tracer.asgi(app)`` wraps any other ASGI application with it. Its interface:

* :func:`wrap` ``(app, runtime)``: an ASGI application that traces each scope of ``app``;
* :func:`call` ``(runtime, app, scope, receive, send)``: the same for one scope, awaited by a
  framework's patched ``__call__``;
* a framework names the route by setting ``.route`` on the server span, which it finds with
  ``tracer.context.current.get()`` while the request runs, or as ``scope[SCOPE_KEY]``
  (``span.route = "/users/{id}"``). The span is then named ``"GET /users/{id}"``; a request
  whose route no one named is named by its method alone and counted under
  ``http_route="_OTHER"`` in metrics, never by its raw path.

SR is when the core is entered. SS is when the last ``http.response.body`` message (the one
with ``more_body`` false) is handed to the server, and the span ends once the server took it:
a streamed response or a server-sent event stream is one span covering the whole stream.
``ttfb_us`` (a tag) is the time from SR to the first body message that carries bytes. The status
comes from ``http.response.start``, where tracer's response headers (the ones every traced
server sends, :meth:`Runtime.response_headers`) are added. Propagation (trace headers, W3C, B3),
sampling, redaction and metrics are the runtime's, as for every server. No span is made per
``send`` or ``receive`` message, and ``lifespan`` scopes pass through untraced.

A websocket connection is one span of kind ``websocket`` (:data:`tracer.span.WEBSOCKET`), from
the handshake to the application's return: status 101 once accepted, 403 when closed before.
It is not counted in the request-duration histogram.

Each scope runs with its span current, set with a token and reset when the application returns,
so nothing of one request is seen by the next one served by the same task. Work the request
starts (Starlette's background tasks, threads of ``run_in_threadpool``, task groups) inherits
the context, so its spans are children of the request's span.

One span per request, whatever the layers: the core marks the scope (:data:`SCOPE_KEY`, set to
the span, or None for an ignored request), so an application wrapped twice (``tracer.asgi()``
around a Starlette app, uvicorn's own layer around Django's ASGI handler) is traced once, by the
outer layer; the inner one only names the route.

An exception raised by the application is recorded on the span, with status 500 when no
response had started, and propagates unchanged. A 5xx response sent while an exception is being
handled (Starlette's error middleware answers before it re-raises) records that exception. An
error inside tracer is counted (:func:`tracer.safety.internal_error`) and the request goes on.
"""

from __future__ import annotations

import sys
import time
import types
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from tracer import safety
from tracer.context import current
from tracer.instrumentation.base import Instrumentation
from tracer.span import WEBSOCKET, Span

if TYPE_CHECKING:
    from tracer.runtime import Runtime

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The scope key the core sets to the request's server span (None for an ignored request): an
#: inner layer that finds it adds no span of its own.
SCOPE_KEY = "tracer.span"

_time_ns = time.time_ns
_SCHEMES = {"http": "http", "https": "https", "ws": "http", "wss": "https"}


def _header_map(raw: Any) -> dict[str, str]:
    """The scope's ``(bytes, bytes)`` header pairs as a header map (lowercase names, repeated
    headers joined with ``,``)."""
    out: dict[str, str] = {}
    for name, value in raw:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        if key in out:
            out[key] = f"{out[key]},{text}"
        else:
            out[key] = text
    return out


def _start(runtime: Runtime, scope: Scope, websocket: bool) -> Span | None:
    raw_path = scope.get("raw_path")
    target = raw_path.decode("latin-1") if raw_path else scope.get("path") or "/"
    query = scope.get("query_string")
    if query:
        target = f"{target}?{query.decode('latin-1')}"
    span = runtime.server_span(
        "GET" if websocket else scope.get("method") or "GET",
        target,
        _header_map(scope.get("headers") or ()),
        _SCHEMES.get(scope.get("scheme") or "http", "http"),
    )
    if span is not None:
        # Named by its route once a framework names one, else by its method alone.
        span.name = span.method or "GET"
        if websocket:
            span.kind = WEBSOCKET
    return span


def _extra_headers(runtime: Runtime, span: Span) -> list[tuple[bytes, bytes]]:
    extra: dict[str, str] = {}
    runtime.response_headers(span, extra)
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()]


def _end(span: Span) -> None:
    try:
        if span.finished:
            return
        route = span.route
        if route is not None:
            span.name = f"{span.method} {route}"
        if span.kind != WEBSOCKET:
            tags = span.tags
            if tags is None or "ttfb_us" not in tags:
                # Nothing was sent before the end: the first byte went with the last.
                span.set_tag("ttfb_us", max(0, _time_ns() // 1000 - span.start_us))
        span.finish()
    except Exception as exc:
        safety.internal_error("asgi.finish", exc)


def _failed(span: Span, exc: BaseException, started: bool) -> None:
    try:
        if span.error is None:
            span.record_exception(exc)
        if not started:
            # Nothing went out: the server answers 500 itself.
            span.status_code = 500
    except Exception as inner:
        safety.internal_error("asgi.error", inner)


async def call(runtime: Runtime, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """Serve one scope of ``app`` under a server span (see the module docstring)."""
    kind = scope.get("type")
    websocket = kind == "websocket"
    if (kind != "http" and not websocket) or SCOPE_KEY in scope:
        # lifespan and other scopes; or an outer layer traces this one and the framework only
        # names its route.
        await app(scope, receive, send)
        return
    try:
        span = _start(runtime, scope, websocket)
        scope[SCOPE_KEY] = span
    except Exception as exc:
        safety.internal_error("asgi.start", exc)
        span = None
    if span is None:
        await app(scope, receive, send)
        return
    if websocket:
        await _websocket(runtime, span, app, scope, receive, send)
        return
    response_headers = runtime.response_headers
    # [response started, first bytes sent]
    state = [False, False]

    async def traced_send(message: Message) -> None:
        kind = message.get("type")
        if kind == "http.response.body":
            if not message.get("more_body", False):
                if not state[1]:
                    state[1] = True
                    span.set_tag("ttfb_us", _time_ns() // 1000 - span.start_us)
                span.sent_us = _time_ns() // 1000
                try:
                    await send(message)
                finally:
                    _end(span)
                return
            if not state[1] and message.get("body"):
                state[1] = True
                span.set_tag("ttfb_us", _time_ns() // 1000 - span.start_us)
        elif kind == "http.response.start":
            try:
                state[0] = True
                status = int(message["status"])
                span.status_code = status
                if status >= 500 and span.error is None:
                    # Answered by an error handler while it handles the exception.
                    exc = sys.exc_info()[1]
                    if exc is not None:
                        span.record_exception(exc)
                extra: dict[str, str] = {}
                response_headers(span, extra)
                # A new message and list: the application's may be constants it sends again.
                message = dict(message)
                message["headers"] = [
                    *(message.get("headers") or ()),
                    *[(k.encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()],
                ]
            except Exception as exc:
                safety.internal_error("asgi.headers", exc)
        elif kind == "http.response.pathsend":
            span.sent_us = _time_ns() // 1000
            try:
                await send(message)
            finally:
                _end(span)
            return
        await send(message)

    token = current.set(span)
    try:
        await app(scope, receive, traced_send)
    except BaseException as exc:
        if not span.finished:
            _failed(span, exc, state[0])
            _end(span)
        raise
    finally:
        current.reset(token)
    if not span.finished:
        if span.status_code is None:
            # The application returned without a response: the server answers 500.
            span.status_code = 500
        _end(span)


async def _websocket(
    runtime: Runtime, span: Span, app: ASGIApp, scope: Scope, receive: Receive, send: Send
) -> None:
    """One span for the whole connection; messages are not spans."""

    async def traced_send(message: Message) -> None:
        if span.status_code is None:
            kind = message.get("type")
            try:
                if kind == "websocket.accept":
                    span.status_code = 101
                    message = dict(message)
                    message["headers"] = [
                        *(message.get("headers") or ()),
                        *_extra_headers(runtime, span),
                    ]
                elif kind == "websocket.close":
                    # Closed before it was accepted: the handshake is refused.
                    span.status_code = 403
                elif kind == "websocket.http.response.start":
                    span.status_code = int(message["status"])
            except Exception as exc:
                safety.internal_error("asgi.headers", exc)
        await send(message)

    token = current.set(span)
    try:
        await app(scope, receive, traced_send)
    except BaseException as exc:
        _failed(span, exc, span.status_code is not None)
        _end(span)
        raise
    finally:
        current.reset(token)
    _end(span)


class Traced:
    """An ASGI application traced by the core: what :func:`wrap` returns.

    ``runtime`` is a :class:`~tracer.runtime.Runtime`, or a function giving the one installed
    now (or None, and the scope is served untraced at the cost of that one call).
    """

    __slots__ = ("__wrapped__", "_runtime", "_source")

    def __init__(self, app: ASGIApp, runtime: Runtime | Callable[[], Runtime | None]) -> None:
        self.__wrapped__ = app
        if callable(runtime):
            self._runtime: Runtime | None = None
            self._source: Callable[[], Runtime | None] | None = runtime
        else:
            self._runtime = runtime
            self._source = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        source = self._source
        runtime = self._runtime if source is None else source()
        if runtime is None:
            await self.__wrapped__(scope, receive, send)
            return
        await call(runtime, self.__wrapped__, scope, receive, send)

    def __getattr__(self, name: str) -> Any:
        # The application's own attributes (a Starlette app's routes, state) stay reachable.
        return getattr(self.__wrapped__, name)


def wrap(app: ASGIApp, runtime: Runtime | Callable[[], Runtime | None]) -> Traced:
    """``app`` traced by the core: each ``http`` and ``websocket`` scope gets a server span (see
    the module docstring).

    ``runtime`` is the runtime to use, or a function returning the installed one or None.
    Wrapping a :class:`Traced` application again returns it as it is.
    """
    if isinstance(app, Traced):
        return app
    return Traced(app, runtime)


def server_span(scope: Scope) -> Span | None:
    """The server span of the request ``scope`` belongs to, or None (not traced, or ignored)."""
    span = scope.get(SCOPE_KEY)
    return span if isinstance(span, Span) else None


class UvicornInstrumentation(Instrumentation):
    """uvicorn: every application it loads is served through the core.

    ``Config.load()`` is where uvicorn imports the application and wraps it in its own
    middleware; the result is wrapped once more, so any ASGI application (Django's handler, a
    bare one) gets its server spans, and a framework traced on its own (Starlette) finds the
    scope marked and only names its route.
    """

    name = "uvicorn"
    module = "uvicorn.config"

    def _install(self, module: types.ModuleType) -> None:
        def runtime() -> Runtime | None:
            # None once uninstalled: an application loaded before is then served untraced.
            return self.runtime if self.installed else None

        def load(
            wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kw: dict[str, Any]
        ) -> Any:
            result = wrapped(*args, **kw)
            try:
                app = getattr(instance, "loaded_app", None)
                if app is not None and not isinstance(app, Traced):
                    instance.loaded_app = Traced(app, runtime)
            except Exception as exc:
                safety.internal_error("uvicorn.load", exc)
            return result

        self.wrap(module.Config, "load", load)
