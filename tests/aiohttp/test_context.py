"""Context across concurrency: tasks and threads started by a handler join its trace; no leaks."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
import requests
from aiohttp import web

import reporters
import tracer
from reporters.memory import MemoryReporter
from tests.aiohttp.conftest import Serve, echo_app
from tests.conftest import Server
from tracer import context


def _span_id() -> str | None:
    span = tracer.current_span()
    return None if span is None else span.span_id


@pytest.fixture
def pool() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=2)
    yield executor
    executor.shutdown(wait=True)


async def _get_json(url: str, headers: dict[str, str] | None = None) -> Any:
    with context.suppressed():
        async with aiohttp.ClientSession() as session:
            async with session.get(url, headers=headers) as response:
                assert response.status == 200, await response.text()
                return await response.json()


async def test_tasks_of_a_handler_are_children_of_its_span(
    memory: MemoryReporter, serve: Serve
) -> None:
    async def child(i: int) -> str | None:
        with tracer.span(f"child-{i}"):
            await asyncio.sleep(0)
        return _span_id()

    async def handler(request: web.Request) -> web.Response:
        gathered = await asyncio.gather(child(0), child(1))
        task = asyncio.create_task(child(2))
        await task
        return web.json_response({"server": _span_id(), "after": [*gathered, await task]})

    app = web.Application()
    app.router.add_get("/fan", handler)
    url = await serve(app)
    body = await _get_json(f"{url}/fan", {"request-id": "fan-out"})
    # After each child span ended, the child task was back on the server span.
    assert body["after"] == [body["server"]] * 3
    memory.wait_for(4)
    (srv,) = memory.find(kind="server")
    children = memory.find(kind="internal")
    assert sorted(c["name"] for c in children) == ["child-0", "child-1", "child-2"]
    for c in children:
        assert c["parent_id"] == srv["span_id"]
        assert c["trace_id"] == srv["trace_id"] and c["request_id"] == "fan-out"


async def test_threads_of_a_handler_carry_its_span(
    memory: MemoryReporter, serve: Serve, pool: concurrent.futures.ThreadPoolExecutor
) -> None:
    async def handler(request: web.Request) -> web.Response:
        seen: dict[str, str | None] = {}

        def in_thread() -> None:
            seen["thread"] = _span_id()

        class Worker(threading.Thread):
            def run(self) -> None:  # overrides run(): still carried
                seen["subclass"] = _span_id()

        for t in (threading.Thread(target=in_thread), Worker()):
            t.start()
            t.join()
        seen["submit"] = pool.submit(_span_id).result()
        loop = asyncio.get_running_loop()
        seen["run_in_executor"] = await loop.run_in_executor(None, _span_id)
        seen["run_in_pool"] = await loop.run_in_executor(pool, _span_id)
        seen["to_thread"] = await asyncio.to_thread(_span_id)
        return web.json_response({"server": _span_id(), "seen": seen})

    app = web.Application()
    app.router.add_get("/threads", handler)
    url = await serve(app)
    body = await _get_json(f"{url}/threads")
    assert body["server"] is not None
    assert body["seen"] == dict.fromkeys(
        ["thread", "subclass", "submit", "run_in_executor", "run_in_pool", "to_thread"],
        body["server"],
    )
    # The same pools, now from outside any request: nothing left over from the request.
    assert tracer.current_span() is None
    assert pool.submit(_span_id).result() is None
    loop = asyncio.get_running_loop()
    assert await loop.run_in_executor(None, _span_id) is None
    assert await asyncio.to_thread(_span_id) is None
    fresh: list[str | None] = []
    t = threading.Thread(target=lambda: fresh.append(_span_id()))
    t.start()
    t.join()
    assert fresh == [None]


def test_requests_in_a_thread_joins_the_trace(
    memory: MemoryReporter, server: Server, pool: concurrent.futures.ThreadPoolExecutor
) -> None:
    with tracer.span("job") as job:
        assert job is not None
        sent = pool.submit(lambda: requests.get(f"{server.url}/t", timeout=10).json()).result()
    assert sent["headers"]["request-id"] == job.request_id
    memory.wait_for(3)
    (client,) = memory.find(kind="client")
    assert client["parent_id"] == job.span_id


def test_suppression_is_carried_into_threads(
    memory: MemoryReporter, server: Server, pool: concurrent.futures.ThreadPoolExecutor
) -> None:
    def call() -> dict[str, Any]:
        return dict(requests.get(f"{server.url}/quiet", timeout=10).json()["headers"])

    with context.suppressed():
        from_pool = pool.submit(call).result()
        box: list[dict[str, Any]] = []
        t = threading.Thread(target=lambda: box.append(call()))
        t.start()
        t.join()
    assert "request-id" not in from_pool and "request-id" not in box[0]
    # Suppression ended with the block, also for the pool's threads.
    assert "request-id" in pool.submit(call).result()


def test_application_context_variables_are_untouched() -> None:
    import contextvars

    mine: contextvars.ContextVar[str] = contextvars.ContextVar("mine", default="default")
    tracer.install(app_name="s", reporter=reporters.create("memory"))
    token = mine.set("set-in-caller")
    try:
        with tracer.span("job"):
            seen: list[str] = []
            t = threading.Thread(target=lambda: seen.append(mine.get()))
            t.start()
            t.join()
    finally:
        mine.reset(token)
    # Only tracer's own context travels; a thread still starts with the app's defaults.
    assert seen == ["default"]


def test_uninstall_restores_threading() -> None:
    start = threading.Thread.__dict__["start"]
    bootstrap = threading.Thread.__dict__["_bootstrap_inner"]
    submit = concurrent.futures.ThreadPoolExecutor.__dict__["submit"]
    tracer.install(app_name="s", reporter=reporters.create("memory"))
    assert threading.Thread.__dict__["start"] is not start
    tracer.uninstall()
    assert threading.Thread.__dict__["start"] is start
    assert threading.Thread.__dict__["_bootstrap_inner"] is bootstrap
    assert concurrent.futures.ThreadPoolExecutor.__dict__["submit"] is submit


async def test_concurrent_requests_no_leaks_between_requests(
    memory: MemoryReporter, serve: Serve
) -> None:
    url = await serve(echo_app())
    ids = [f"conc-{i}" for i in range(50)]
    bodies = await asyncio.gather(*[_get_json(f"{url}/echo", {"request-id": r}) for r in ids])
    assert [b["transaction_id"] for b in bodies] == ids
