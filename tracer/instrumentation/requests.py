"""requests: a client span (CS/CR) around ``requests.Session.send``.

``Session.send`` is what ``requests.get`` and every session use, so one patch covers them all.
Connection errors and timeouts are recorded as ``network-error`` and re-raised unchanged.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

from tracer import safety
from tracer.context import suppress
from tracer.instrumentation.base import Instrumentation
from tracer.propagation import Getter


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

        def send(
            wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kw: dict[str, Any]
        ) -> Any:
            if suppress.get():
                return wrapped(*args, **kw)
            span = None
            try:
                request = args[0] if args else kw["request"]
                span = runtime.client_span(
                    request.method or "GET",
                    request.url,
                    _getter(request.headers, case_insensitive),
                )
                if span is not None:
                    runtime.inject(span, request.headers)
            except Exception as exc:
                safety.internal_error("requests.start", exc)
            if span is None:
                return wrapped(*args, **kw)
            try:
                response = wrapped(*args, **kw)
            except BaseException as exc:
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
            try:
                runtime.read_response(
                    span, response.status_code, _getter(response.headers, case_insensitive)
                )
                span.finish()
            except Exception as exc:
                safety.internal_error("requests.finish", exc)
            return response

        self.wrap(module.Session, "send", send)
