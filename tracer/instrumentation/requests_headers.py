"""requests: the propagation headers of a traced call, written straight into its header block.

Why: each header put in ``request.headers`` goes through a dozen Python calls and two regular
expressions in requests, urllib3 and http.client on its way out, and the default propagation
formats send six headers. Handed to http.client already encoded, as one piece, they cost next to
nothing. :mod:`tracer.instrumentation.requests` makes every traced call through the one entry
point here, the ``send`` that :func:`install` returns; this module does the rest.

How, for one call:

1. ``send`` asks whether the adapter that will send the request is requests' own
   ``HTTPAdapter.send`` (over http.client's connections). If it is not (a subclass overriding
   ``send``, a ``send`` patched on the instance, another transport, urllib3's HTTP/2
   connections), or the switch below is off, the headers go in ``request.headers`` before the
   call, as a caller's own headers would, and nothing else here happens.
2. Otherwise they are encoded once and wait, in a context variable, for this very request.
3. ``HTTPAdapter.send`` (replaced) marks the call as being sent while it sends that request.
4. ``http.client.HTTPConnection.endheaders`` (replaced) appends the piece to the header block
   while a call is being sent, on urllib3's connections only: for each attempt urllib3 makes,
   and for no other request (an http.client call a body generator or a log handler makes in the
   meantime gets nothing).
5. When the call returns or raises, the headers are put in ``request.headers``: hooks, an auth
   handler re-sending a copy (Digest) and ``response.request`` see what went out.

The one switch, :data:`direct`: it goes off (with one warning) when a call was answered without
its headers passing through ``endheaders`` (a connection class of one's own); from then on every
call gets its headers in ``request.headers``. :func:`reset` turns it on again (uninstall).
"""

from __future__ import annotations

import contextvars
import http.client
import logging
import sys
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tracer import safety
from tracer.span import Span

if TYPE_CHECKING:
    from tracer.instrumentation.base import Instrumentation
    from tracer.runtime import Runtime

log = logging.getLogger("tracer")

#: Whether the headers may go straight into the header block (see the module docstring).
direct = True

#: ``send(span, session, request, store, wrapped, args, kw)``: see :func:`install`.
Send = Callable[
    [Span, Any, Any, dict[str, Any] | None, Callable[..., Any], tuple[Any, ...], dict[str, Any]],
    Any,
]


class _Call:
    """The propagation headers of one traced call, on their way to the socket."""

    __slots__ = ("block", "entries", "request", "sending", "written")

    def __init__(
        self,
        request: Any,
        block: bytes,
        entries: list[tuple[str, tuple[str, str]]],
    ) -> None:
        # The request HTTPAdapter.send is to send with the headers; None once they were shown.
        self.request = request
        # The headers as one encoded piece of the header block.
        self.block = block
        # (lowercase name, (name, value)), as requests keeps them, for request.headers after
        # (and for a connection without http.client's buffer).
        self.entries = entries
        # True while HTTPAdapter.send sends the request; endheaders adds the headers only then.
        self.sending = False
        self.written = False


# The traced call being made in this context (hooks and redirects included); None for a call
# whose headers went in request.headers, so that a call made inside it never sees an outer one.
_call: contextvars.ContextVar[_Call | None] = contextvars.ContextVar(
    "tracer_requests_call", default=None
)


def store(headers: Any, case_insensitive: type) -> dict[str, Any] | None:
    """The dict inside requests' own header dict (``CaseInsensitiveDict``), which keeps
    ``(name, value)`` under the lowercase name; None for any other mapping."""
    found = getattr(headers, "_store", None) if type(headers) is case_insensitive else None
    return found if isinstance(found, dict) else None


def reset() -> None:
    """Turn :data:`direct` on again (the next install tries the header block first)."""
    global direct
    direct = True


def install(instrumentation: Instrumentation, module: types.ModuleType, runtime: Runtime) -> Send:
    """Replace ``HTTPAdapter.send`` and ``HTTPConnection.endheaders`` through
    ``instrumentation`` (so its uninstall undoes them) and return the entry point:

    ``send(span, session, request, store, wrapped, args, kw)`` makes the traced call
    ``wrapped(*args, **kw)`` (``Session.send``) with ``span``'s propagation headers, by the
    header block or in ``request.headers``, and returns what it returns or raises what it
    raises. ``store`` is :func:`store` of ``request.headers``.
    """
    adapter_class = module.adapters.HTTPAdapter
    instrumentation.replace(adapter_class, "send", _adapter_send)
    # What an adapter's bound send has as its function when it is requests' own, replaced.
    ours = adapter_class.__dict__["send"]
    from urllib3.connection import HTTPConnection

    instrumentation.replace(
        http.client.HTTPConnection,
        "endheaders",
        lambda original: _endheaders(original, HTTPConnection),
    )

    def by_block(session: Any, request: Any) -> bool:
        """Whether the adapter that will send ``request`` is HTTPAdapter's own send over
        http.client's connections."""
        if not direct:
            return False
        # The bound method's function is whatever send the instance has, a send patched on
        # the instance included. Looking in the adapter's __dict__ instead would make Python
        # 3.11 take a slower path for every later attribute access on that adapter.
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
        span: Span,
        session: Any,
        request: Any,
        store: dict[str, Any] | None,
        wrapped: Callable[..., Any],
        args: tuple[Any, ...],
        kw: dict[str, Any],
    ) -> Any:
        call = None
        try:
            if store is not None and by_block(session, request):
                call = _prepare(runtime, span, request, store)
            else:
                runtime.inject(span, request.headers)
        except Exception as exc:
            safety.internal_error("requests.start", exc)
        token = _call.set(call)
        try:
            return wrapped(*args, **kw)
        finally:
            _call.reset(token)
            # Also when HTTPAdapter.send did not send it after all (get_adapter changed its
            # mind, or something failed before).
            _show(call)

    return send


def _prepare(runtime: Runtime, span: Span, request: Any, store: dict[str, Any]) -> _Call | None:
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


def _adapter_send(original: Callable[..., Any]) -> types.FunctionType:
    def send(self: Any, request: Any, *args: Any, **kw: Any) -> Any:
        call = _call.get()
        if call is None or call.request is not request:
            return original(self, request, *args, **kw)
        call.sending = True
        try:
            response = original(self, request, *args, **kw)
        finally:
            call.sending = False
            _show(call)
        if not call.written:
            _switch_off()
        return response

    return send  # type: ignore[return-value]


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


def _switch_off() -> None:
    global direct
    if direct:
        direct = False
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
