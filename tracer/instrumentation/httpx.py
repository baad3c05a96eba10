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

``_send_single_request`` is httpx's internal, so it is patched only on the versions it was
verified with (:data:`VERIFIED`). On any other version, or with ``TRACER_PUBLIC_HOOKS=1``, the
public ``Client.send`` is patched instead: the same span, but one per call, redirects included.
"""

from __future__ import annotations

import types
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

from tracer import safety
from tracer.context import call_began, calling, current, in_call, suppress
from tracer.instrumentation.base import Instrumentation, fast_path
from tracer.span import Span

if TYPE_CHECKING:
    from tracer.runtime import Runtime

#: The httpx versions the fast path was verified with: lowest, and the first one not verified.
VERIFIED = ((0, 23), (0, 30))


class HttpxInstrumentation(Instrumentation):
    """Client spans for ``httpx.Client`` and ``httpx.AsyncClient``."""

    name = "httpx"
    module = "httpx"

    def _install(self, module: types.ModuleType) -> None:
        runtime = self.runtime
        assert runtime is not None
        network_errors: tuple[type[BaseException], ...] = (module.TransportError,)
        ending, async_ending = _stream_classes(module, network_errors)
        if fast_path(self.name, str(getattr(module, "__version__", "")), *VERIFIED):
            attribute, start = "_send_single_request", _start
        else:
            attribute, start = "send", _start_public
        self.replace(
            module.Client,
            attribute,
            lambda original: _sync(original, runtime, start, ending, network_errors),
        )
        self.replace(
            module.AsyncClient,
            attribute,
            lambda original: _async(original, runtime, start, async_ending, network_errors),
        )


def _start_public(runtime: Runtime, request: Any) -> Span | None:
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


# A header name -> (as sent, lowercase), encoded: the same few names on every call.
_encoded: dict[str, tuple[bytes, bytes]] = {}


def _start(runtime: Runtime, request: Any) -> Span | None:
    """The span of a request, its headers read and written in ``Headers._list``.

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
        if current.get() is None:
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
        for (raw, low), value in zip(names, out.values(), strict=True):
            items.append((raw, low, value.encode("latin-1")))
        return span
    except Exception as exc:
        safety.internal_error("httpx.start", exc)
        return None


def _failed(
    span: Span, exc: BaseException, network_errors: tuple[type[BaseException], ...]
) -> None:
    try:
        # Either way the span failed, so the collector keeps its trace.
        if isinstance(exc, network_errors):
            span.record_network_error(exc)
        else:
            span.record_exception(exc)
        span.finish()
    except Exception as inner:
        safety.internal_error("httpx.finish", inner)


def _answered(
    runtime: Runtime, span: Span, response: Any, wrap: Callable[[Any, Span], Any]
) -> None:
    try:
        runtime.read_response(span, response.status_code, response.headers.get)
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
    start: Callable[[Runtime, Any], Span | None],
    ending: Callable[[Any, Span], Any],
    network_errors: tuple[type[BaseException], ...],
) -> types.FunctionType:
    def send(self: Any, request: Any, *args: Any, **kw: Any) -> Any:
        if suppress.get() or in_call():
            return original(self, request, *args, **kw)
        span = start(runtime, request)
        if span is None:
            return original(self, request, *args, **kw)
        token = call_began()
        try:
            response = original(self, request, *args, **kw)
        except BaseException as exc:
            _failed(span, exc, network_errors)
            raise
        finally:
            calling.reset(token)
        _answered(runtime, span, response, ending)
        return response

    return send  # type: ignore[return-value]


def _async(
    original: Callable[..., Any],
    runtime: Runtime,
    start: Callable[[Runtime, Any], Span | None],
    ending: Callable[[Any, Span], Any],
    network_errors: tuple[type[BaseException], ...],
) -> types.FunctionType:
    async def send(self: Any, request: Any, *args: Any, **kw: Any) -> Any:
        if suppress.get() or in_call():
            return await original(self, request, *args, **kw)
        span = start(runtime, request)
        if span is None:
            return await original(self, request, *args, **kw)
        token = call_began()
        try:
            response = await original(self, request, *args, **kw)
        except BaseException as exc:
            _failed(span, exc, network_errors)
            raise
        finally:
            calling.reset(token)
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
