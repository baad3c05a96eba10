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

        def send(
            wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kw: dict[str, Any]
        ) -> Any:
            if suppress.get():
                return wrapped(*args, **kw)
            span = None
            try:
                request = args[0] if args else kw["request"]
                span = runtime.client_span(
                    request.method or "GET", request.url, request.headers.get
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
                    if isinstance(exc, network_errors):
                        span.record_network_error(exc)
                        span.local.must_collect = True
                    else:
                        span.record_exception(exc)
                    span.finish()
                except Exception as inner:
                    safety.internal_error("requests.finish", inner)
                raise
            try:
                runtime.read_response(span, response.status_code, response.headers.get)
                span.finish()
            except Exception as exc:
                safety.internal_error("requests.finish", exc)
            return response

        self.wrap(module.Session, "send", send)
