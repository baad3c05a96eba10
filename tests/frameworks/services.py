"""The services of the cross-service tests, each served in a child process by its usual server.

Every service is a factory, so that its framework is imported and tracer installed in the
process that serves (a gunicorn worker, uvicorn's process):

- ``flask_app()`` (gunicorn): ``GET /flask/<int:n>`` calls the next service with ``requests``;
  ``GET /relay?to=URL`` calls ``URL`` with ``requests``; ``GET /leaf/<name>`` answers.
- ``fastapi_app()`` (uvicorn): ``GET /fastapi/{n}`` calls the next service with aiohttp's client.
- ``django_app()`` (gunicorn): ``GET /django/<int:n>/`` calls the next service with ``requests``.
- ``python -m tests.frameworks.services aiohttp``: aiohttp's own server, ``GET /aiohttp/{n}``.
- ``otel_fastapi_app()`` (uvicorn): FastAPI instrumented by OpenTelemetry alone (its FastAPI
  and requests instrumentors, W3C Trace Context), printing each finished span as a line
  ``OTEL {json}``; ``GET /relay?to=URL`` and ``GET /leaf/{name}``.

The next service is ``SERVICE_NEXT``, a URL template with ``{n}`` in it. tracer is installed
with ``tracer.install()`` and configured by the ``TRACE_*`` variables the test sets (the http
reporter to the test's receiver). A service that prints ``OTEL`` lines installs no tracer.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def _install_tracer() -> None:
    import tracer

    tracer.install()


def _next_url(n: int) -> str:
    return os.environ["SERVICE_NEXT"].format(n=n)


def flask_app() -> Any:
    import flask
    import requests

    _install_tracer()
    app = flask.Flask("flask_service")

    @app.get("/flask/<int:n>")
    def hop(n: int) -> Any:
        answer = requests.get(_next_url(n), timeout=30)
        return {"service": "flask", "next": answer.json()}

    @app.get("/relay")
    def relay() -> Any:
        answer = requests.get(flask.request.args["to"], timeout=30)
        return {"service": "flask", "status": answer.status_code}

    @app.get("/leaf/<name>")
    def leaf(name: str) -> Any:
        return {"service": "flask", "leaf": name}

    return app


def fastapi_app() -> Any:
    import aiohttp
    import fastapi

    _install_tracer()
    app = fastapi.FastAPI()

    @app.get("/fastapi/{n}")
    async def hop(n: int) -> Any:
        async with aiohttp.ClientSession() as session:
            async with session.get(_next_url(n)) as answer:
                return {"service": "fastapi", "next": await answer.json()}

    return app


def django_app() -> Any:
    import django
    from django.conf import settings

    _install_tracer()
    settings.configure(
        DEBUG=False,
        ALLOWED_HOSTS=["127.0.0.1", "localhost"],
        ROOT_URLCONF="tests.frameworks.django_urls",
        SECRET_KEY="cross-service tests only",
        MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
        INSTALLED_APPS=[],
        DATABASES={},
        USE_TZ=True,
    )
    django.setup()
    from django.core.wsgi import get_wsgi_application

    return get_wsgi_application()


def django_hop(request: Any, n: int) -> Any:
    """The Django view of ``GET /django/<int:n>/``."""
    import requests
    from django.http import JsonResponse

    answer = requests.get(_next_url(n), timeout=30)
    return JsonResponse({"service": "django", "next": answer.json()})


def serve_aiohttp() -> None:
    """aiohttp's own server on an ephemeral port: prints ``PORT n``, serves until interrupted."""
    import asyncio

    from aiohttp import web

    _install_tracer()

    async def hop(request: web.Request) -> web.Response:
        return web.json_response({"service": "aiohttp", "n": int(request.match_info["n"])})

    async def serve() -> None:
        app = web.Application()
        app.router.add_get("/aiohttp/{n}", hop)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        print(f"PORT {runner.addresses[0][1]}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


def otel_fastapi_app() -> Any:
    import fastapi
    import requests
    from opentelemetry import trace
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import (
        SimpleSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class PrintingExporter(SpanExporter):
        """Each finished span as one ``OTEL`` line: the ids the test joins on."""

        def export(self, spans: Any) -> SpanExportResult:
            for span in spans:
                assert isinstance(span, ReadableSpan) and span.context is not None
                parent = span.parent
                line = {
                    "name": span.name,
                    "kind": span.kind.name,
                    "trace_id": f"{span.context.trace_id:032x}",
                    "span_id": f"{span.context.span_id:016x}",
                    "parent_id": None if parent is None else f"{parent.span_id:016x}",
                    "remote_parent": parent is not None and parent.is_remote,
                    "route": (span.attributes or {}).get("http.route"),
                }
                print("OTEL " + json.dumps(line), flush=True)
            return SpanExportResult.SUCCESS

    provider = TracerProvider(resource=Resource.create({"service.name": "otel-fastapi"}))
    provider.add_span_processor(SimpleSpanProcessor(PrintingExporter()))
    trace.set_tracer_provider(provider)
    RequestsInstrumentor().instrument(tracer_provider=provider)
    app = fastapi.FastAPI()

    @app.get("/relay")
    def relay(to: str) -> Any:
        answer = requests.get(to, timeout=30)
        return {"service": "otel-fastapi", "status": answer.status_code}

    @app.get("/leaf/{name}")
    async def leaf(name: str) -> Any:
        return {"service": "otel-fastapi", "leaf": name}

    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
    return app


if __name__ == "__main__":
    if sys.argv[1:] != ["aiohttp"]:
        raise SystemExit("usage: python -m tests.frameworks.services aiohttp")
    serve_aiohttp()
