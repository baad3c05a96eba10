"""A client span around an outgoing HTTP call made with a library tracer does not patch.

tracer instruments requests, httpx, urllib3, urllib and http.client, and aiohttp; calls made
with a client of one's own get no span and carry no trace headers. :class:`client_call` gives
them both (an instrumented library called inside it adds no span of its own)::

    with tracer.client_call("GET", url) as call:
        request = urllib.request.Request(url, headers=call.headers)
        with urllib.request.urlopen(request, timeout=5) as response:
            call.response(response.status, response.headers)
            body = response.read()
"""

from __future__ import annotations

import http.client
import urllib.error
from contextvars import Token
from types import TracebackType
from typing import Any

from tracer import installer, safety
from tracer.context import call_began, calling, suppress
from tracer.propagation import header_map
from tracer.span import Span


class client_call:
    """A client span (CS ... CR) for one outgoing HTTP call, as a context manager.

    ``call.headers`` holds the propagation headers to send with the request (a new dict; empty
    when tracer is not installed, the host is in ``ignore_hosts`` or tracing is suppressed).
    ``call.response(status, headers)`` records the answer: its status, and the callee's
    ``x-must-collect``. The span is a child of the current span (or starts a trace) and ends
    with the block. An exception leaving the block before a response was recorded marks the
    call as a ``network-error`` when it is an ``OSError`` or an ``http.client.HTTPException``
    (no answer came), and as that exception otherwise; ``urllib.error.HTTPError`` counts as the
    response it carries. The exception always propagates unchanged.
    """

    __slots__ = ("_answered", "_span", "_token", "headers", "method", "url")

    def __init__(self, method: str, url: str) -> None:
        self.method = method
        self.url = url
        self.headers: dict[str, str] = {}
        self._span: Span | None = None
        self._token: Token[object] | None = None
        self._answered = False

    def __enter__(self) -> client_call:
        rt = installer.runtime
        if rt is None or suppress.get() or self._span is not None:
            return self
        try:
            span = rt.client_span(self.method, self.url)
            if span is not None:
                rt.inject(span, self.headers)
                self._span = span
                # An instrumented library called inside the block adds no span of its own.
                self._token = call_began()
        except Exception as exc:
            safety.internal_error("client_call.start", exc)
        return self

    def response(self, status: int, headers: Any = None) -> None:
        """Record the response: its status code and, optionally, its headers (a mapping, an
        ``http.client.HTTPMessage``, or ``(name, value)`` pairs)."""
        self._answered = True
        span = self._span
        if span is not None:
            self._record(span, status, headers)

    @staticmethod
    def _record(span: Span, status: int, headers: Any) -> None:
        rt = installer.runtime
        if rt is None:
            return
        try:
            items = getattr(headers, "items", None)
            pairs = items() if callable(items) else (headers or ())
            rt.read_response(span, int(status), header_map(pairs).get)
        except Exception as exc:
            safety.internal_error("client_call.response", exc)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        span, self._span = self._span, None
        if span is None:
            return
        token, self._token = self._token, None
        if token is not None:
            calling.reset(token)
        try:
            if exc is None:
                pass
            elif self._answered:
                span.record_exception(exc)
            elif isinstance(exc, urllib.error.HTTPError):
                # urlopen raises the answer itself for a 4xx or 5xx status.
                self._record(span, exc.code, exc.headers)
            elif isinstance(exc, (OSError, http.client.HTTPException)):
                span.record_network_error(exc)
            else:
                span.record_exception(exc)
            span.finish()
        except Exception as inner:
            safety.internal_error("client_call.finish", inner)
