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

A call urllib3 makes for requests (which has its span open) adds nothing, and the http.client
request under a urllib3 call adds nothing either (see :data:`tracer.context.calling`). Works on
urllib3 1.26 and 2.x: ``urlopen`` and ``HTTPResponse.release_conn``/``close`` are public.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tracer import safety
from tracer.context import call_began, calling, in_call, suppress
from tracer.instrumentation.base import Instrumentation
from tracer.span import Span

if TYPE_CHECKING:
    from tracer.runtime import Runtime

# Where a response not preloaded keeps its span until its body is done with.
_SPAN = "_tracer_span"


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
        self.replace(HTTPConnectionPool, "urlopen", lambda o: _urlopen(o, runtime, network_errors))
        self.replace(HTTPResponse, "release_conn", _ending)
        self.replace(HTTPResponse, "close", _ending)


def _urlopen(
    original: Callable[..., Any],
    runtime: Runtime,
    network_errors: tuple[type[BaseException], ...],
) -> types.FunctionType:
    def urlopen(self: Any, method: str, url: str, *args: Any, **kw: Any) -> Any:
        if suppress.get() or in_call():
            return original(self, method, url, *args, **kw)
        span = None
        try:
            if len(args) >= 2:
                headers = args[1]
            else:
                headers = kw.get("headers")
            if headers is None:
                headers = self.headers
            span = runtime.client_span(method, _url(self, url), headers.get if headers else None)
            if span is not None:
                copy = getattr(headers, "copy", None)
                out = copy() if callable(copy) else dict(headers)
                runtime.inject(span, out)
                if len(args) >= 2:
                    args = (args[0], out, *args[2:])
                else:
                    kw["headers"] = out
        except Exception as exc:
            safety.internal_error("urllib3.start", exc)
        if span is None:
            return original(self, method, url, *args, **kw)
        token = call_began()
        try:
            response = original(self, method, url, *args, **kw)
        except BaseException as exc:
            _failed(span, exc, network_errors)
            raise
        finally:
            calling.reset(token)
        try:
            runtime.read_response(span, int(response.status), response.headers.get)
            preload = args[10] if len(args) > 10 else kw.get("preload_content", True)
            if not preload and not _done(response):
                response.__dict__[_SPAN] = span
                return response
        except Exception as exc:
            safety.internal_error("urllib3.finish", exc)
        span.finish()
        return response

    return urlopen  # type: ignore[return-value]


def _done(response: Any) -> bool:
    """Whether a response's body is over already (nothing to read, or its connection released)."""
    fp = getattr(response, "_fp", None)
    return fp is None or bool(getattr(fp, "closed", False)) or response.length_remaining == 0


def _failed(
    span: Span, exc: BaseException, network_errors: tuple[type[BaseException], ...]
) -> None:
    try:
        if isinstance(exc, network_errors):
            span.record_network_error(exc)
        else:
            span.record_exception(exc)
        span.finish()
    except Exception as inner:
        safety.internal_error("urllib3.finish", inner)


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
