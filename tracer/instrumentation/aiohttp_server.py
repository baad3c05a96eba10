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

Those three methods, ``request._message`` and ``_transport_sslcontext`` are aiohttp's internals,
so they are patched only on the versions verified with them (:data:`VERIFIED`). On any other
version, or with ``TRACER_PUBLIC_HOOKS=1``, the same span comes from public hooks: a middleware
(SR, the span current while the handler runs, handler errors) and an ``on_response_prepare``
handler (status, response headers, SS) that ``Application.pre_freeze`` adds to every application
before it starts serving. Applications already serving at ``install()`` and the low-level
``web.Server`` are not traced then.
"""

from __future__ import annotations

import contextvars
import sys
import time
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tracer import safety
from tracer.context import current
from tracer.instrumentation.base import Instrumentation, fast_path
from tracer.propagation import header_map
from tracer.span import SERVER, Span

if TYPE_CHECKING:
    from tracer.runtime import Runtime

#: The aiohttp versions the fast path was verified with: lowest, and the first one not verified.
VERIFIED = ((3, 8, 3), (3, 15))

# Public hooks: the span the middleware left to on_response_prepare to finish (its response was
# returned unprepared, or the handler raised and aiohttp sends an error page).
_awaiting: contextvars.ContextVar[Span | None] = contextvars.ContextVar(
    "tracer_aiohttp_awaiting", default=None
)


def _case_insensitive_keys() -> bool:
    """Whether ``CIMultiDict.keys() & names`` ignores case (multidict 6 and later): only then
    can one set check on the raw headers tell that no trace header came."""
    from multidict import CIMultiDict

    return bool(CIMultiDict([("Request-Id", "")]).keys() & {"request-id"})


def _server_span() -> Span | None:
    """The server span of the request this task serves (``current`` may hold a child of it)."""
    span = current.get()
    if span is None or span.kind == SERVER:
        return span
    root = span.local.root
    return root if root is not None and root.kind == SERVER and not root.finished else None


def _route_name(span: Span, match_info: Any, names: dict[Any, str]) -> None:
    """Name the span after the matched route's canonical form (``GET /users/{id}``)."""
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
    #: Whether the private fast path is used (decided at install).
    fast = True

    def install(self, runtime: Runtime) -> None:
        """Decide between the fast path and the public hooks, then install as usual."""
        from importlib import metadata

        try:
            version = metadata.version("aiohttp")
        except metadata.PackageNotFoundError:
            version = ""
        self.fast = fast_path(self.name, version, *VERIFIED)
        # The public hooks wait for aiohttp.web_app: aiohttp.web_protocol is imported half-way
        # through it, before its Application exists.
        self.module = "aiohttp.web_protocol" if self.fast else "aiohttp.web_app"
        super().install(runtime)

    def _install(self, module: types.ModuleType) -> None:
        from aiohttp import web_protocol, web_response

        runtime = self.runtime
        assert runtime is not None
        ci_keys = _case_insensitive_keys()
        if not fast_path(
            self.name, str(getattr(sys.modules["aiohttp"], "__version__", "")), *VERIFIED
        ):
            self._install_public(runtime, ci_keys)
            return
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
                    if ci_keys:
                        span = start_span(method, target, headers, scheme, True)
                    else:
                        span = start_span(method, target, header_map(headers.items()), scheme)
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
                        _route_name(span, getattr(request, "_match_info", None), route_names)
                        span.finish()
                    except Exception as inner:
                        safety.internal_error("aiohttp.server.finish", inner)
                    raise
                finally:
                    current.reset(token)
                try:
                    _route_name(span, getattr(request, "_match_info", None), route_names)
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

    def _install_public(self, runtime: Runtime, ci_keys: bool) -> None:
        """The same spans through a middleware and ``on_response_prepare`` (see the module
        docstring)."""
        from aiohttp import web_exceptions

        route_names: dict[Any, str] = {}
        http_exception = web_exceptions.HTTPException

        async def middleware(request: Any, handler: Callable[..., Any]) -> Any:
            outer = _server_span()
            if outer is not None and not outer.finished:
                # A sub-application's copy of the middleware: the root's span serves.
                return await handler(request)
            try:
                headers = request.headers
                if not ci_keys:
                    headers = header_map(headers.items())
                span = runtime.server_span(
                    request.method, request.raw_path, headers, request.scheme, ci_keys
                )
            except Exception as exc:
                span = None
                safety.internal_error("aiohttp.server.start", exc)
            if span is None:
                return await handler(request)
            # Left set after the handler: on_response_prepare, later in this request's task,
            # finds the span through it.
            current.set(span)
            try:
                response = await handler(request)
            except http_exception:
                _awaiting.set(span)
                raise
            except Exception as exc:
                # aiohttp answers with an error page (500, or 504 for a timeout) after this.
                try:
                    span.record_exception(exc)
                except Exception as inner:
                    safety.internal_error("aiohttp.server.error", inner)
                _awaiting.set(span)
                raise
            except BaseException as exc:
                # The client went away: nothing more will be sent.
                try:
                    if span.error is None:
                        span.record_exception(exc)
                    _route_name(span, request.match_info, route_names)
                    span.finish()
                except Exception as inner:
                    safety.internal_error("aiohttp.server.finish", inner)
                raise
            try:
                _route_name(span, request.match_info, route_names)
                if getattr(response, "prepared", False):
                    # Streamed by the handler (a WebSocket too), whose writing is done.
                    if span.status_code is None:
                        span.status_code = int(response.status)
                    span.finish()
                else:
                    _awaiting.set(span)
            except Exception as exc:
                safety.internal_error("aiohttp.server.finish", exc)
            return response

        middleware.__middleware_version__ = 1  # type: ignore[attr-defined]

        async def on_prepare(request: Any, response: Any) -> None:
            span = _server_span()
            if span is None or span.finished:
                return
            try:
                span.status_code = int(response.status)
                runtime.response_headers(span, response.headers)
                if _awaiting.get() is span:
                    # Returned or raised by the handler, prepared now: its whole body goes out
                    # with these headers, so this is SS and the span's end.
                    span.sent_us = time.time_ns() // 1000
                    _route_name(span, request.match_info, route_names)
                    span.finish()
            except Exception as exc:
                safety.internal_error("aiohttp.server.headers", exc)

        def pre_freeze(
            wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kw: dict[str, Any]
        ) -> Any:
            try:
                if not instance.pre_frozen and middleware not in instance.middlewares:
                    instance.middlewares.insert(0, middleware)
                    instance.on_response_prepare.append(on_prepare)
            except Exception as exc:
                safety.internal_error("aiohttp.server.install", exc)
            return wrapped(*args, **kw)

        from aiohttp import web_app

        self.wrap(web_app.Application, "pre_freeze", pre_freeze)
