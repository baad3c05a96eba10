"""aiohttp.web: a server span (SR/SS) for every request of every application.

The patch sits on ``aiohttp.web_protocol.RequestHandler._handle_request``, which aiohttp calls for
each request on every connection, in a task of its own. An ``Application`` binds its ``_handle``
into the server when its runner is set up, so patching the application would miss apps set up
before ``install()``; the protocol method is looked up afresh for each request, so every
application is covered whenever it or aiohttp was imported or created, and ``web.Application``
stays the very same class.

* SR is taken when the request task starts; the span is current while the handler runs, so
  tasks the handler creates (``create_task``, ``gather``) are its children.
* The span ends when ``_handle_request`` returns: the response was prepared and ``write_eof`` ran,
  so a streamed body is complete; a WebSocket handler returns when the socket closes. SS is the
  moment the headers of a ``web.Response`` (whose body leaves with them) are prepared, so that
  the caller's CR can never precede it; for a streamed response it is the span's end.
* An exception other than ``HTTPException`` reaches ``RequestHandler.handle_error``, which
  aiohttp calls only then: the span records it there, aiohttp answers exactly as it would
  (500, or 504 for a timeout), and the span takes the status that was sent. Requests that
  succeed pay nothing for this.
* The response headers (``x-parent``, ..., see ``Runtime.response_headers``) are added in
  ``StreamResponse._prepare_headers``, the step every response (plain, streamed, file,
  WebSocket, error page) takes before its headers are written.
"""

from __future__ import annotations

import sys
import time
import types
from collections.abc import Callable
from typing import Any

from tracer import safety
from tracer.context import current
from tracer.instrumentation.base import Instrumentation
from tracer.span import SERVER, Span


def _server_span() -> Span | None:
    """The server span of the request this task serves (``current`` may hold a child of it)."""
    span = current.get()
    if span is None or span.kind == SERVER:
        return span
    root = span.local.root
    return root if root is not None and root.kind == SERVER and not root.finished else None


def _route_name(span: Span, request: Any, names: dict[Any, str]) -> None:
    """Name the span after the matched route's canonical form (``GET /users/{id}``)."""
    match_info = getattr(request, "_match_info", None)
    route = getattr(match_info, "route", None)
    if route is None:
        return
    # Looked up once per route: the resource's canonical form does not change.
    canonical = names.get(route)
    if canonical is None:
        resource = getattr(route, "resource", None)
        if resource is None:
            return
        canonical = resource.canonical
        if len(names) >= 1024:
            names.clear()
        names[route] = canonical
    span.route = canonical
    span.name = f"{span.method} {canonical}"


class AiohttpServerInstrumentation(Instrumentation):
    """Server spans for ``aiohttp.web`` (and the low-level ``aiohttp.web.Server``)."""

    name = "aiohttp.server"
    # The server half of aiohttp: a client-only application never imports it, and is not made to.
    module = "aiohttp.web_protocol"

    def _install(self, module: types.ModuleType) -> None:
        from aiohttp import web_protocol, web_response

        runtime = self.runtime
        assert runtime is not None
        plain_response = web_response.Response
        start_span = runtime.server_span
        response_headers = runtime.response_headers
        time_ns = time.time_ns
        # route -> its resource's canonical form (bounded: applications may come and go).
        route_names: dict[Any, str] = {}

        # These three run for every request, so they are installed as plain functions with
        # aiohttp's own signatures (patching.replace), not behind the generic wrapper.

        def make_handle_request(original: Callable[..., Any]) -> Any:
            async def _handle_request(self: Any, request: Any, *args: Any, **kw: Any) -> Any:
                try:
                    try:
                        # What the public properties would compute, read where aiohttp keeps
                        # it: each property costs a Python call on first use, on every request.
                        message = request._message
                        method, target, headers = message.method, message.path, message.headers
                        scheme = "https" if request._transport_sslcontext else "http"
                    except AttributeError:
                        method, target = request.method, request.raw_path
                        headers, scheme = request.headers, request.scheme
                    span = start_span(method, target, headers, scheme, True)
                except Exception as exc:
                    span = None
                    safety.internal_error("aiohttp.server.start", exc)
                if span is None:
                    return await original(self, request, *args, **kw)
                # This runs in the request's own task, so the value ends with it; the token
                # puts the task's context back as it was all the same.
                token = current.set(span)
                try:
                    result = await original(self, request, *args, **kw)
                except BaseException as exc:
                    try:
                        # E.g. the client went away, or the error page could not be sent.
                        if span.error is None:
                            span.record_exception(exc)
                        _route_name(span, request, route_names)
                        span.finish()
                    except Exception as inner:
                        safety.internal_error("aiohttp.server.finish", inner)
                    raise
                finally:
                    current.reset(token)
                try:
                    _route_name(span, request, route_names)
                    if span.status_code is None:
                        response = result[0] if isinstance(result, tuple) else result
                        span.status_code = int(response.status)
                    span.finish()
                except Exception as exc:
                    safety.internal_error("aiohttp.server.finish", exc)
                return result

            return _handle_request

        def make_handle_error(original: Callable[..., Any]) -> Any:
            def handle_error(self: Any, request: Any, *args: Any, **kw: Any) -> Any:
                # aiohttp calls this, and only this, when a handler raised something other than
                # an HTTPException (a 504 for a timeout, else a 500), while the exception is
                # handled: so errors cost nothing on requests that succeed.
                span = _server_span()
                if span is not None and span.error is None:
                    try:
                        exc = args[1] if len(args) > 1 else kw.get("exc")
                        if exc is None:
                            exc = sys.exc_info()[1]
                        if exc is not None:
                            span.record_exception(exc)
                    except Exception as inner:
                        safety.internal_error("aiohttp.server.error", inner)
                return original(self, request, *args, **kw)

            return handle_error

        def make_prepare_headers(original: Callable[..., Any]) -> Any:
            def _prepare_headers(self: Any, *args: Any, **kw: Any) -> Any:
                span = current.get()
                if span is not None and span.kind != SERVER:
                    span = _server_span()
                if span is not None:
                    try:
                        span.status_code = self.status
                        response_headers(span, self._headers)
                        if type(self) is plain_response:
                            # Its whole body goes out with these headers: that is SS (see
                            # Span.sent_us). A streamed response's SS is when its handler is
                            # done writing.
                            span.sent_us = time_ns() // 1000
                    except Exception as exc:
                        safety.internal_error("aiohttp.server.headers", exc)
                return original(self, *args, **kw)

            return _prepare_headers

        self.replace(web_protocol.RequestHandler, "_handle_request", make_handle_request)
        self.replace(web_protocol.RequestHandler, "handle_error", make_handle_error)
        self.replace(web_response.StreamResponse, "_prepare_headers", make_prepare_headers)
