"""urllib3: a client span (CS/CR) for each request of an ``HTTPConnectionPool``.

What is patched: ``HTTPConnectionPool.urlopen`` (``HTTPSConnectionPool`` inherits it), which
``PoolManager``, ``ProxyManager``, ``urllib3.request()`` and every SDK built on urllib3 go
through. ``PoolManager`` follows redirects itself, one ``urlopen`` per hop, so each hop is a span
of its own; the retries a pool makes inside one ``urlopen`` (and the redirects it follows when it
is called with ``redirect=True`` directly) are that one call's span.

What is recorded, per call:

* the span: ``METHOD host:port/path``, the method, the redacted URL and the path; the
  propagation headers are sent with the caller's (in a copy: the caller's mapping and the
  pool's default headers are left as they were);
* the status and the callee's ``x-must-collect``, when ``urlopen`` returns;
* the end (CR): when ``urlopen`` returns for a preloaded response (the default, whose body was
  read by then); for ``preload_content=False``, when the body was read to its end, or the
  response was released (``release_conn``, ``drain_conn``) or closed. Such a response that is
  never read to the end, released or closed leaves its span open;
* a connection error, a timeout, or retries run out (``urllib3.exceptions.HTTPError``, not an
  answer) as ``network-error``; any other exception as itself; both re-raised unchanged.

The propagation headers are not added to the caller's (which urllib3 and http.client would
check, encode and write one by one): they are encoded once, as one piece of the header block, and
urllib3's ``HTTPConnection.putrequest`` (also replaced) appends that piece after the request line
of each request this call sends, its retries and redirects included. A caller's header of the
same name gives way (in a copy). A call answered without that piece written (a connection class
that does not go through urllib3's ``putrequest``, HTTP/2) switches this path off with one
warning; from then on, and whenever urllib3's HTTP/2 support is injected, the headers go in a
copy of the caller's.

A call urllib3 makes for requests (which has its span open) adds nothing, and the http.client
request under a urllib3 call adds nothing either (see :data:`tracer.context.calling`). Works on
urllib3 1.26 and 2.x: ``urlopen`` and ``HTTPResponse.release_conn``/``close`` are public.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tracer import safety
from tracer.context import call_began, calling, in_call, suppress
from tracer.instrumentation.base import Instrumentation, call_failed
from tracer.instrumentation.http_client import (
    Block,
    header_block,
    lowercase,
    own_getter,
    without,
)

if TYPE_CHECKING:
    from tracer.runtime import Runtime

log = logging.getLogger("tracer")

# Where a response not preloaded keeps its span until its body is done with.
_SPAN = "_tracer_span"

#: Whether the headers may go straight into the header block (see the module docstring).
direct = True


# The traced urlopen being made in this context; None inside a call made within it, so that an
# inner call never sends an outer one's headers.
_block: contextvars.ContextVar[Block | None] = contextvars.ContextVar(
    "tracer_urllib3_block", default=None
)


def _url(pool: Any, target: str) -> str:
    if target.startswith(("http://", "https://")):
        return target
    scheme = pool.scheme
    host = pool.host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    port = pool.port
    if port is not None and port != (443 if scheme == "https" else 80):
        host = f"{host}:{port}"
    return f"{scheme}://{host}{target}"


class Urllib3Instrumentation(Instrumentation):
    """Client spans for urllib3's connection pools."""

    name = "urllib3"
    module = "urllib3"

    def _install(self, module: types.ModuleType) -> None:
        runtime = self.runtime
        assert runtime is not None
        from urllib3.connectionpool import HTTPConnectionPool
        from urllib3.exceptions import HTTPError, ProtocolError
        from urllib3.response import HTTPResponse

        # A ProtocolError (the connection dropped) is an HTTPError too: no answer came.
        network_errors: tuple[type[BaseException], ...] = (HTTPError, OSError, ProtocolError)
        from urllib3.connection import HTTPConnection

        self.replace(HTTPConnectionPool, "urlopen", lambda o: _urlopen(o, runtime, network_errors))
        self.replace(HTTPResponse, "release_conn", _ending)
        self.replace(HTTPResponse, "close", _ending)
        if "putrequest" in HTTPConnection.__dict__:
            self.replace(HTTPConnection, "putrequest", _putrequest)
        else:
            # No putrequest of urllib3's own to append the headers after: they go with the
            # caller's.
            global direct
            direct = False

    def _uninstall(self) -> None:
        global direct
        direct = True


def _by_block() -> bool:
    """Whether a call's headers may go in the header block: on, and no HTTP/2 connections
    (which write their headers their own way) injected."""
    if not direct:
        return False
    http2 = sys.modules.get("urllib3.http2")
    return getattr(http2, "orig_HTTPSConnection", None) is None


def _putrequest(original: Callable[..., Any]) -> types.FunctionType:
    def putrequest(self: Any, *args: Any, **kw: Any) -> Any:
        result = original(self, *args, **kw)
        block = _block.get()
        if block is not None:
            try:
                self._buffer.append(block.data)
                block.written = True
            except Exception as exc:
                safety.internal_error("urllib3.headers", exc)
        return result

    return putrequest  # type: ignore[return-value]


def _switch_off() -> None:
    global direct
    if direct:
        direct = False
        log.warning(
            "tracer: a urllib3 call was answered without its headers passing through urllib3's "
            "putrequest (a connection class of its own?); from now on trace headers go with the "
            "caller's"
        )


def _urlopen(
    original: Callable[..., Any],
    runtime: Runtime,
    network_errors: tuple[type[BaseException], ...],
) -> types.FunctionType:
    def urlopen(self: Any, method: str, url: str, *args: Any, **kw: Any) -> Any:
        if suppress.get() or in_call():
            if _block.get() is None:
                return original(self, method, url, *args, **kw)
            # A call made within a traced one (a log handler, a body generator) is another
            # request: the outer call's headers are not its.
            inner = _block.set(None)
            try:
                return original(self, method, url, *args, **kw)
            finally:
                _block.reset(inner)
        span = None
        block = None
        try:
            if len(args) >= 2:
                headers = args[1]
            else:
                headers = kw.get("headers")
            if headers is None:
                headers = self.headers
            span = runtime.client_span(method, _url(self, url), own_getter(headers))
            if span is not None:
                out: dict[str, str] = {}
                runtime.inject(span, out)
                sent = headers
                if _by_block():
                    if headers:
                        sent = without(headers, lowercase(tuple(out)))
                    if out:
                        block = Block(header_block(out))
                else:
                    copy = getattr(headers, "copy", None)
                    sent = copy() if callable(copy) else dict(headers)
                    for name, value in out.items():
                        sent[name] = value
                if sent is not headers:
                    if len(args) >= 2:
                        args = (args[0], sent, *args[2:])
                    else:
                        kw["headers"] = sent
        except Exception as exc:
            safety.internal_error("urllib3.start", exc)
        if span is None:
            return original(self, method, url, *args, **kw)
        token = call_began()
        own = _block.set(block)
        try:
            response = original(self, method, url, *args, **kw)
        except BaseException as exc:
            call_failed(span, exc, network_errors, "urllib3.finish")
            raise
        finally:
            _block.reset(own)
            calling.reset(token)
        if block is not None and not block.written:
            _switch_off()
        try:
            headers = response.headers
            # HTTPHeaderDict.get raises and catches a KeyError for a missing name, the usual
            # case; `in` does not.
            runtime.read_response(
                span, int(response.status), headers.get if _MUST in headers else _missing
            )
            preload = args[10] if len(args) > 10 else kw.get("preload_content", True)
            if not preload and not _done(response):
                response.__dict__[_SPAN] = span
                return response
        except Exception as exc:
            safety.internal_error("urllib3.finish", exc)
        span.finish()
        return response

    return urlopen  # type: ignore[return-value]


_MUST = "x-must-collect"


def _missing(name: str) -> None:
    return None


def _done(response: Any) -> bool:
    """Whether a response's body is over already (nothing to read, or its connection released)."""
    fp = getattr(response, "_fp", None)
    return fp is None or bool(getattr(fp, "closed", False)) or response.length_remaining == 0


def _ending(original: Callable[..., Any]) -> types.FunctionType:
    def ending(self: Any, *args: Any, **kw: Any) -> Any:
        state = getattr(self, "__dict__", None)
        span = None if state is None else state.pop(_SPAN, None)
        try:
            return original(self, *args, **kw)
        finally:
            if span is not None:
                span.finish()

    return ending  # type: ignore[return-value]
