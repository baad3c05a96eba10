"""httpx: a client span per request sent, sync and async, on any transport."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

import tracer
from reporters.memory import MemoryReporter
from tests.clients.conftest import TRACE_HEADERS, clients, no_open_call
from tests.conftest import Server, refused_port
from tracer.instrumentation import httpx as httpx_instrumentation
from tracer.patching import is_ours


def test_a_get_is_one_client_span_and_the_server_its_child(
    memory: MemoryReporter, echo: Server
) -> None:
    with tracer.span("job") as job:
        response = httpx.get(f"{echo.url}/wire?q=1", headers={"x-own": "kept"})
    sent = response.json()["headers"]
    spans = memory.wait_for(3)
    (client,) = clients(spans)
    (srv,) = [s for s in spans if s["kind"] == "server"]
    assert client["parent_id"] == job.span_id
    assert srv["parent_id"] == client["span_id"] and srv["trace_id"] == client["trace_id"]
    assert sent["x-span-id"] == client["span_id"] and sent["x-own"] == "kept"
    assert set(TRACE_HEADERS) <= set(sent)
    assert client["name"] == f"GET 127.0.0.1:{echo.port}/wire"
    assert client["http"]["status_code"] == 200
    assert client["http"]["url"] == f"{echo.url}/wire?q=1"
    assert [e["type"] for e in client["events"]] == ["cs", "cr"]
    assert no_open_call()


def test_a_secret_in_the_query_is_redacted(memory: MemoryReporter, echo: Server) -> None:
    httpx.get(f"{echo.url}/q?token=hunter2&x=1")
    (client,) = clients(memory.wait_for(2))
    assert "hunter2" not in client["http"]["url"]


def test_each_redirect_hop_is_a_span_under_the_callers(
    memory: MemoryReporter, echo: Server
) -> None:
    with tracer.span("job") as job:
        response = httpx.get(f"{echo.url}/redirect", follow_redirects=True)
    assert response.status_code == 200 and len(response.history) == 1
    spans = memory.wait_for(5)
    hops = clients(spans)
    assert [(c["http"]["path"], c["http"]["status_code"]) for c in hops] == [
        ("/redirect", 302),
        ("/landed", 200),
    ]
    assert {c["parent_id"] for c in hops} == {job.span_id}
    servers = {s["parent_id"]: s["http"]["path"] for s in spans if s["kind"] == "server"}
    assert servers == {hops[0]["span_id"]: "/redirect", hops[1]["span_id"]: "/landed"}


def test_clients_made_again_and_again_wrap_nothing_twice(
    memory: MemoryReporter, echo: Server
) -> None:
    with tracer.span("job") as job:
        for i in range(3):
            with httpx.Client() as client:
                client.get(f"{echo.url}/made/{i}")
    made = clients(memory.wait_for(7))
    assert len(made) == 3
    assert {c["parent_id"] for c in made} == {job.span_id}


def test_async_client(memory: MemoryReporter, echo: Server) -> None:
    async def main() -> tuple[str, dict[str, str]]:
        with tracer.span("job") as job:
            async with httpx.AsyncClient() as client:
                response = await client.post(f"{echo.url}/async", content=b"x")
        return job.span_id, response.json()["headers"]

    job_id, sent = asyncio.run(main())
    (client,) = clients(memory.wait_for(3))
    assert client["parent_id"] == job_id and client["http"]["method"] == "POST"
    assert sent["x-span-id"] == client["span_id"]


class Tagging(httpx.HTTPTransport):
    """A transport of one's own: it adds a header and sends with httpx's."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.headers["x-via"] = "own-transport"
        return super().handle_request(request)


def test_a_custom_and_a_mounted_transport_are_traced(memory: MemoryReporter, echo: Server) -> None:
    with httpx.Client(transport=Tagging()) as client:
        own = client.get(f"{echo.url}/own").json()["headers"]
    with httpx.Client(mounts={"http://127.0.0.1": Tagging()}) as client:
        mounted = client.get(f"{echo.url}/mounted").json()["headers"]
    spans = clients(memory.wait_for(4))
    assert [c["span_id"] for c in spans] == [own["x-span-id"], mounted["x-span-id"]]
    assert own["x-via"] == mounted["x-via"] == "own-transport"


def test_a_connection_refused_is_a_network_error_raised_unchanged(memory: MemoryReporter) -> None:
    with refused_port() as port, pytest.raises(httpx.ConnectError) as failed:
        httpx.get(f"http://127.0.0.1:{port}/down")
    assert type(failed.value) is httpx.ConnectError
    (client,) = clients(memory.wait_for(1))
    assert client["error"]["type"] == "network-error"
    assert client["http"]["status_code"] is None
    assert no_open_call()


def test_a_streamed_response_ends_its_span_when_closed(
    memory: MemoryReporter, echo: Server
) -> None:
    with httpx.Client() as client:
        with client.stream("GET", f"{echo.url}/streamed") as response:
            assert response.status_code == 200
            tracer.flush()
            # The head is in, the body is not read: the call is not over.
            assert clients(memory.spans) == []
            body = response.read()
        tracer.flush()
    (span,) = clients(memory.spans)
    assert span["http"]["status_code"] == 200 and body


def test_an_async_stream_too(memory: MemoryReporter, echo: Server) -> None:
    async def main() -> list[dict[str, Any]]:
        async with httpx.AsyncClient() as client:
            async with client.stream("GET", f"{echo.url}/astream") as response:
                tracer.flush()
                before = clients(memory.spans)
                async for _ in response.aiter_bytes():
                    pass
        return before

    assert asyncio.run(main()) == []
    tracer.flush()
    assert len(clients(memory.spans)) == 1


def test_public_hooks_patch_send_one_span_per_call(
    monkeypatch: pytest.MonkeyPatch, memory: MemoryReporter, echo: Server
) -> None:
    tracer.uninstall()
    monkeypatch.setenv("TRACER_PUBLIC_HOOKS", "1")
    tracer.install(app_name="test-service", reporter=memory, flush_interval=0.02)
    assert is_ours(vars(httpx.Client)["send"]) and is_ours(vars(httpx.AsyncClient)["send"])
    assert not is_ours(vars(httpx.Client)["_send_single_request"])
    with tracer.span("job") as job:
        response = httpx.get(f"{echo.url}/redirect", follow_redirects=True)
    assert response.status_code == 200
    (client,) = clients(memory.wait_for(4))
    assert client["parent_id"] == job.span_id and client["http"]["status_code"] == 200


def test_uninstall_restores_the_originals(echo: Server) -> None:
    originals = {
        (cls, name): vars(cls)[name]
        for cls in (httpx.Client, httpx.AsyncClient)
        for name in ("send", "_send_single_request")
    }
    import reporters

    tracer.install(app_name="s", reporter=reporters.create("memory"))
    assert (
        vars(httpx.Client)["_send_single_request"]
        is not originals[(httpx.Client, "_send_single_request")]
    )
    tracer.uninstall()
    for (cls, name), original in originals.items():
        assert vars(cls)[name] is original
    assert httpx.get(f"{echo.url}/after").json()["headers"].get("x-span-id") is None


def test_the_fast_path_range_covers_this_httpx() -> None:
    from tracer.instrumentation.base import version_tuple

    low, below = httpx_instrumentation.VERIFIED
    assert low <= version_tuple(httpx.__version__) < below
