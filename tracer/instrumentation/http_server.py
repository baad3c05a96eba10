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
from tracer.context import current, suppress
from tracer.instrumentation.base import Instrumentation
from tracer.propagation import header_map
from tracer.span import Span

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

    def flush(self) -> Any:
        # Called after every request: spelled out, so it does not go through __getattr__.
        return self._raw.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


class HttpServerInstrumentation(Instrumentation):
    name = "http.server"
    module = "http.server"

    def _install(self, module: types.ModuleType) -> None:
        handler = module.BaseHTTPRequestHandler
        runtime = self.runtime
        assert runtime is not None
        start_span = runtime.server_span
        response_headers = runtime.response_headers
        copy_context = contextvars.copy_context

        # Installed as plain functions with http.server's own signatures (patching.replace):
        # they run for every request, where the generic wrapper layer costs measurably.

        def make_handle_one_request(original: Callable[..., Any]) -> Any:
            def handle_one_request(self: Any) -> Any:
                return copy_context().run(serve_one, self)

            def serve_one(self: Any) -> Any:
                # The request's span is kept as a plain attribute, written before the request
                # is read: going through the handler's __dict__ instead would turn every
                # attribute access of http.server's own code into a slower, unspecialised one.
                self._tracer_span = None
                try:
                    result = original(self)
                except BaseException as exc:
                    end(self, exc)
                    raise
                end(self, None)
                return result

            def end(self: Any, exc: BaseException | None) -> None:
                span = self._tracer_span
                if span is not None:
                    self._tracer_span = None
                    try:
                        if exc is not None:
                            span.record_exception(exc)
                        span.finish()
                    except Exception as inner:
                        safety.internal_error("http.server.finish", inner)

            return handle_one_request

        def make_parse_request(original: Callable[..., Any]) -> Any:
            def parse_request(self: Any) -> Any:
                ok = original(self)
                # A server that must not trace itself (tracer serve's receivers) handles its
                # requests with tracing suppressed.
                if ok and not suppress.get():
                    try:
                        headers = self.headers
                        # The parsed (name, value) pairs as received; items() would re-parse.
                        raw = getattr(headers, "_headers", None)
                        hmap = header_map(raw if type(raw) is list else headers.items())
                        span = start_span(self.command, self.path, hmap)
                        if span is not None:
                            self._tracer_span = span
                            current.set(span)
                            wfile = self.wfile
                            if type(wfile) is not _TimedWriter:
                                wfile = self.wfile = _TimedWriter(wfile)
                            wfile.span = span
                    except Exception as exc:
                        safety.internal_error("http.server.start", exc)
                return ok

            return parse_request

        def make_end_headers(original: Callable[..., Any]) -> Any:
            def end_headers(self: Any) -> Any:
                span: Span | None = getattr(self, "_tracer_span", None)
                if span is not None:
                    try:
                        # The status line is the first line buffered by send_response();
                        # reading the status there spares a patch of send_response_only.
                        buffer = getattr(self, "_headers_buffer", None)
                        if buffer:
                            code = int(buffer[0].split(None, 2)[1])
                            # Not on a "100 Continue", nor on a span whose status is known
                            # already: the WSGI core answered it and added the headers.
                            if code >= 200 and span.status_code is None:
                                span.status_code = code
                                buffer.append(response_headers(span))
                    except Exception as exc:
                        safety.internal_error("http.server.headers", exc)
                return original(self)

            return end_headers

        self.replace(handler, "handle_one_request", make_handle_one_request)
        self.replace(handler, "parse_request", make_parse_request)
        self.replace(handler, "end_headers", make_end_headers)
