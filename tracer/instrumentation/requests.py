"""requests: a client span (CS/CR) around ``requests.Session.send``.

``Session.send`` is what ``requests.get`` and every session use, so one patch covers them all.
Connection errors and timeouts are recorded as ``network-error`` and re-raised unchanged.

The propagation headers go to the socket without passing through requests when they can: each
header in ``request.headers`` costs requests, urllib3 and http.client about 26,000 instructions
on its way out (a dozen Python calls and two regular expressions), and the default formats send
six. When the adapter that will send the request is requests' own ``HTTPAdapter`` (over
http.client's connections), the headers are handed to that adapter's ``send`` for this very
request, wait there as one encoded piece in a context variable, and
``http.client.HTTPConnection.endheaders`` appends the piece to the header block (each attempt
urllib3 makes, and nothing else). When that send returns they are put in ``request.headers``,
before hooks and auth handlers see the response. Any other adapter (a subclass overriding
``send``, a mock, another transport) gets them in ``request.headers`` before the call, as a
caller's own headers.
"""

from __future__ import annotations

import contextvars
import http.client
import inspect
import logging
import sys
import types
from collections.abc import Callable
from typing import Any

from tracer import safety
from tracer.context import suppress
from tracer.instrumentation.base import Instrumentation
from tracer.propagation import Getter

log = logging.getLogger("tracer")


class _Call:
    """The propagation headers of one traced call, on their way to the socket."""

    __slots__ = ("block", "entries", "request", "sending", "written")

    def __init__(
        self,
        request: Any,
        block: bytes,
        entries: list[tuple[str, tuple[str, str]]],
    ) -> None:
        # The request HTTPAdapter.send is to send with the headers; None once it has.
        self.request = request
        # The headers as one encoded piece of the header block.
        self.block = block
        # (lowercase name, (name, value)), as requests keeps them, for request.headers after
        # (and for a connection without http.client's buffer).
        self.entries = entries
        # True while HTTPAdapter.send sends the request; endheaders adds the headers only then.
        self.sending = False
        self.written = False


# Set by Session.send for its call (hooks and redirects included).
_call: contextvars.ContextVar[_Call | None] = contextvars.ContextVar(
    "tracer_requests_call", default=None
)


class _Mode:
    # Set when a request was answered without its headers passing through http.client's
    # endheaders (a connection class of someone's own): from then on they go in
    # request.headers, like any caller's headers.
    headers_only = False


def _store(headers: Any, case_insensitive: type) -> dict[str, Any] | None:
    """The dict inside requests' own header dict, which keeps ``(name, value)`` under the
    lowercase name; None for any other mapping."""
    store = getattr(headers, "_store", None) if type(headers) is case_insensitive else None
    return store if isinstance(store, dict) else None


def _getter(headers: Any, store: dict[str, Any] | None) -> Getter:
    """A lookup of lowercase header names, in ``store`` when there is one.

    ``CaseInsensitiveDict.get`` of a missing name goes through ``Mapping.get`` and a raised
    KeyError, several times the cost of a dict lookup, and tracer asks for names that are
    nearly always missing.
    """
    if store is None:
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
        # HTTPAdapter.send as replaced below.
        ours: Any = None

        def direct(session: Any, request: Any) -> bool:
            """Whether the adapter that will send ``request`` is HTTPAdapter's own send over
            http.client's connections."""
            if _Mode.headers_only:
                return False
            # The bound method's function is whatever send the instance has, a send patched on
            # the instance included. Looking in the adapter's __dict__ instead would make Python
            # 3.11 take a slower path for every later attribute access on that adapter; counted
            # under callgrind, it cost more than the rest of this check.
            try:
                adapter = session.get_adapter(request.url)
            except Exception:
                # No adapter for this scheme: Session.send raises InvalidSchema itself.
                return False
            if getattr(adapter.send, "__func__", None) is not ours:
                return False
            # urllib3's HTTP/2 connections, once injected, write their headers their own way.
            http2 = sys.modules.get("urllib3.http2")
            return getattr(http2, "orig_HTTPSConnection", None) is None

        def send(
            wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kw: dict[str, Any]
        ) -> Any:
            if suppress.get():
                return wrapped(*args, **kw)
            span = None
            call: _Call | None = None
            try:
                request = args[0] if args else kw["request"]
                headers = request.headers
                store = _store(headers, case_insensitive)
                span = runtime.client_span(
                    request.method or "GET", request.url, _getter(headers, store)
                )
                if span is not None:
                    if store is not None and direct(instance, request):
                        call = _prepare(runtime, span, request, store)
                    else:
                        runtime.inject(span, headers)
            except Exception as exc:
                safety.internal_error("requests.start", exc)
            if span is None:
                return wrapped(*args, **kw)
            token = _call.set(call)
            try:
                response = wrapped(*args, **kw)
            except BaseException as exc:
                _call.reset(token)
                _show(call)
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
            _call.reset(token)
            if call is not None and call.request is not None:
                # HTTPAdapter.send did not send it after all (get_adapter changed its mind).
                _show(call)
            try:
                # With redirects followed, the response is the last hop's (each hop has a span
                # of its own) and the first is in its history; an auth handler's re-send puts
                # the challenge there too, and then the response is this call's own.
                status = response.status_code
                history = response.history
                if history and history[0].is_redirect:
                    status = history[0].status_code
                headers = response.headers
                runtime.read_response(
                    span, int(status), _getter(headers, _store(headers, case_insensitive))
                )
                span.finish()
            except Exception as exc:
                safety.internal_error("requests.finish", exc)
            return response

        def make_adapter_send(original: Callable[..., Any]) -> types.FunctionType:
            def send(self: Any, request: Any, *args: Any, **kw: Any) -> Any:
                call = _call.get()
                if call is None or call.request is not request:
                    return original(self, request, *args, **kw)
                return _send(call, original, self, request, args, kw)

            def send_as_requests(
                self: Any,
                request: Any,
                stream: Any = False,
                timeout: Any = None,
                verify: Any = True,
                cert: Any = None,
                proxies: Any = None,
            ) -> Any:
                # requests' own signature: no arguments are packed into a dict and out again.
                call = _call.get()
                if call is None or call.request is not request:
                    return original(self, request, stream, timeout, verify, cert, proxies)
                args = (stream, timeout, verify, cert, proxies)
                return _send(call, original, self, request, args, {})

            try:
                names = list(inspect.signature(original).parameters)
            except (TypeError, ValueError):
                names = []
            if names == ["self", "request", "stream", "timeout", "verify", "cert", "proxies"]:
                return send_as_requests  # type: ignore[return-value]
            return send  # type: ignore[return-value]

        self.wrap(module.Session, "send", send)
        self.replace(module.adapters.HTTPAdapter, "send", make_adapter_send)
        ours = module.adapters.HTTPAdapter.__dict__["send"]
        from urllib3.connection import HTTPConnection

        self.replace(
            http.client.HTTPConnection,
            "endheaders",
            lambda original: _endheaders(original, HTTPConnection),
        )

    def _uninstall(self) -> None:
        _Mode.headers_only = False


def _prepare(runtime: Any, span: Any, request: Any, store: dict[str, Any]) -> _Call | None:
    """The span's headers for HTTPAdapter to send with ``request``; None when there are none."""
    out: dict[str, str] = {}
    runtime.inject(span, out)
    if not out:
        return None
    entries: list[tuple[str, tuple[str, str]]] = []
    lines: list[str] = []
    for name, value in out.items():
        item = (name, value)
        low = name.lower()
        # A header of the caller's with the same name gives way, as injection always did.
        store.pop(low, None)
        entries.append((low, item))
        lines.append(f"{name}: {value}")
    text = "\r\n".join(lines)
    # Every value is built or validated by tracer; this makes sure none can split a header.
    if text.count("\n") != len(lines) - 1 or text.count("\r") != len(lines) - 1:
        raise ValueError("a propagation header holds a line break")
    return _Call(request, text.encode("latin-1"), entries)


def _send(
    call: _Call,
    original: Callable[..., Any],
    adapter: Any,
    request: Any,
    args: tuple[Any, ...],
    kw: dict[str, Any],
) -> Any:
    """HTTPAdapter.send of the call's own request, with endheaders adding the headers."""
    call.sending = True
    try:
        response = original(adapter, request, *args, **kw)
    finally:
        call.sending = False
        _show(call)
    if not call.written:
        _headers_only()
    return response


def _show(call: _Call | None) -> None:
    """Put the headers in the request once it was sent: hooks, auth handlers re-sending a copy
    and ``response.request`` see what went out. Later sends of it carry them as its own."""
    if call is None or call.request is None:
        return
    try:
        request, call.request = call.request, None
        request.headers._store.update(call.entries)
    except Exception as exc:
        safety.internal_error("requests.headers", exc)


def _headers_only() -> None:
    if not _Mode.headers_only:
        _Mode.headers_only = True
        log.warning(
            "tracer: a requests call was answered without its headers passing through "
            "http.client's endheaders (a connection class of its own?); from now on trace "
            "headers go in request.headers"
        )


def _endheaders(original: Callable[..., Any], connection: Any) -> types.FunctionType:
    def endheaders(self: Any, message_body: Any = None, *, encode_chunked: bool = False) -> Any:
        call = _call.get()
        # Only urllib3's connections: an http.client call made while the request is sent (a
        # body generator fetching something, a log handler shipping urllib3's warnings) is
        # another request.
        if call is not None and call.sending and isinstance(self, connection):
            try:
                buffer = getattr(self, "_buffer", None)
                if type(buffer) is list:
                    buffer.append(call.block)
                else:
                    for _, (name, value) in call.entries:
                        self.putheader(name, value)
                call.written = True
            except Exception as exc:
                safety.internal_error("requests.headers", exc)
        return original(self, message_body, encode_chunked=encode_chunked)

    return endheaders  # type: ignore[return-value]
