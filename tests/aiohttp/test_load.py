"""1,000 concurrent traced requests: every span present once, with the right trace and parent."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from typing import Any

import aiohttp
import pytest
import requests
from aiohttp import web

import tracer
from reporters.memory import MemoryReporter
from tests.aiohttp.conftest import Serve, echo
from tracer import context, ids

N = 1000


@pytest.mark.timeout(120)
async def test_thousand_concurrent_requests(memory: MemoryReporter, serve: Serve) -> None:
    backend = web.Application()
    backend.router.add_get("/b/{via}/{i}", echo)
    backend_url = await serve(backend)

    outbound = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))

    def blocking_call(i: int) -> Any:
        return requests.get(f"{backend_url}/b/requests/{i}", timeout=30).json()

    async def handler(request: web.Request) -> web.Response:
        i = int(request.match_info["i"])
        async with outbound.get(f"{backend_url}/b/aiohttp/{i}") as response:
            via_aiohttp = await response.json()
        # Both ways of handing blocking work to a thread.
        if i % 2:
            via_requests = await asyncio.to_thread(blocking_call, i)
        else:
            loop = asyncio.get_running_loop()
            via_requests = await loop.run_in_executor(None, blocking_call, i)
        return web.json_response(
            {
                "transaction_id": request.headers.get("request-id"),
                "seen": [
                    via_aiohttp["headers"]["request-id"],
                    via_requests["headers"]["request-id"],
                ],
            }
        )

    frontend = web.Application()
    frontend.router.add_get("/a/{i}", handler)
    frontend_url = await serve(frontend)

    async def call(session: aiohttp.ClientSession, i: int) -> Any:
        headers = {"request-id": f"load-{i}"}
        async with session.get(f"{frontend_url}/a/{i}", headers=headers) as response:
            assert response.status == 200
            return await response.json()

    try:
        # The driver itself is not traced: each request arrives with only its own request-id.
        with context.suppressed():
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as session:
                bodies = await asyncio.gather(*[call(session, i) for i in range(N)])
    finally:
        await outbound.close()

    for i, body in enumerate(bodies):
        assert body["seen"] == [f"load-{i}", f"load-{i}"]

    memory.wait_for(5 * N, timeout=60)
    # Everything finished so far is delivered: a late duplicate would be counted below.
    assert tracer.flush(timeout=30)
    spans = list(memory.spans)
    assert len(spans) == 5 * N
    assert len({s["span_id"] for s in spans}) == 5 * N, "duplicated spans"
    by_request: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in spans:
        by_request[s["request_id"]].append(s)
    assert set(by_request) == {f"load-{i}" for i in range(N)}
    for request_id, group in by_request.items():
        i = request_id.rsplit("-", 1)[1]
        assert {s["trace_id"] for s in group} == {ids.trace_id_for(request_id)}
        kinds = Counter(s["kind"] for s in group)
        assert kinds == {"server": 3, "client": 2}, group
        servers = {s["http"]["path"]: s for s in group if s["kind"] == "server"}
        assert set(servers) == {f"/a/{i}", f"/b/aiohttp/{i}", f"/b/requests/{i}"}
        root = servers[f"/a/{i}"]
        assert root["parent_id"] is None
        clients = {s["http"]["path"]: s for s in group if s["kind"] == "client"}
        assert set(clients) == {f"/b/aiohttp/{i}", f"/b/requests/{i}"}
        for path, client in clients.items():
            assert client["parent_id"] == root["span_id"]
            assert servers[path]["parent_id"] == client["span_id"]
            assert client["http"]["status_code"] == 200
