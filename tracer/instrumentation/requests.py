"""requests: a client span (CS/CR) around ``requests.Session.send``.

What is patched: ``Session.send``, which ``requests.get`` and every session use, so one patch
covers them all. (How the propagation headers reach the socket is
:mod:`tracer.instrumentation.requests_headers`; it also replaces ``HTTPAdapter.send`` and
``http.client.HTTPConnection.endheaders``.)

What is recorded, per call (each redirect hop is a call of its own):

* the span: ``METHOD host:port/path``, the method, the redacted URL and the path;
* the status: the first hop's status for a redirect (say 302), else the answer's, an auth
  handler's re-send (Digest) included; the callee's ``x-must-collect`` is read back;
* a connection error or a timeout as ``network-error``, any other exception as itself; both are
  re-raised unchanged.

A caller's own ``request-id`` header on a call made outside any trace starts the trace with it.

``Session.send`` and ``request.headers`` are requests' public surface; reading ``headers._store``
and the header block of :mod:`~tracer.instrumentation.requests_headers` are not, so they are used
only on the versions they were verified with (:data:`VERIFIED`). On any other version, or with
``TRACER_PUBLIC_HOOKS=1``, the headers go in ``request.headers`` and are read with ``.get``.
"""

from __future__ import annotations

import contextvars
import types
from collections.abc import Callable
from typing import Any

from tracer import safety
from tracer.context import call_began, calling, in_call, suppress
from tracer.instrumentation import requests_headers
from tracer.instrumentation.base import Instrumentation, call_failed, fast_path
from tracer.propagation import Getter
from tracer.span import Span

#: The requests versions the fast path was verified with: lowest, and the first one not verified.
VERIFIED = ((2, 25, 0), (2, 35))


# True inside a traced Session.send: a redirect hop or a hook's call is requests' own and gets
# a span; the open client call of another library (``tracer.client_call``, httpx on a transport of
# requests) makes requests add nothing.
_sending: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "tracer_requests_sending", default=False
)


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


def _no_store(headers: Any, case_insensitive: type) -> None:
    """The public path's :func:`requests_headers.store`: headers are read with ``.get``."""
    return None


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
        if fast_path(self.name, str(getattr(module, "__version__", "")), *VERIFIED):
            store_of = requests_headers.store
            send_with_headers = requests_headers.install(self, module, runtime)
        else:
            store_of = _no_store

            def send_with_headers(
                span: Span,
                session: Any,
                request: Any,
                store: dict[str, Any] | None,
                wrapped: Callable[..., Any],
                args: tuple[Any, ...],
                kw: dict[str, Any],
            ) -> Any:
                try:
                    runtime.inject(span, request.headers)
                except Exception as exc:
                    safety.internal_error("requests.start", exc)
                return wrapped(*args, **kw)

        def send(
            wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kw: dict[str, Any]
        ) -> Any:
            if suppress.get() or (in_call() and not _sending.get()):
                return wrapped(*args, **kw)
            span = None
            try:
                request = args[0] if args else kw["request"]
                headers = request.headers
                store = store_of(headers, case_insensitive)
                span = runtime.client_span(
                    request.method or "GET", request.url, _getter(headers, store)
                )
            except Exception as exc:
                safety.internal_error("requests.start", exc)
            if span is None:
                return wrapped(*args, **kw)
            # urllib3 and http.client, which requests runs on, see the call open and add nothing.
            token = call_began()
            own = _sending.set(True)
            try:
                response = send_with_headers(span, instance, request, store, wrapped, args, kw)
            except BaseException as exc:
                call_failed(span, exc, network_errors, "requests.finish")
                raise
            finally:
                _sending.reset(own)
                calling.reset(token)
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
                    span, int(status), _getter(headers, store_of(headers, case_insensitive))
                )
                span.finish()
            except Exception as exc:
                safety.internal_error("requests.finish", exc)
            return response

        self.wrap(module.Session, "send", send)

    def _uninstall(self) -> None:
        requests_headers.reset()
