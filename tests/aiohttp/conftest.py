"""aiohttp fixtures: real applications served on 127.0.0.1 by ``web.AppRunner`` + ``TCPSite``."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import tracer
from tests.delivery.helpers import Certs
from tracer.instrumentation import aiohttp_client, aiohttp_server
from tracer.instrumentation.base import fast_path

#: Whether this aiohttp takes tracer's private fast paths (else its public hooks: an aiohttp
#: outside the verified range, or TRACER_PUBLIC_HOOKS=1).
FAST = fast_path("aiohttp.server", aiohttp.__version__, *aiohttp_server.VERIFIED)
assert FAST == fast_path("aiohttp.client", aiohttp.__version__, *aiohttp_client.VERIFIED)
#: For what only the fast paths do: trace an application already serving, or a session made,
#: before install(), and the low-level web.Server.
fast_path_only = pytest.mark.skipif(not FAST, reason="aiohttp's public hooks do not cover it")

Serve = Callable[[web.Application], Awaitable[str]]


class Running:
    """Applications being served; each gets an ephemeral port and is cleaned up after the test."""

    def __init__(self) -> None:
        self.runners: list[web.AppRunner] = []

    async def serve(self, app: web.Application, ssl_context: ssl.SSLContext | None = None) -> str:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        self.runners.append(runner)
        host, port = runner.addresses[-1][:2]
        return f"{'http' if ssl_context is None else 'https'}://{host}:{port}"

    async def close(self) -> None:
        for runner in reversed(self.runners):
            await runner.cleanup()


@pytest.fixture
async def serve_tls(
    certs: Certs,
) -> AsyncIterator[Callable[[web.Application], Awaitable[tuple[str, Path]]]]:
    """``url, ca_file = await serve_tls(app)``: ``app`` over TLS with a throw-away CA."""
    running = Running()

    async def serve(app: web.Application) -> tuple[str, Path]:
        return await running.serve(app, certs.server_context()), certs.ca

    yield serve
    await running.close()


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """``url = await serve(app)``: serve ``app`` on 127.0.0.1 until the test ends."""
    running = Running()
    yield running.serve
    await running.close()


def echo_body(request: web.Request) -> dict[str, Any]:
    span = tracer.current_span()
    return {
        "headers": {k.lower(): v for k, v in request.headers.items()},
        "transaction_id": tracer.get_transaction_id(),
        "span_id": None if span is None else span.span_id,
        "path": request.path_qs,
    }


async def echo(request: web.Request) -> web.Response:
    return web.json_response(echo_body(request))


STATUS_ERRORS: dict[int, type[web.HTTPException]] = {
    403: web.HTTPForbidden,
    404: web.HTTPNotFound,
    409: web.HTTPConflict,
    503: web.HTTPServiceUnavailable,
}


async def status(request: web.Request) -> web.Response:
    raise STATUS_ERRORS[int(request.match_info["code"])]()


async def fail(request: web.Request) -> web.Response:
    raise ValueError("handler failed")


async def slow_timeout(request: web.Request) -> web.Response:
    raise asyncio.TimeoutError()


async def redirect(request: web.Request) -> web.Response:
    n = int(request.match_info["n"])
    target = "/users/final" if n <= 1 else f"/redirect/{n - 1}"
    raise web.HTTPFound(target)


def echo_app() -> web.Application:
    """Routes every test uses: echo, statuses, failures, redirects."""
    app = web.Application()
    app.router.add_get("/users/{id}", echo)
    app.router.add_get("/echo", echo)
    app.router.add_post("/echo", echo)
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/raise", fail)
    app.router.add_get("/timeout", slow_timeout)
    app.router.add_get("/redirect/{n}", redirect)
    return app
