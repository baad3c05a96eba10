"""The public hooks (an aiohttp or requests outside the verified range, or TRACER_PUBLIC_HOOKS=1)
record the very spans the private fast paths do: the same calls are made once with each, through
the module switch ``tracer.instrumentation.base.fast_paths``, and the records compared."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aiohttp
import pytest
import requests
from aiohttp import web

import reporters
import tracer
from tests.aiohttp.conftest import Serve, echo_app
from tests.conftest import Server, refused_port
from tracer.instrumentation import aiohttp_client, aiohttp_server, base
from tracer.instrumentation import requests as requests_instrumentation

pytestmark = pytest.mark.skipif(
    not base.fast_path("aiohttp", aiohttp.__version__, *aiohttp_server.VERIFIED)
    or not base.fast_path("requests", requests.__version__, *requests_instrumentation.VERIFIED),
    reason="compares with the fast paths, which this aiohttp or requests does not take",
)
assert aiohttp_client.VERIFIED == aiohttp_server.VERIFIED


def _scrub(text: str) -> str:
    """Ports (of the server and of the refused calls) and object addresses made one."""
    return re.sub(r"\b\d{4,5}\b", "PORT", re.sub(r"0x[0-9a-f]+", "0x", text))


def comparable(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records without what differs from run to run (ids, times, ports, stacks); each
    parent named by its kind and name, so the shape of the trace is compared too."""
    by_id = {r["span_id"]: r for r in records}
    out = []
    for r in records:
        parent = by_id.get(r["parent_id"])
        error = r["error"]
        http = {k: v for k, v in r["http"].items()}
        http["url"] = _scrub(http["url"])
        out.append(
            {
                "kind": r["kind"],
                "name": _scrub(r["name"]),
                "parent": None if parent is None else (parent["kind"], _scrub(parent["name"])),
                "http": http,
                "error": None if error is None else (error["type"], _scrub(error["message"])),
                "events": [e["type"] for e in r["events"]],
                "must_collect": r["must_collect"],
                "sampled": r["sampled"],
                "tags": r["tags"],
                "causal": r["events"][0]["time_us"] <= r["events"][-1]["time_us"],
            }
        )
    return sorted(out, key=repr)


async def streamed(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(status=201)
    await response.prepare(request)
    await response.write(b"part")
    await asyncio.sleep(0)
    await response.write(b"part")
    return response


async def aiohttp_calls(serve: Serve) -> tuple[list[dict[str, Any]], list[Any]]:
    """Each kind of call once, through a session and an application made after install()."""
    reporter = reporters.create("memory")
    tracer.install(app_name="svc", reporter=reporter, flush_interval=0.02)
    try:
        app = echo_app()
        app.router.add_get("/streamed", streamed)
        sub = web.Application()
        sub.router.add_get("/items/{id}", streamed)
        app.add_subapp("/sub", sub)
        url = await serve(app)
        answers: list[Any] = []
        async with aiohttp.ClientSession() as session:
            for path in ("/users/7", "/status/404", "/raise", "/timeout", "/redirect/2"):
                async with session.get(f"{url}{path}") as response:
                    await response.read()
                    headers = response.headers
                    answers.append(
                        (
                            path,
                            response.status,
                            headers.get("x-parent"),
                            headers.get("x-must-collect"),
                            "x-client-send" in headers,
                        )
                    )
            for path in ("/streamed", "/sub/items/3"):
                async with session.get(f"{url}{path}") as response:
                    answers.append((path, response.status, await response.read()))
            async with session.get(f"{url}/echo", headers={"X-Mine": "1"}) as response:
                sent = (await response.json())["headers"]
                answers.append(sorted(k for k in sent if k.startswith("x-") or "-id" in k))
            with refused_port() as port:
                with pytest.raises(aiohttp.ClientConnectorError):
                    await session.get(f"http://127.0.0.1:{port}/down")
            with pytest.raises(aiohttp.ClientResponseError):
                await session.get(f"{url}/status/409", raise_for_status=True)
        records = reporter.wait_for(21)
        assert len(records) == 21, records
        return records, answers
    finally:
        tracer.uninstall()


async def test_aiohttp_public_hooks_record_the_fast_paths_spans(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast, fast_answers = await aiohttp_calls(serve)
    monkeypatch.setattr(base, "fast_paths", False)
    public, public_answers = await aiohttp_calls(serve)
    assert public_answers == fast_answers
    assert comparable(public) == comparable(fast)
    # Every server span's SS is between its SR and the client's CR.
    for record in public:
        times = [e["time_us"] for e in record["events"]]
        assert times == sorted(times)


def requests_calls(server: Server) -> tuple[list[dict[str, Any]], list[Any]]:
    reporter = reporters.create("memory")
    tracer.install(app_name="svc", reporter=reporter, flush_interval=0.02)
    try:
        answers: list[Any] = []
        with requests.Session() as session:
            response = session.get(f"{server.url}/wire", headers={"X-Mine": "1"}, timeout=10)
            sent = response.json()["headers"]
            answers.append(sorted(k for k in sent if k.startswith("x-") or "-id" in k))
            answers.append(sorted(response.request.headers))
            answers.append(session.get(f"{server.url}/status/404", timeout=10).status_code)
            answers.append(session.post(f"{server.url}/p", data=b"x", timeout=10).status_code)
        with refused_port() as port, pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/down", timeout=5)
        records = reporter.wait_for(7)
        assert len(records) == 7, records
        return records, answers
    finally:
        tracer.uninstall()


def test_requests_public_hooks_record_the_fast_paths_spans(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast, fast_answers = requests_calls(server)
    monkeypatch.setattr(base, "fast_paths", False)
    public, public_answers = requests_calls(server)
    assert public_answers == fast_answers
    assert comparable(public) == comparable(fast)
