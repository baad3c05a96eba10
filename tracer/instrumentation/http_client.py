"""http.client, and so urllib.request: a client span (CS/CR) for each request of an
``http.client.HTTPConnection`` (``HTTPSConnection`` included).

What is patched: ``HTTPConnection.request``, which ``urllib.request.urlopen`` and most direct
users of http.client call, and ``HTTPConnection.getresponse``. ``request`` starts the span
and sends the propagation headers with the caller's; ``getresponse`` records the status and the
callee's ``x-must-collect`` and ends the span when the response head arrives (CR): the body is
the caller's to read afterwards, as with ``urlopen``. A connection refused, a timeout or any other
``OSError`` or ``http.client.HTTPException`` is a ``network-error``, re-raised unchanged. A
caller that drives ``putrequest``/``putheader``/``endheaders`` itself gets no span.

The propagation headers do not go through ``putheader`` one by one (a regular expression or two
and several encodings each, six times over with the default formats): they are encoded once, as
one piece of the header block, and ``putrequest`` (also replaced) appends that piece right after
the request line of this very request. A connection class whose ``request`` never calls
http.client's ``putrequest`` would send them nowhere: the first such call switches that path off
(with one warning), and from then on the headers go to ``request`` with the caller's.

A library that runs on http.client and is instrumented itself (urllib3, and requests on it) has
its span open while it calls ``request``: that call adds nothing (see
:data:`tracer.context.calling`), so a call through requests is one span, not three.
"""

from __future__ import annotations

import http.client
import logging
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tracer import safety
from tracer.context import in_call, suppress
from tracer.instrumentation.base import Instrumentation, call_failed

if TYPE_CHECKING:
    from tracer.runtime import Runtime

log = logging.getLogger("tracer")

# Where a connection keeps the span of the request it sent, until getresponse.
_SPAN = "_tracer_span"
# Where a connection keeps the header block of the request being sent, until putrequest.
_BLOCK = "_tracer_block"

#: Whether the headers may go straight into the header block (see the module docstring).
direct = True

_NETWORK_ERRORS = (OSError, http.client.HTTPException)


def _url(connection: Any, target: str) -> str:
    """The URL ``connection`` requests ``target`` at (an absolute target, through a proxy, is
    one already)."""
    if target.startswith(("http://", "https://")):
        return target
    https = isinstance(connection, http.client.HTTPSConnection)
    host = connection.host
    if ":" in host:
        host = f"[{host}]"
    port = connection.port
    if port != (443 if https else 80):
        host = f"{host}:{port}"
    return f"{'https' if https else 'http'}://{host}{target}"


class HttpClientInstrumentation(Instrumentation):
    """Client spans for ``http.client`` connections, and so for ``urllib.request``."""

    name = "http.client"
    module = "http.client"

    def _install(self, module: types.ModuleType) -> None:
        runtime = self.runtime
        assert runtime is not None
        self.replace(module.HTTPConnection, "request", lambda o: _request(o, runtime))
        self.replace(module.HTTPConnection, "putrequest", _putrequest)
        self.replace(module.HTTPConnection, "getresponse", lambda o: _getresponse(o, runtime))

    def _uninstall(self) -> None:
        global direct
        direct = True


# Lowercase names, by the names a span's headers were injected under (the same few tuples).
_lowered: dict[tuple[str, ...], frozenset[str]] = {}


def lowercase(names: tuple[str, ...]) -> frozenset[str]:
    """``names`` lowercased, remembered: a span's headers have the same few sets of names."""
    found = _lowered.get(names)
    if found is None:
        if len(_lowered) >= 64:
            _lowered.clear()
        found = _lowered[names] = frozenset(name.lower() for name in names)
    return found


#: The headers of the caller's that can make a call continue a trace of the caller's
#: (:meth:`tracer.propagation.Propagator.own`): without one of them it starts its own.
OWN = frozenset(("traceparent", "b3", "x-b3-traceid", "request-id"))


def own_getter(headers: Any) -> Callable[[str], str | None] | None:
    """A lookup of lowercase names in ``headers`` when the caller set a header that may carry
    its own trace, else None (which spares the lookups of every name each format reads)."""
    if not headers or OWN.isdisjoint([name.lower() for name in headers]):
        return None
    get: Callable[[str], str | None]
    if type(headers) is dict:
        # A plain dict's keys are as the caller spelled them (Traceparent, Request-Id).
        get = {name.lower(): value for name, value in headers.items()}.get
    else:
        get = headers.get
    return get


class Block:
    """The propagation headers of one traced call, encoded (``name: value\r\n`` lines), on
    their way to the socket: urllib3 and httpx write them into the library's own header block,
    and ``written`` says whether that happened for at least one request of the call."""

    __slots__ = ("data", "written")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.written = False


def header_block(out: dict[str, str]) -> bytes:
    """``out`` as one piece of an HTTP/1.1 header block: ``name: value`` lines joined by CRLF
    (http.client joins the pieces of its buffer with CRLF)."""
    text = "\r\n".join([f"{name}: {value}" for name, value in out.items()])
    # Every value is built or validated by tracer; this makes sure none can split a header.
    lines = len(out) - 1
    if text.count("\n") != lines or text.count("\r") != lines:
        raise ValueError("a propagation header holds a line break")
    return text.encode("latin-1")


def without(headers: Any, names: frozenset[str]) -> Any:
    """``headers``, or a copy of them without those named (any case) in ``names`` when it has
    some: tracer's headers replace a caller's of the same name. The caller's mapping is left as
    it was."""
    present = [name for name in headers if name.lower() in names]
    if not present:
        return headers
    copy = getattr(headers, "copy", None)
    # A case-insensitive dict of the library's own (urllib3's HTTPHeaderDict) stays one.
    kept = copy() if type(headers) is not dict and callable(copy) else dict(headers)
    for name in present:
        kept.pop(name, None)
    return kept


def _putrequest(original: Callable[..., Any]) -> types.FunctionType:
    def putrequest(self: Any, *args: Any, **kw: Any) -> Any:
        result = original(self, *args, **kw)
        state = getattr(self, "__dict__", None)
        block = None if state is None else state.pop(_BLOCK, None)
        if block is not None:
            try:
                self._buffer.append(block)
            except Exception as exc:
                safety.internal_error("http.client.headers", exc)
        return result

    return putrequest  # type: ignore[return-value]


def _switch_off() -> None:
    global direct
    if direct:
        direct = False
        log.warning(
            "tracer: an http.client request was sent without its connection's putrequest (a "
            "connection class of its own?); from now on trace headers go with the caller's"
        )


def _request(original: Callable[..., Any], runtime: Runtime) -> types.FunctionType:
    def request(
        self: Any, method: str, url: str, body: Any = None, headers: Any = None, **kw: Any
    ) -> Any:
        if headers is None:
            headers = {}
        if suppress.get() or in_call():
            return original(self, method, url, body, headers, **kw)
        span = None
        state = None
        try:
            span = runtime.client_span(method, _url(self, url), own_getter(headers))
            if span is not None:
                out: dict[str, str] = {}
                runtime.inject(span, out)
                if headers:
                    headers = without(headers, lowercase(tuple(out)))
                state = getattr(self, "__dict__", None) if direct else None
                if state is None:
                    headers = {**headers, **out}
                elif out:
                    state[_BLOCK] = header_block(out)
        except Exception as exc:
            safety.internal_error("http.client.start", exc)
        if span is None:
            return original(self, method, url, body, headers, **kw)
        try:
            result = original(self, method, url, body, headers, **kw)
        except BaseException as exc:
            if state is not None:
                state.pop(_BLOCK, None)
            call_failed(span, exc, _NETWORK_ERRORS, "http.client.finish")
            raise
        try:
            if state is not None and state.pop(_BLOCK, None) is not None:
                # Sent without them: this call's headers are lost, the next calls' are not.
                _switch_off()
            state = self.__dict__
            # A span left by a request whose answer was never asked for ends here.
            left = state.get(_SPAN)
            if left is not None:
                left.finish()
            state[_SPAN] = span
        except Exception as exc:
            # A connection class without a __dict__: the span ends with the request sent.
            safety.internal_error("http.client.start", exc)
            span.finish()
        return result

    return request  # type: ignore[return-value]


def _getresponse(original: Callable[..., Any], runtime: Runtime) -> types.FunctionType:
    def getresponse(self: Any, *args: Any, **kw: Any) -> Any:
        state = getattr(self, "__dict__", None)
        span = None if state is None else state.pop(_SPAN, None)
        if span is None:
            return original(self, *args, **kw)
        try:
            response = original(self, *args, **kw)
        except BaseException as exc:
            call_failed(span, exc, _NETWORK_ERRORS, "http.client.finish")
            raise
        try:
            runtime.read_response(span, response.status, response.headers.get)
        except Exception as exc:
            safety.internal_error("http.client.finish", exc)
        span.finish()
        return response

    return getresponse  # type: ignore[return-value]
