"""requests: a client span (CS/CR) around ``requests.Session.send``.

``Session.send`` is what ``requests.get`` and every session use, so one patch covers them all.
Connection errors and timeouts are recorded as ``network-error`` and re-raised unchanged.

The propagation headers are written where http.client writes the header block, not through
requests: each header put in ``request.headers`` costs requests, urllib3 and http.client about
26,000 instructions on its way to the socket (a dozen Python calls and two regular expressions),
and the default formats send six. When the session's adapters are requests' own ``HTTPAdapter``
(which sends through urllib3 and http.client), the headers wait in a context variable while the
request is sent, and ``HTTPConnection.endheaders`` appends them to the header block as one piece.
After the call they are put in ``request.headers`` too, so ``response.request.headers`` shows
what was sent. Any other adapter (a mock, a non-http.client transport) gets them in
``request.headers`` before the call, as a caller's own headers.
"""

from __future__ import annotations

import contextvars
import http.client
import types
from collections.abc import Callable
from typing import Any

from tracer import safety
from tracer.context import suppress
from tracer.instrumentation.base import Instrumentation
from tracer.propagation import Getter

# The header block for the request being sent in this context: (one piece of bytes to append to
# http.client's buffer, the same headers as pairs for a connection without that buffer).
_Pending = tuple[bytes, list[tuple[str, str]]]
# What goes on the wire, and (lowercase name, name, value) to show in request.headers after.
_Wire = tuple[_Pending, list[tuple[str, str, str]]]
_pending: contextvars.ContextVar[_Pending | None] = contextvars.ContextVar(
    "tracer_requests_headers", default=None
)


def _getter(headers: Any, case_insensitive: type) -> Getter:
    """A lookup of lowercase header names in requests' header dict.

    ``CaseInsensitiveDict.get`` of a missing name goes through ``Mapping.get`` and a raised
    KeyError, several times the cost of a dict lookup, and tracer asks for names that are
    nearly always missing. The dict keeps ``(name, value)`` under the lowercase name.
    """
    store = getattr(headers, "_store", None) if type(headers) is case_insensitive else None
    if not isinstance(store, dict):
        get: Getter = headers.get
        return get

    def lookup(name: str) -> str | None:
        item = store.get(name)
        return None if item is None else item[1]

    return lookup


class RequestsInstrumentation(Instrumentation):
    name = "requests"
    module = "requests"

    def _install(self, module: types.ModuleType) -> None:
        runtime = self.runtime
        assert runtime is not None
        network_errors: tuple[type[BaseException], ...] = (
            module.exceptions.ConnectionError,
            module.exceptions.Timeout,
        )
        case_insensitive = module.structures.CaseInsensitiveDict
        # The adapter whose send goes through urllib3 and http.client, as it is now: a test tool
        # that later replaces it (responses, requests-mock) makes sessions fall back to headers.
        plain_send = module.adapters.HTTPAdapter.send
        if getattr(plain_send, "__module__", None) != module.adapters.__name__:
            plain_send = None

        def send(
            wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kw: dict[str, Any]
        ) -> Any:
            if suppress.get():
                return wrapped(*args, **kw)
            span = None
            wire: _Wire | None = None
            try:
                request = args[0] if args else kw["request"]
                span = runtime.client_span(
                    request.method or "GET",
                    request.url,
                    _getter(request.headers, case_insensitive),
                )
                if span is not None:
                    wire = _wire_headers(runtime, span, request.headers, instance, plain_send)
            except Exception as exc:
                safety.internal_error("requests.start", exc)
            if span is None:
                return wrapped(*args, **kw)
            token = None if wire is None else _pending.set(wire[0])
            try:
                response = wrapped(*args, **kw)
            except BaseException as exc:
                if token is not None:
                    _sent(token, request, wire)
                try:
                    # Either way the span failed, so the collector keeps its trace.
                    if isinstance(exc, network_errors):
                        span.record_network_error(exc)
                    else:
                        span.record_exception(exc)
                    span.finish()
                except Exception as inner:
                    safety.internal_error("requests.finish", inner)
                raise
            if token is not None:
                _sent(token, request, wire)
            try:
                # With redirects followed, the response is the last hop's; this span's own
                # answer is the first in its history (each later hop has a span of its own).
                first = response.history[0] if response.history else response
                runtime.read_response(
                    span, first.status_code, _getter(first.headers, case_insensitive)
                )
                span.finish()
            except Exception as exc:
                safety.internal_error("requests.finish", exc)
            return response

        self.wrap(module.Session, "send", send)
        self.replace(http.client.HTTPConnection, "endheaders", _endheaders)


def _endheaders(original: Callable[..., Any]) -> types.FunctionType:
    def endheaders(self: Any, message_body: Any = None, *, encode_chunked: bool = False) -> Any:
        pending = _pending.get()
        if pending is not None:
            try:
                buffer = getattr(self, "_buffer", None)
                if type(buffer) is list:
                    buffer.append(pending[0])
                else:
                    for name, value in pending[1]:
                        self.putheader(name, value)
            except Exception as exc:
                safety.internal_error("requests.headers", exc)
        return original(self, message_body, encode_chunked=encode_chunked)

    return endheaders  # type: ignore[return-value]


def _wire_headers(
    runtime: Any, span: Any, headers: Any, session: Any, plain_send: Any
) -> _Wire | None:
    """Inject the span's headers; when they can go on the wire directly, what to send and show.

    Returns None after putting the headers in ``headers`` the usual way.
    """
    store = getattr(headers, "_store", None)
    adapters = getattr(session, "adapters", None)
    if isinstance(store, dict) and isinstance(adapters, dict):
        for adapter in adapters.values():
            if type(adapter).send is not plain_send:
                break
        else:
            out: dict[str, str] = {}
            runtime.inject(span, out)
            shown: list[tuple[str, str, str]] = []
            lines: list[str] = []
            for name, value in out.items():
                low = name.lower()
                # A header of the caller's with the same name gives way, as in request.headers.
                if low in store:
                    del store[low]
                shown.append((low, name, value))
                lines.append(f"{name}: {value}")
            text = "\r\n".join(lines)
            # Every value is built or validated by tracer; this makes sure none splits a header.
            if text.count("\n") != len(lines) - 1 or text.count("\r") != len(lines) - 1:
                raise ValueError("a propagation header holds a line break")
            return (text.encode("latin-1"), list(out.items())), shown
    runtime.inject(span, headers)
    return None


def _sent(token: contextvars.Token[_Pending | None], request: Any, wire: _Wire | None) -> None:
    """After the call: no headers wait any longer, and ``request.headers`` shows those sent."""
    _pending.reset(token)
    if wire is None:
        return
    try:
        store = request.headers._store
        for low, name, value in wire[1]:
            store[low] = (name, value)
    except Exception as exc:
        safety.internal_error("requests.headers", exc)
