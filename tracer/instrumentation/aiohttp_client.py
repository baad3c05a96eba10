"""aiohttp client: a client span (CS/CR) for every ``ClientSession`` request.

``ClientSession._request`` is the one coroutine every request of every session goes through
(``get``, ``post``, ``request``, ``ws_connect``), sessions created before ``install()`` included,
and it runs in the caller's task. Our replacement:

* starts the span under the current one (CS) and passes the caller's headers plus the
  propagation headers on; aiohttp merges them over the session's defaults and sends them on every
  hop, redirects included;
* records the final status when ``_request`` returns, once the response head arrived (CR), with
  ``x-must-collect`` read back and the number of redirects followed (one span for the chain);
* records connection errors and timeouts as ``network-error`` and, for ``raise_for_status``, the
  status that came; the exception is re-raised unchanged.

aiohttp's ``TraceConfig`` signals would do the same, but they cost a dozen objects and awaits per
request (a parameters object and a signal send per event); this costs one coroutine.

``_request``'s parameters and ``session._build_url`` are aiohttp's internals, so this fast path is
taken only on the versions it was verified with (:data:`VERIFIED`). On any other version, or with
``TRACER_PUBLIC_HOOKS=1``, the same span comes from a ``TraceConfig`` that ``ClientSession``'s
constructor adds to every session made after ``install()`` (sessions made before it are not
traced then).
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tracer import safety
from tracer.context import suppress
from tracer.instrumentation.base import Instrumentation, fast_path

if TYPE_CHECKING:
    from tracer.runtime import Runtime

#: The aiohttp versions the fast path was verified with: lowest, and the first one not verified.
VERIFIED = ((3, 8, 3), (3, 15))


class AiohttpClientInstrumentation(Instrumentation):
    """Client spans for ``aiohttp.ClientSession``, with propagation headers injected."""

    name = "aiohttp.client"
    module = "aiohttp"

    def _install(self, module: types.ModuleType) -> None:
        from multidict import CIMultiDict

        runtime = self.runtime
        assert runtime is not None
        network_errors: tuple[type[BaseException], ...] = (
            module.ClientConnectionError,
            asyncio.TimeoutError,
        )
        response_error: type[BaseException] = module.ClientResponseError
        if not fast_path(self.name, str(getattr(module, "__version__", "")), *VERIFIED):
            self._install_public(module, runtime, network_errors, response_error)
            return
        client_span = runtime.client_span
        inject = runtime.inject

        def target_url(session: Any, str_or_url: Any, params: Any) -> str:
            if (
                type(str_or_url) is str
                and not params
                and getattr(session, "_base_url", None) is None
                and str_or_url.startswith(("http://", "https://"))
            ):
                return str_or_url
            # A relative URL on a session with a base_url, a yarl.URL, or query parameters:
            # the URL aiohttp itself will request.
            url = session._build_url(str_or_url)
            return str(url.update_query(params) if params else url)

        def make_request(original: Callable[..., Any]) -> Any:
            async def _request(
                self: Any, method: str, str_or_url: Any, *args: Any, **kw: Any
            ) -> Any:
                if suppress.get():
                    return await original(self, method, str_or_url, *args, **kw)
                span = None
                try:
                    headers = kw.get("headers")
                    out = CIMultiDict() if headers is None else CIMultiDict(headers)
                    span = client_span(
                        method, target_url(self, str_or_url, kw.get("params")), out.get
                    )
                    if span is not None:
                        inject(span, out)
                        kw["headers"] = out
                except Exception as exc:
                    safety.internal_error("aiohttp.client.start", exc)
                if span is None:
                    return await original(self, method, str_or_url, *args, **kw)
                try:
                    response = await original(self, method, str_or_url, *args, **kw)
                except BaseException as exc:
                    try:
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
                    raise
                try:
                    if response.history:
                        span.set_tag("redirects", len(response.history))
                    runtime.read_response(span, response.status, response.headers.get)
                    span.finish()
                except Exception as exc:
                    safety.internal_error("aiohttp.client.finish", exc)
                return response

            return _request

        self.replace(module.ClientSession, "_request", make_request)

    def _install_public(
        self,
        module: types.ModuleType,
        runtime: Runtime,
        network_errors: tuple[type[BaseException], ...],
        response_error: type[BaseException],
    ) -> None:
        """The same spans through aiohttp's public ``TraceConfig`` signals."""
        config = module.TraceConfig()

        async def on_start(session: Any, ctx: Any, params: Any) -> None:
            ctx.tracer_span = None
            if suppress.get():
                return
            try:
                headers = params.headers
                span = runtime.client_span(params.method, str(params.url), headers.get)
                if span is not None:
                    runtime.inject(span, headers)
                ctx.tracer_span = span
            except Exception as exc:
                safety.internal_error("aiohttp.client.start", exc)

        async def on_end(session: Any, ctx: Any, params: Any) -> None:
            span = getattr(ctx, "tracer_span", None)
            if span is None:
                return
            try:
                response = params.response
                if response.history:
                    span.set_tag("redirects", len(response.history))
                runtime.read_response(span, response.status, response.headers.get)
                span.finish()
            except Exception as exc:
                safety.internal_error("aiohttp.client.finish", exc)

        async def on_exception(session: Any, ctx: Any, params: Any) -> None:
            span = getattr(ctx, "tracer_span", None)
            if span is None:
                return
            try:
                exc = params.exception
                if isinstance(exc, network_errors):
                    span.record_network_error(exc)
                elif type(exc) is response_error:
                    span.status_code = getattr(exc, "status", 0) or None
                else:
                    span.record_exception(exc)
                span.finish()
            except Exception as inner:
                safety.internal_error("aiohttp.client.finish", inner)

        config.on_request_start.append(on_start)
        config.on_request_end.append(on_end)
        config.on_request_exception.append(on_exception)
        config.freeze()

        def init(
            wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kw: dict[str, Any]
        ) -> Any:
            # A new list: the caller's own stays as it was.
            kw["trace_configs"] = [*(kw.get("trace_configs") or ()), config]
            return wrapped(*args, **kw)

        self.wrap(module.ClientSession, "__init__", init)
