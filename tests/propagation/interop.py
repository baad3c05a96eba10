"""Helpers for the interop tests: an OpenTelemetry SDK set up for one test, an aiohttp server."""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from aiohttp import web
from opentelemetry import propagate
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased
from opentelemetry.trace import SpanKind

from tracer.instrumentation.base import Instrumentation

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Otel:
    """A TracerProvider exporting to memory, parent-based (OpenTelemetry's default) or never
    sampling."""

    def __init__(self, sampled: bool = True) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider(sampler=ParentBased(ALWAYS_ON) if sampled else ALWAYS_OFF)
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def spans(self, kind: SpanKind) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.kind == kind]


@contextmanager
def global_propagator(propagator: TextMapPropagator) -> Iterator[None]:
    old = propagate.get_global_textmap()
    propagate.set_global_textmap(propagator)
    try:
        yield
    finally:
        propagate.set_global_textmap(old)


def hex_trace(value: int) -> str:
    return f"{value:032x}"


def hex_span(value: int) -> str:
    return f"{value:016x}"


async def echo(request: web.Request) -> web.Response:
    """Answers with the request headers, as JSON."""
    return web.json_response({k.lower(): v for k, v in request.headers.items()})


class AioServer:
    """An aiohttp application on 127.0.0.1, served by a loop in its own thread."""

    def __init__(self, middlewares: Sequence[Any] = (), handler: Handler = echo) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runner: web.AppRunner | None = None
        self.port = asyncio.run_coroutine_threadsafe(
            self._start(list(middlewares), handler), self.loop
        ).result(10)
        self.url = f"http://127.0.0.1:{self.port}"

    async def _start(self, middlewares: list[Any], handler: Handler) -> int:
        app = web.Application(middlewares=middlewares)
        app.router.add_route("*", "/{tail:.*}", handler)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or ()
        return int(sockets[0].getsockname()[1])

    def close(self) -> None:
        if self.runner is not None:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def instrumentation_name(module: str) -> str | None:
    """The name of tracer's instrumentation in ``module``, or None when it does not exist yet."""
    if importlib.util.find_spec(module) is None:
        return None
    mod = importlib.import_module(module)
    for obj in vars(mod).values():
        if (
            isinstance(obj, type)
            and issubclass(obj, Instrumentation)
            and obj is not Instrumentation
            and obj.__module__ == mod.__name__
        ):
            return str(obj.name)
    return None
