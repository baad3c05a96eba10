"""aiohttp client: a client span (CS/CR) for every ``ClientSession`` request.

The span lives on aiohttp's own client tracing signals, through one ``TraceConfig`` of ours:

* ``on_request_start`` (once per call, in the caller's task) starts the span under the current
  one and writes the propagation headers into the very headers object every hop of the call
  sends, redirects included;
* ``on_request_redirect`` counts the hops; ``on_request_end`` records the final status (one span
  for the whole redirect chain) and ``x-must-collect``;
* ``on_request_exception`` records connection errors and timeouts as ``network-error``; aiohttp
  re-raises the exception unchanged.

A session reads its trace configs when a request starts, and sessions created before
``install()`` must be traced too, so ``ClientSession._request`` is wrapped to give the session
(on its first request) a new list holding its own configs plus ours. The session's original list
object is remembered and put back by ``uninstall()``; the caller's list is never modified.
"""

from __future__ import annotations

import asyncio
import types
import weakref
from collections.abc import Callable
from typing import Any

from tracer import safety
from tracer.context import suppress
from tracer.instrumentation.base import Instrumentation
from tracer.span import Span

_SPAN = "tracer_span"


class AiohttpClientInstrumentation(Instrumentation):
    """Client spans for ``aiohttp.ClientSession``, with propagation headers injected."""

    name = "aiohttp.client"
    module = "aiohttp"

    def __init__(self) -> None:
        super().__init__()
        self._config: Any = None
        # session -> the trace config list it had before we added ours.
        self._sessions: weakref.WeakKeyDictionary[Any, list[Any]] = weakref.WeakKeyDictionary()

    def _install(self, module: types.ModuleType) -> None:
        runtime = self.runtime
        assert runtime is not None
        network_errors: tuple[type[BaseException], ...] = (
            module.ClientConnectionError,
            asyncio.TimeoutError,
        )
        response_error: type[BaseException] = module.ClientResponseError

        async def on_start(session: Any, ctx: Any, params: Any) -> None:
            if suppress.get():
                return
            try:
                headers = params.headers
                span = runtime.client_span(params.method, str(params.url), headers.get)
                if span is not None:
                    runtime.inject(span, headers)
                    setattr(ctx, _SPAN, span)
            except Exception as exc:
                safety.internal_error("aiohttp.client.start", exc)

        async def on_redirect(session: Any, ctx: Any, params: Any) -> None:
            span: Span | None = getattr(ctx, _SPAN, None)
            if span is not None:
                try:
                    span.set_tag("redirects", (span.tags or {}).get("redirects", 0) + 1)
                except Exception as exc:
                    safety.internal_error("aiohttp.client.redirect", exc)

        async def on_end(session: Any, ctx: Any, params: Any) -> None:
            span: Span | None = getattr(ctx, _SPAN, None)
            if span is None:
                return
            try:
                response = params.response
                runtime.read_response(span, response.status, response.headers.get)
                span.finish()
            except Exception as exc:
                safety.internal_error("aiohttp.client.finish", exc)

        async def on_exception(session: Any, ctx: Any, params: Any) -> None:
            span: Span | None = getattr(ctx, _SPAN, None)
            if span is None:
                return
            try:
                exc: Any = params.exception
                if isinstance(exc, network_errors):
                    # The collector marks the trace must_collect (within its rate limit).
                    span.record_network_error(exc)
                elif type(exc) is response_error:
                    # raise_for_status: an answer arrived; its status is what to record.
                    span.status_code = getattr(exc, "status", 0) or None
                else:
                    span.record_exception(exc)
                span.finish()
            except Exception as inner:
                safety.internal_error("aiohttp.client.finish", inner)

        config = module.TraceConfig()
        config.on_request_start.append(on_start)
        config.on_request_redirect.append(on_redirect)
        config.on_request_end.append(on_end)
        config.on_request_exception.append(on_exception)
        config.freeze()
        self._config = config
        sessions = self._sessions

        def request(
            wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kw: dict[str, Any]
        ) -> Any:
            try:
                configs = instance._trace_configs
                if config not in configs:
                    if instance not in sessions:
                        sessions[instance] = configs
                    instance._trace_configs = [*configs, config]
            except Exception as exc:
                safety.internal_error("aiohttp.client.session", exc)
            return wrapped(*args, **kw)

        self.wrap(module.ClientSession, "_request", request)

    def _uninstall(self) -> None:
        for session, original in list(self._sessions.items()):
            session._trace_configs = original
        self._sessions.clear()
        self._config = None
