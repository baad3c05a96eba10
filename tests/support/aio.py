"""An aiohttp application on 127.0.0.1 served from a thread, for tests driven synchronously."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def echo(request: web.Request) -> web.Response:
    """Answers with the request headers, as JSON."""
    return web.json_response({k.lower(): v for k, v in request.headers.items()})


class AioServer:
    """An aiohttp application on 127.0.0.1, served by a loop in its own thread: every path goes
    to ``handler``, unless a subclass builds its own application in :meth:`app`."""

    def __init__(self, middlewares: Sequence[Any] = (), handler: Handler = echo) -> None:
        self.middlewares = list(middlewares)
        self.handler = handler
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runner: web.AppRunner | None = None
        self.port = asyncio.run_coroutine_threadsafe(
            self._start(self.middlewares, handler), self.loop
        ).result(30)
        self.url = f"http://127.0.0.1:{self.port}"

    def app(self) -> web.Application:
        app = web.Application(middlewares=self.middlewares)
        app.router.add_route("*", "/{tail:.*}", self.handler)
        return app

    async def _start(self, middlewares: list[Any], handler: Handler) -> int:
        # A subclass may serve an application of its own by overriding this (with these
        # arguments) or, more simply, app().
        self.runner = web.AppRunner(self.app())
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or ()
        return int(sockets[0].getsockname()[1])

    def close(self) -> None:
        if self.runner is not None:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()
