"""The FastAPI service the ASGI tests serve with uvicorn in child processes.

Tracer is installed here, at import, when ``ASGI_INSTALL=1`` (the rest of the configuration
comes from the environment); under ``tracer run`` it is installed already. ``ASGI_WRAP=1``
serves the application wrapped by ``tracer.asgi()`` as well, so that three layers (uvicorn's,
the wrapper, FastAPI's) apply to each request.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
from fastapi import APIRouter, BackgroundTasks, FastAPI, WebSocket
from fastapi.middleware.cors import CORSMiddleware
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import Route

import tracer

if os.environ.get("ASGI_INSTALL") == "1":
    tracer.install()

#: What the lifespan handler saw: the span current during start-up (there must be none).
LIFESPAN: dict[str, Any] = {}


async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    LIFESPAN["span"] = repr(tracer.current_span())
    yield


app = FastAPI(lifespan=lifespan)
app.add_middleware(GZipMiddleware, minimum_size=10_000)
app.add_middleware(CORSMiddleware, allow_origins=["*"])


class Teapot(Exception):
    pass


@app.exception_handler(Teapot)
async def teapot(request: Request, exc: Teapot) -> PlainTextResponse:
    return PlainTextResponse("teapot", status_code=418)


def seen() -> dict[str, Any]:
    """The current span's ids (the request's own, as a view sees it)."""
    span = tracer.current_span()
    return {
        "pid": os.getpid(),
        "span_id": None if span is None else span.span_id,
        "trace_id": None if span is None else span.trace_id,
    }


@app.get("/hello/{n}")
async def hello(n: int) -> dict[str, Any]:
    return {"n": n, **seen()}


@app.get("/lifespan")
async def lifespan_seen() -> dict[str, Any]:
    return LIFESPAN


@app.get("/sync")
def sync_view() -> dict[str, Any]:
    # FastAPI runs a plain function in its thread pool.
    return seen()


@app.get("/boom")
async def boom() -> None:
    raise ValueError("the view failed")


@app.get("/teapot")
async def brew() -> None:
    raise Teapot()


@app.get("/stream")
async def stream() -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(3):
            with tracer.span(f"chunk {i}"):
                await asyncio.sleep(0)
            yield f"chunk {i}\n".encode()

    return StreamingResponse(chunks(), media_type="text/plain")


@app.get("/sse")
async def sse() -> StreamingResponse:
    def events() -> Iterator[str]:
        for i in range(3):
            yield f"data: {i}\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


def background_work(name: str) -> None:
    with tracer.span(name):
        pass


@app.get("/background")
async def background(tasks: BackgroundTasks) -> dict[str, Any]:
    tasks.add_task(background_work, "background sync")
    return seen()


@app.get("/threadpool")
async def threadpool() -> dict[str, Any]:
    def work() -> str:
        with tracer.span("threadpool work"):
            return threading.current_thread().name

    thread = await run_in_threadpool(work)
    return {"thread": thread, **seen()}


@app.get("/taskgroup")
async def taskgroup() -> dict[str, Any]:
    async def work(i: int) -> None:
        with tracer.span(f"task {i}"):
            await asyncio.sleep(0)

    async with anyio.create_task_group() as group:
        for i in range(2):
            group.start_soon(work, i)
    return seen()


@app.get("/metrics")
async def metrics() -> PlainTextResponse:
    from prometheus_client import generate_latest

    return PlainTextResponse(generate_latest(tracer.metrics.registry()).decode())


@app.websocket("/ws/{room}")
async def ws(websocket: WebSocket, room: str) -> None:
    await websocket.accept()
    while True:
        text = await websocket.receive_text()
        if text == "bye":
            await websocket.close()
            return
        with tracer.span("ws message"):
            await websocket.send_json({"room": room, "text": text, **seen()})


router = APIRouter(prefix="/api")
inner = APIRouter(prefix="/v2")


@inner.get("/items/{name}")
async def item(name: str) -> dict[str, Any]:
    return {"name": name, **seen()}


router.include_router(inner)
app.include_router(router)


async def plain(request: Request) -> JSONResponse:
    return JSONResponse(seen())


# A Starlette application mounted in the FastAPI one.
app.mount("/legacy", Starlette(routes=[Route("/pages/{page}", plain)]))

if os.environ.get("ASGI_WRAP") == "1":
    app = tracer.asgi(app)  # type: ignore[assignment]
