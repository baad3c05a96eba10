"""An aiohttp service that calls another service, traced with one line:

    python examples/aiohttp_service.py 8081 http://127.0.0.1:8080

GET /proxy/{name} calls the upstream's /hello/{name} through an aiohttp ClientSession and runs a
blocking step in a thread; all three spans join the inbound request's trace.
"""

from __future__ import annotations

import asyncio
import sys

from aiohttp import ClientSession, web

import tracer

tracer.install(app_name="proxy")


def blocking_step(name: str) -> str:
    with tracer.span("blocking-step", name=name):  # a child span, in a worker thread
        return name.upper()


async def proxy(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    async with ClientSession() as session:
        async with session.get(f"{request.app['upstream']}/hello/{name}") as response:
            text = await response.text()
    shout = await asyncio.to_thread(blocking_step, name)
    return web.Response(text=f"{shout}: {text}")


if __name__ == "__main__":
    app = web.Application()
    app["upstream"] = sys.argv[2] if len(sys.argv) > 2 else "http://127.0.0.1:8080"
    app.router.add_get("/proxy/{name}", proxy)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]) if len(sys.argv) > 1 else 8081)
