"""httpx: a client span (CS/CR) for every request an ``httpx.Client`` or ``AsyncClient`` sends.

What is patched: ``Client._send_single_request`` and ``AsyncClient._send_single_request``, the
one method each request goes through on its way to the transport, whatever the transport is
(httpx's own, a proxy's, a mounted or custom one) and whoever made the client (``httpx.get``
makes one per call). The patch is on the class, once: clients made before ``install()`` are
traced, and making many clients never wraps anything twice.

What is recorded, per request sent (each redirect hop is a span of its own, all children of the
caller's span):

* the span: ``METHOD host:port/path``, the method, the redacted URL and the path; the
  propagation headers go in ``request.headers`` before it is sent;
* the status and the callee's ``x-must-collect``, when the response head arrives;
* the end (CR) when the response is closed: once its body was read, which ``client.get()`` and
  the like do before they return, or when a ``client.stream()`` block ends (or
  ``response.close()`` is called) for a streamed one. A streamed response that is never closed
  leaves its span open;
* an ``httpx.TransportError`` (connecting, a timeout, a broken read of the body) as
  ``network-error``, any other exception as itself; both are re-raised unchanged.

Each header put in ``request.headers`` is checked, encoded and scanned for by httpx, httpcore and
h11 on its way out, and copied once more for the cookie jar: several times the cost of the span.
So when a client sends through httpx's own ``HTTPTransport`` (no mounts, HTTP/1.1 only), the
propagation headers are encoded once, as one piece, and httpcore's HTTP/1.1 connection
(``_send_event``, replaced) puts it at the end of the request's header block as it writes it;
they are put in ``request.headers`` once the request was answered (``response.request`` shows
what went out). A request answered without that piece written switches this off, with one
warning; from then on (and for any other transport) the headers go in ``request.headers``.

``_send_single_request`` is httpx's internal, so it is patched only on the versions it was
verified with (:data:`VERIFIED`). On any other version, or with ``TRACER_PUBLIC_HOOKS=1``, the
public ``Client.send`` is patched instead: the same span, but one per call, redirects included.
"""

from __future__ import annotations

import contextvars
import logging
import types
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

from tracer import safety
from tracer.context import call_began, calling, current, in_call, suppress
from tracer.instrumentation.base import Instrumentation, call_failed, fast_path
from tracer.instrumentation.http_client import OWN, Block
from tracer.span import Span

if TYPE_CHECKING:
    from tracer.runtime import Runtime

log = logging.getLogger("tracer")

#: The httpx versions the fast path was verified with: lowest, and the first one not verified.
VERIFIED = ((0, 23), (0, 30))
#: The httpcore versions the header block was verified with, likewise.
VERIFIED_HTTPCORE = ((1, 0), (1, 1))

#: Whether the headers may go straight into httpcore's header block (see the module docstring).
direct = True


# The request being sent in this context with its headers in a block; None inside a request made
# within it, so that an inner one never sends an outer one's headers.
_block: contextvars.ContextVar[Block | None] = contextvars.ContextVar(
    "tracer_httpx_block", default=None
)


class HttpxInstrumentation(Instrumentation):
    """Client spans for ``httpx.Client`` and ``httpx.AsyncClient``."""

    name = "httpx"
    module = "httpx"

    def _install(self, module: types.ModuleType) -> None:
        runtime = self.runtime
        assert runtime is not None
        network_errors: tuple[type[BaseException], ...] = (module.TransportError,)
        ending, async_ending = _stream_classes(module, network_errors)
        blocks: tuple[type, type] | None = None
        if fast_path(self.name, str(getattr(module, "__version__", "")), *VERIFIED):
            attribute, start = "_send_single_request", _start
            blocks = self._blocks(module)
        else:
            attribute, start = "send", _start_public
        self.replace(
            module.Client,
            attribute,
            lambda original: _sync(original, runtime, start, ending, network_errors, blocks),
        )
        self.replace(
            module.AsyncClient,
            attribute,
            lambda original: _async(original, runtime, start, async_ending, network_errors, blocks),
        )

    def _blocks(self, module: types.ModuleType) -> tuple[type, type] | None:
        """Replace httpcore's HTTP/1.1 ``_send_event`` (sync and async) so that it writes a
        request's header block; the transports (sync, async) whose requests get one. None when
        httpcore is missing or not a verified version."""
        try:
            import h11
            import httpcore
            from httpcore._async.http11 import AsyncHTTP11Connection
            from httpcore._sync.http11 import HTTP11Connection
        except ImportError:
            return None
        if not fast_path("httpcore", str(getattr(httpcore, "__version__", "")), *VERIFIED_HTTPCORE):
            return None
        request_event = h11.Request
        self.replace(HTTP11Connection, "_send_event", lambda o: _send_event(o, request_event))
        self.replace(
            AsyncHTTP11Connection, "_send_event", lambda o: _async_send_event(o, request_event)
        )
        return module.HTTPTransport, module.AsyncHTTPTransport

    def _uninstall(self) -> None:
        global direct
        direct = True


def _with_block(data: bytes, block: Block | None, event: Any, request_event: type) -> bytes:
    """``data``, the bytes h11 made of ``event``, with ``block`` before the blank line that ends
    a request's header block (a proxy's CONNECT is not the request)."""
    kind: Any = type(event)
    if (
        block is None
        or kind is not request_event
        or event.method == b"CONNECT"
        or not data.endswith(b"\r\n\r\n")
    ):
        return data
    block.written = True
    return data[:-2] + block.data + b"\r\n"


def _send_event(original: Callable[..., Any], request_event: type) -> types.FunctionType:
    def send_event(self: Any, event: Any, timeout: float | None = None) -> Any:
        block = _block.get()
        if block is None:
            return original(self, event, timeout=timeout)
        data = self._h11_state.send(event)
        if data is not None:
            data = _with_block(data, block, event, request_event)
            self._network_stream.write(data, timeout=timeout)

    return send_event  # type: ignore[return-value]


def _async_send_event(original: Callable[..., Any], request_event: type) -> types.FunctionType:
    async def send_event(self: Any, event: Any, timeout: float | None = None) -> Any:
        block = _block.get()
        if block is None:
            return await original(self, event, timeout=timeout)
        data = self._h11_state.send(event)
        if data is not None:
            data = _with_block(data, block, event, request_event)
            await self._network_stream.write(data, timeout=timeout)

    return send_event  # type: ignore[return-value]


def _by_block(client: Any, transport: type) -> bool:
    """Whether ``client`` sends through httpx's own transport, over HTTP/1.1 only."""
    own: Any = client._transport
    if not direct or client._mounts or type(own) is not transport:
        return False
    pool: Any = getattr(own, "_pool", None)
    return getattr(pool, "_http2", True) is False


def _switch_off() -> None:
    global direct
    if direct:
        direct = False
        log.warning(
            "tracer: an httpx request was answered without its trace headers passing through "
            "httpcore's HTTP/1.1 connection; from now on they go in request.headers"
        )


def _start_public(runtime: Runtime, request: Any, held: list[Any] | None = None) -> Span | None:
    """The span of a request, its headers read and written through ``httpx.Headers``."""
    try:
        headers = request.headers
        span = runtime.client_span(request.method, str(request.url), headers.get)
        if span is not None:
            runtime.inject(span, headers)
        return span
    except Exception as exc:
        safety.internal_error("httpx.start", exc)
        return None


# The caller's headers that may carry its own trace (http_client.OWN), as Headers keeps them.
_OWN = frozenset(name.encode("latin-1") for name in OWN)

# A header name -> (as sent, lowercase), encoded: the same few names on every call.
_encoded: dict[str, tuple[bytes, bytes]] = {}


def _start(runtime: Runtime, request: Any, held: list[Any] | None = None) -> Span | None:
    """The span of a request, its headers read and written in ``Headers._list`` (or, with
    ``held``, kept there for the header block; the caller's of the same names go either way).

    ``httpx.Headers`` looks a name up by encoding it and scanning a list it builds for the
    purpose, and a missing name raises KeyError inside ``get``: several times the cost of the
    work itself, for names that are nearly always missing. The list holds ``(name, lowercase
    name, value)`` as bytes; a list of any other shape falls back to the public methods.
    """
    try:
        headers = request.headers
        items = headers._list
        if type(items) is not list or (items and len(items[0]) != 3):
            return _start_public(runtime, request)
        get = None
        if current.get() is None and not _OWN.isdisjoint([item[1] for item in items]):
            # Outside any trace the caller's own trace headers are looked for (client_span).
            found = {lower: value for _, lower, value in items}

            def get(name: str) -> str | None:
                value = found.get(name.encode("latin-1"))
                return None if value is None else value.decode("latin-1")

        span = runtime.client_span(request.method, str(request.url), get)
        if span is None:
            return None
        out: dict[str, str] = {}
        runtime.inject(span, out)
        names = []
        for name in out:
            pair = _encoded.get(name)
            if pair is None:
                if len(_encoded) >= 64:
                    _encoded.clear()
                pair = _encoded[name] = (name.encode("latin-1"), name.lower().encode("latin-1"))
            names.append(pair)
        lows = {low for _, low in names}
        # A redirect hop carries the last hop's headers, a caller may set its own: ours replace
        # them, as Headers.__setitem__ would.
        for item in items:
            if item[1] in lows:
                items[:] = [item for item in items if item[1] not in lows]
                break
        into = items if held is None else held
        for (raw, low), value in zip(names, out.values(), strict=True):
            into.append((raw, low, value.encode("latin-1")))
        return span
    except Exception as exc:
        safety.internal_error("httpx.start", exc)
        return None


def _block_of(request: Any, held: list[Any] | None) -> Block | None:
    """The header block of ``held``'s entries; None when there are none, or (the entries then
    put in ``request.headers`` to go the usual way) when they cannot be one."""
    if not held:
        return None
    try:
        data = b"".join([raw + b": " + value + b"\r\n" for raw, _, value in held])
        # Every value is built or validated by tracer; this makes sure none can split a header.
        if data.count(b"\n") != len(held) or data.count(b"\r") != len(held):
            raise ValueError("a propagation header holds a line break")
        return Block(data)
    except Exception as exc:
        safety.internal_error("httpx.headers", exc)
        request.headers._list.extend(held)
        held.clear()
        return None


def _show(request: Any, block: Block | None, held: list[Any] | None) -> None:
    """Put the headers that went in the block in ``request.headers``, once it was sent (the
    cookie jar, which copies every header, has read them by then): ``response.request``, a
    redirect's next request and an auth flow's re-send see what went out."""
    if block is None or held is None:
        return
    try:
        request.headers._list.extend(held)
    except Exception as exc:
        safety.internal_error("httpx.headers", exc)


def _missing(name: str) -> None:
    return None


def _answer_headers(headers: Any) -> Callable[[str], str | None]:
    """The getter read_response asks for ``x-must-collect``: ``Headers.get`` raises and catches
    a KeyError for a missing name, and the name is nearly always missing, so the list the class
    keeps is looked through first."""
    items = getattr(headers, "_list", None)
    if type(items) is list:
        for item in items:
            if item[1] == b"x-must-collect":
                break
        else:
            return _missing
    get: Callable[[str], str | None] = headers.get
    return get


def _answered(
    runtime: Runtime, span: Span, response: Any, wrap: Callable[[Any, Span], Any]
) -> None:
    try:
        runtime.read_response(span, response.status_code, _answer_headers(response.headers))
        if response.is_closed:
            # Client.send (the public path) read the body already.
            span.finish()
        else:
            # The span ends when the body is closed: after it was read, or when a stream ends.
            response.stream = wrap(response.stream, span)
    except Exception as exc:
        safety.internal_error("httpx.finish", exc)
        span.finish()


def _sync(
    original: Callable[..., Any],
    runtime: Runtime,
    start: Callable[[Runtime, Any, list[Any] | None], Span | None],
    ending: Callable[[Any, Span], Any],
    network_errors: tuple[type[BaseException], ...],
    blocks: tuple[type, type] | None,
) -> types.FunctionType:
    def send(self: Any, request: Any, *args: Any, **kw: Any) -> Any:
        if suppress.get() or in_call():
            if _block.get() is None:
                return original(self, request, *args, **kw)
            inner = _block.set(None)
            try:
                return original(self, request, *args, **kw)
            finally:
                _block.reset(inner)
        held: list[Any] | None = [] if blocks is not None and _by_block(self, blocks[0]) else None
        span = start(runtime, request, held)
        if span is None:
            return original(self, request, *args, **kw)
        block = _block_of(request, held)
        token = call_began()
        own = _block.set(block)
        try:
            response = original(self, request, *args, **kw)
        except BaseException as exc:
            call_failed(span, exc, network_errors, "httpx.finish")
            raise
        finally:
            _block.reset(own)
            calling.reset(token)
            _show(request, block, held)
        if block is not None and not block.written:
            # Answered, so sent, but not by the replaced _send_event: the next calls' headers
            # go in request.headers.
            _switch_off()
        _answered(runtime, span, response, ending)
        return response

    return send  # type: ignore[return-value]


def _async(
    original: Callable[..., Any],
    runtime: Runtime,
    start: Callable[[Runtime, Any, list[Any] | None], Span | None],
    ending: Callable[[Any, Span], Any],
    network_errors: tuple[type[BaseException], ...],
    blocks: tuple[type, type] | None,
) -> types.FunctionType:
    async def send(self: Any, request: Any, *args: Any, **kw: Any) -> Any:
        if suppress.get() or in_call():
            if _block.get() is None:
                return await original(self, request, *args, **kw)
            inner = _block.set(None)
            try:
                return await original(self, request, *args, **kw)
            finally:
                _block.reset(inner)
        held: list[Any] | None = [] if blocks is not None and _by_block(self, blocks[1]) else None
        span = start(runtime, request, held)
        if span is None:
            return await original(self, request, *args, **kw)
        block = _block_of(request, held)
        token = call_began()
        own = _block.set(block)
        try:
            response = await original(self, request, *args, **kw)
        except BaseException as exc:
            call_failed(span, exc, network_errors, "httpx.finish")
            raise
        finally:
            _block.reset(own)
            calling.reset(token)
            _show(request, block, held)
        if block is not None and not block.written:
            # Answered, so sent, but not by the replaced _send_event: the next calls' headers
            # go in request.headers.
            _switch_off()
        _answered(runtime, span, response, ending)
        return response

    return send  # type: ignore[return-value]


def _stream_classes(
    module: types.ModuleType, network_errors: tuple[type[BaseException], ...]
) -> tuple[Callable[[Any, Span], Any], Callable[[Any, Span], Any]]:
    """Body streams that end their span when closed (httpx checks a response's stream type, so
    they subclass its own)."""

    class Ending(module.SyncByteStream):  # type: ignore[name-defined,misc]
        def __init__(self, stream: Any, span: Span) -> None:
            self._stream = stream
            self._span = span

        def __iter__(self) -> Iterator[bytes]:
            try:
                yield from self._stream
            except network_errors as exc:
                self._span.record_network_error(exc)
                raise

        def close(self) -> None:
            try:
                self._stream.close()
            finally:
                self._span.finish()

    class AsyncEnding(module.AsyncByteStream):  # type: ignore[name-defined,misc]
        def __init__(self, stream: Any, span: Span) -> None:
            self._stream = stream
            self._span = span

        async def __aiter__(self) -> AsyncIterator[bytes]:
            try:
                async for chunk in self._stream:
                    yield chunk
            except network_errors as exc:
                self._span.record_network_error(exc)
                raise

        async def aclose(self) -> None:
            try:
                await self._stream.aclose()
            finally:
                self._span.finish()

    return Ending, AsyncEnding
