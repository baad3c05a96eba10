"""aiohttp client: client spans and the headers that cross the wire."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import pytest

import reporters
import tracer
from reporters.memory import MemoryReporter
from tests.aiohttp.conftest import FAST, Serve, echo_app, fast_path_only
from tests.conftest import Server, refused_port
from tracer import context


async def test_headers_on_the_wire_and_client_span(memory: MemoryReporter, server: Server) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{server.url}/wire?q=1") as response:
            assert response.status == 200
            sent = (await response.json())["headers"]
    memory.wait_for(2)
    (client,) = memory.find(kind="client")
    (srv,) = memory.find(kind="server")
    assert sent["request-id"] == client["request_id"]
    assert sent["x-span-id"] == client["span_id"]
    assert sent["x-parent"] == "test-service"
    assert int(sent["x-client-send"]) == client["events"][0]["time_us"]
    assert srv["parent_id"] == client["span_id"] and srv["trace_id"] == client["trace_id"]
    assert client["name"] == f"GET 127.0.0.1:{server.port}/wire"
    assert client["http"]["status_code"] == 200
    assert client["http"]["method"] == "GET"
    assert [e["type"] for e in client["events"]] == ["cs", "cr"]
    assert client["error"] is None


async def test_client_to_aiohttp_server(memory: MemoryReporter, serve: Serve) -> None:
    url = await serve(echo_app())
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/echo", data=b"x") as response:
            body = await response.json()
        async with session.get(f"{url}/status/404") as response:
            assert response.status == 404
    memory.wait_for(4)
    clients = sorted(memory.find(kind="client"), key=lambda s: s["start_us"])
    assert [(c["http"]["method"], c["http"]["status_code"]) for c in clients] == [
        ("POST", 200),
        ("GET", 404),
    ]
    servers = {s["parent_id"]: s for s in memory.find(kind="server")}
    assert set(servers) == {c["span_id"] for c in clients}
    assert body["headers"]["x-span-id"] == clients[0]["span_id"]


async def test_redirects_followed_inside_one_span(memory: MemoryReporter, serve: Serve) -> None:
    url = await serve(echo_app())
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/redirect/2") as response:
            assert response.status == 200
            assert response.url.path == "/users/final"
            assert len(response.history) == 2
    memory.wait_for(4)
    (client,) = memory.find(kind="client")
    assert client["http"]["status_code"] == 200
    assert client["tags"]["redirects"] == 2
    assert client["name"].endswith("/redirect/2")
    hops = memory.find(kind="server")
    assert sorted(s["http"]["status_code"] for s in hops) == [200, 302, 302]
    # Every hop carried the headers of the one client span.
    assert {s["parent_id"] for s in hops} == {client["span_id"]}


async def _fetch_error(url: str, timeout: aiohttp.ClientTimeout | None = None) -> BaseException:
    # No timeout=None: aiohttp 3.8 takes it for no ClientTimeout at all, and fails on it.
    options = {} if timeout is None else {"timeout": timeout}
    async with aiohttp.ClientSession(**options) as session:
        try:
            async with session.get(url) as response:
                await response.read()
        except BaseException as exc:
            return exc
    raise AssertionError("no error")


async def test_connection_error_recorded_and_reraised_unchanged() -> None:
    with refused_port() as port:
        url = f"http://127.0.0.1:{port}/down"
        untraced = await _fetch_error(url)
        reporter = reporters.create("memory")
        tracer.install(app_name="s", reporter=reporter, flush_interval=0.02)
        traced = await _fetch_error(url)
    assert type(traced) is type(untraced)
    assert isinstance(traced, aiohttp.ClientConnectorError)
    assert str(traced) == str(untraced)
    tracer.flush()
    (client,) = reporter.find(kind="client")
    assert client["error"]["type"] == "network-error"
    assert "ClientConnectorError" in client["error"]["message"]
    assert client["must_collect"] is True
    assert client["http"]["status_code"] is None
    assert [e["type"] for e in client["events"]] == ["cs", "cr"]


@pytest.mark.parametrize(
    "timeout",
    [aiohttp.ClientTimeout(total=0.3), aiohttp.ClientTimeout(sock_read=0.3)],
    ids=["total", "sock_read"],
)
async def test_timeout_recorded_and_reraised(
    memory: MemoryReporter, timeout: aiohttp.ClientTimeout
) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts, never answers
    try:
        exc = await _fetch_error(f"http://127.0.0.1:{listener.getsockname()[1]}/", timeout)
    finally:
        listener.close()
    assert isinstance(exc, asyncio.TimeoutError)
    tracer.flush()
    (client,) = memory.find(kind="client")
    assert client["error"]["type"] == "network-error"
    assert "Timeout" in client["error"]["message"]
    assert client["must_collect"] is True


async def test_raise_for_status_records_the_status(memory: MemoryReporter, serve: Serve) -> None:
    url = await serve(echo_app())
    async with aiohttp.ClientSession(raise_for_status=True) as session:
        with pytest.raises(aiohttp.ClientResponseError) as info:
            async with session.get(f"{url}/status/409"):
                pass
    assert info.value.status == 409
    memory.wait_for(2)
    (client,) = memory.find(kind="client")
    assert client["http"]["status_code"] == 409
    assert client["error"] is None


@fast_path_only
async def test_session_created_before_install(server: Server) -> None:
    own = aiohttp.TraceConfig()
    configs = [own]
    session = aiohttp.ClientSession(trace_configs=configs)
    original = session._trace_configs
    try:
        reporter = reporters.create("memory")
        tracer.install(app_name="s", reporter=reporter, flush_interval=0.02)
        async with session.get(f"{server.url}/before") as response:
            sent = (await response.json())["headers"]
        reporter.wait_for(2)
        (client,) = reporter.find(kind="client")
        assert sent["x-span-id"] == client["span_id"]
        # The caller's list was not modified.
        assert configs == [own]
        tracer.uninstall()
        assert session._trace_configs is original
        assert session.trace_configs == [own]
        async with session.get(f"{server.url}/after") as response:
            assert "x-span-id" not in (await response.json())["headers"]
    finally:
        await session.close()


async def test_no_span_while_suppressed(memory: MemoryReporter, server: Server) -> None:
    async with aiohttp.ClientSession() as session:
        with context.suppressed():
            async with session.get(f"{server.url}/quiet") as response:
                sent = (await response.json())["headers"]
    assert "request-id" not in sent and "x-span-id" not in sent
    tracer.flush()
    assert memory.find(kind="client") == []


async def test_ignore_hosts(server: Server) -> None:
    reporter = reporters.create("memory")
    tracer.install(app_name="s", reporter=reporter, ignore_hosts=["127.0.0.1"], flush_interval=0.02)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{server.url}/ignored") as response:
            assert "request-id" not in (await response.json())["headers"]
    tracer.flush()
    assert reporter.find(kind="client") == []


async def test_client_inside_span_is_child(memory: MemoryReporter, server: Server) -> None:
    async with aiohttp.ClientSession() as session:
        with tracer.span("job") as job:
            assert job is not None
            async with session.get(f"{server.url}/x") as response:
                sent = (await response.json())["headers"]
    assert sent["request-id"] == job.request_id
    memory.wait_for(3)
    (client,) = memory.find(kind="client")
    assert client["parent_id"] == job.span_id and client["trace_id"] == job.trace_id


async def test_caller_request_id_starts_the_trace(memory: MemoryReporter, server: Server) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{server.url}/own", headers={"request-id": "mine-7"}) as r:
            body = await r.json()
    assert body["headers"]["request-id"] == "mine-7"
    assert body["transaction_id"] == "mine-7"


def test_uninstall_restores_the_original_objects() -> None:
    # The fast path replaces _request; the public hooks wrap the constructor.
    name = "_request" if FAST else "__init__"
    original = aiohttp.ClientSession.__dict__[name]
    tracer.install(app_name="s", reporter=reporters.create("memory"))
    assert aiohttp.ClientSession.__dict__[name] is not original
    tracer.uninstall()
    assert aiohttp.ClientSession.__dict__[name] is original


async def test_events_in_causal_order_on_every_call(memory: MemoryReporter, serve: Serve) -> None:
    from tests.core.test_requests import assert_causal

    url = await serve(echo_app())
    async with aiohttp.ClientSession() as session:
        for i in range(100):
            async with session.post(f"{url}/echo", data=str(i)) as response:
                assert response.status == 200
                await response.read()
    assert assert_causal(memory.wait_for(200)) == 100


async def test_base_url_url_objects_params_and_caller_headers(
    memory: MemoryReporter, server: Server
) -> None:
    """The span records the URL aiohttp really requested, and the caller's headers still go."""
    from yarl import URL

    async with aiohttp.ClientSession(base_url=server.url, headers={"x-session": "s"}) as session:
        async with session.get("/relative", params={"page": "2"}, headers=[("x-own", "1")]) as r:
            sent = (await r.json())["headers"]
    async with aiohttp.ClientSession() as session:
        async with session.get(URL(f"{server.url}/as-url")) as r:
            assert r.status == 200
    memory.wait_for(4)
    clients = sorted(memory.find(kind="client"), key=lambda s: s["start_us"])
    assert [c["http"]["url"] for c in clients] == [
        f"{server.url}/relative?page=2",
        f"{server.url}/as-url",
    ]
    assert [c["http"]["path"] for c in clients] == ["/relative", "/as-url"]
    assert sent["x-own"] == "1" and sent["x-session"] == "s"
    assert sent["x-span-id"] == clients[0]["span_id"]


APP_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
APP_SPAN = "00f067aa0ba902b7"


async def test_an_applications_own_traceparent_outside_a_trace_is_continued(
    memory: MemoryReporter, server: Server
) -> None:
    own = {"traceparent": f"00-{APP_TRACE}-{APP_SPAN}-01", "tracestate": "app=1"}
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{server.url}/own-context", headers=own) as response:
            body = await response.json()
    names = [name for name, _ in body["raw"]]
    assert names.count("traceparent") == 1 and names.count("tracestate") == 1, body["raw"]
    memory.wait_for(2)
    (client,) = memory.find(kind="client")
    (srv,) = memory.find(kind="server")
    assert (client["trace_id"], client["parent_id"]) == (APP_TRACE, APP_SPAN)
    assert body["headers"]["traceparent"] == f"00-{APP_TRACE}-{client['span_id']}-01"
    assert body["headers"]["tracestate"] == "app=1"
    assert (srv["trace_id"], srv["parent_id"]) == (APP_TRACE, client["span_id"])


async def test_inside_a_trace_tracers_context_wins_over_the_applications(
    memory: MemoryReporter, server: Server
) -> None:
    own = {"traceparent": f"00-{APP_TRACE}-{APP_SPAN}-01"}
    async with aiohttp.ClientSession() as session:
        with tracer.span("job") as job:
            assert job is not None
            async with session.get(f"{server.url}/inside", headers=own) as response:
                body = await response.json()
    memory.wait_for(3)
    (client,) = memory.find(kind="client")
    assert (client["trace_id"], client["parent_id"]) == (job.trace_id, job.span_id)
    assert [name for name, _ in body["raw"]].count("traceparent") == 1
    assert body["headers"]["traceparent"] == f"00-{job.trace_id}-{client['span_id']}-01"
