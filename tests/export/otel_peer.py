"""A service instrumented with the OpenTelemetry SDK and exporting with the SDK's own OTLP/HTTP
exporter: the real peer of the interop test.

``python otel_peer.py RECEIVER_URL`` serves on an ephemeral 127.0.0.1 port, prints ``PORT <n>``
and serves until its standard input closes. ``GET /relay?to=URL`` calls ``URL`` with aiohttp's
client (instrumented by OpenTelemetry) and answers with its status; ``GET /leaf`` answers
``leaf``. Its spans go to ``RECEIVER_URL/v1/traces`` as each ends.
"""

from __future__ import annotations

import asyncio
import sys
import warnings

import aiohttp
from aiohttp import web
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor


async def relay(request: web.Request) -> web.Response:
    async with aiohttp.ClientSession() as session:
        async with session.get(request.query["to"]) as response:
            await response.read()
            return web.json_response({"status": response.status})


async def leaf(request: web.Request) -> web.Response:
    return web.Response(text="leaf")


async def serve() -> None:
    app = web.Application()
    app.router.add_get("/relay", relay)
    app.router.add_get("/leaf", leaf)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(f"PORT {runner.addresses[0][1]}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await runner.cleanup()


def main() -> None:
    receiver = sys.argv[1]
    provider = TracerProvider(resource=Resource.create({"service.name": "otel-peer"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(f"{receiver}/v1/traces")))
    trace.set_tracer_provider(provider)
    # The server instrumentor replaces web.Application by a subclass, which aiohttp warns about.
    warnings.simplefilter("ignore", DeprecationWarning)
    AioHttpServerInstrumentor().instrument()
    AioHttpClientInstrumentor().instrument()
    try:
        asyncio.run(serve())
    finally:
        provider.shutdown()


if __name__ == "__main__":
    main()
