"""http.server: a server span (SR/SS) for every request of any BaseHTTPRequestHandler.

SR is taken when ``parse_request`` has read the request line and headers. The span ends when
``handle_one_request`` returns, once the handler wrote its response and the output was flushed;
SS is when the last write of the response began (see ``_TimedWriter``), so that the caller's CR
can never precede it. The status and tracer's response headers are handled in ``end_headers``.
Each request runs in a copy of the connection's context, so nothing set while serving one request
on a keep-alive connection is visible to the next.
"""

from __future__ import annotations

import contextvars
import time
import types
from collections.abc import Callable
from typing import Any

from tracer import safety
from tracer.context import current
from tracer.instrumentation.base import Instrumentation
from tracer.propagation import header_map
from tracer.span import Span

_SPAN = "_tracer_span"
_time_ns = time.time_ns


class _TimedWriter:
    """The connection's ``wfile``, noting when each write starts (the span's SS, see Span).

    Everything but ``write`` is the original writer's, so handlers see no difference.
    """

    __slots__ = ("_raw", "span")

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self.span: Span | None = None

    def write(self, data: Any) -> Any:
        span = self.span
        if span is not None:
            span.sent_us = _time_ns() // 1000
        return self._raw.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


class HttpServerInstrumentation(Instrumentation):
    name = "http.server"
    module = "http.server"

    def _install(self, module: types.ModuleType) -> None:
        handler = module.BaseHTTPRequestHandler
        runtime = self.runtime
        assert runtime is not None

        def handle_one_request(
            wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kw: dict[str, Any]
        ) -> Any:
            return contextvars.copy_context().run(_serve_one, wrapped, instance, args, kw)

        def _serve_one(
            wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kw: dict[str, Any]
        ) -> Any:
            try:
                result = wrapped(*args, **kw)
            except BaseException as exc:
                span = instance.__dict__.pop(_SPAN, None)
                if span is not None:
                    try:
                        span.record_exception(exc)
                        span.finish()
                    except Exception as inner:
                        safety.internal_error("http.server.finish", inner)
                raise
            span = instance.__dict__.pop(_SPAN, None)
            if span is not None:
                try:
                    span.finish()
                except Exception as exc:
                    safety.internal_error("http.server.finish", exc)
            return result

        def parse_request(
            wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kw: dict[str, Any]
        ) -> Any:
            ok = wrapped(*args, **kw)
            if ok:
                try:
                    headers = instance.headers
                    # The parsed (name, value) pairs as received; items() would re-parse each.
                    raw = getattr(headers, "_headers", None)
                    hmap = header_map(raw if isinstance(raw, list) else headers.items())
                    span = runtime.server_span(instance.command, instance.path, hmap)
                    if span is not None:
                        instance.__dict__[_SPAN] = span
                        current.set(span)
                        wfile = instance.wfile
                        if type(wfile) is not _TimedWriter:
                            wfile = instance.wfile = _TimedWriter(wfile)
                        wfile.span = span
                except Exception as exc:
                    safety.internal_error("http.server.start", exc)
            return ok

        def end_headers(
            wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kw: dict[str, Any]
        ) -> Any:
            span: Span | None = instance.__dict__.get(_SPAN)
            if span is not None:
                try:
                    # The status line is the first line buffered by send_response(); reading the
                    # status there spares a patch of send_response_only on every request.
                    buffer = getattr(instance, "_headers_buffer", None)
                    if buffer:
                        code = int(buffer[0].split(None, 2)[1])
                        if code >= 200:  # not on a "100 Continue"
                            span.status_code = code
                            lines = "".join(
                                f"{name}: {value}\r\n"
                                for name, value in runtime.response_headers(span)
                            )
                            buffer.append(lines.encode("latin-1"))
                except Exception as exc:
                    safety.internal_error("http.server.headers", exc)
            return wrapped(*args, **kw)

        self.wrap(handler, "handle_one_request", handle_one_request)
        self.wrap(handler, "parse_request", parse_request)
        self.wrap(handler, "end_headers", end_headers)
