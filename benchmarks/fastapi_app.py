"""A hello-world FastAPI application called in-process through its ASGI entry point, for the
instruction counts of ``python -m benchmarks.instructions fastapi``: the framework and the
tracer that instruments it, without a server or a socket."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

BODY = b"Hello, world"

_SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0", "spec_version": "2.3"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/hello/1",
    "raw_path": b"/hello/1",
    "query_string": b"",
    "root_path": "",
    "headers": [(b"host", b"127.0.0.1:8000"), (b"accept", b"*/*")],
    "client": ("127.0.0.1", 50000),
    "server": ("127.0.0.1", 8000),
}


def make_app() -> Any:
    """The application, made anew: OpenTelemetry's instrumentor hooks an application as it is
    built."""
    from fastapi import FastAPI
    from fastapi.responses import PlainTextResponse

    app = FastAPI()

    @app.get("/hello/{id}", response_class=PlainTextResponse)
    async def hello(id: int) -> str:
        return BODY.decode()

    return app


@contextmanager
def calls(url: str) -> Iterator[Callable[[int, bool], int]]:
    """``call(count, fresh)``: ``count`` requests, one after the other on one event loop; how
    many were answered 200 with the expected body (``url`` is not used: nothing leaves the
    process)."""
    loop = asyncio.new_event_loop()
    apps: list[Any] = []

    sent: list[dict[str, Any]] = []
    request = {"type": "http.request", "body": b"", "more_body": False}

    async def receive() -> dict[str, Any]:
        return request

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def serve(app: Any, count: int) -> int:
        ok = 0
        for _ in range(count):
            sent.clear()
            await app({**_SCOPE}, receive, send)
            ok += len(sent) == 2 and sent[0].get("status") == 200 and sent[1].get("body") == BODY
        return ok

    def call(count: int, fresh: bool) -> int:
        if fresh or not apps:
            apps[:] = [make_app()]
        return loop.run_until_complete(serve(apps[0], count))

    try:
        yield call
    finally:
        loop.close()
