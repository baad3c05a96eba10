"""aiohttp.web: server spans over real sockets, whatever the order of import, app and install."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from aiohttp import web, web_protocol, web_response

import reporters
import tracer
from reporters.memory import MemoryReporter
from tests.aiohttp.conftest import FAST, Serve, echo, echo_app, fast_path_only
from tests.conftest import assert_child_prints_ok
from tracer import context
from tracer.span import now_us


async def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, dict[str, str]]:
    # Untraced: the request that reaches the server carries only the headers the test chose.
    with context.suppressed():
        async with aiohttp.ClientSession() as session:
            async with session.get(url, headers=headers, allow_redirects=False) as response:
                body = await response.text()
                return response.status, body, {k.lower(): v for k, v in response.headers.items()}


async def test_server_span_record_and_route_name(memory: MemoryReporter, serve: Serve) -> None:
    url = await serve(echo_app())
    status, _, _ = await get(f"{url}/users/42?x=1")
    assert status == 200
    memory.wait_for(1)
    (span,) = memory.find(kind="server")
    assert span["name"] == "GET /users/{id}"
    assert span["http"] == {
        "method": "GET",
        "url": f"{url}/users/42?x=1",
        "path": "/users/42",
        "status_code": 200,
        "route": "/users/{id}",
    }
    assert [e["type"] for e in span["events"]] == ["sr", "ss"]
    assert span["parent_id"] is None and span["request_id"] == span["trace_id"]
    assert span["error"] is None


async def test_unmatched_path_falls_back_to_path(memory: MemoryReporter, serve: Serve) -> None:
    url = await serve(echo_app())
    status, _, _ = await get(f"{url}/nothing/here")
    assert status == 404
    memory.wait_for(1)
    (span,) = memory.find(kind="server")
    assert span["name"] == "GET /nothing/here"
    assert span["http"]["status_code"] == 404


async def test_sub_application_route_is_canonical(memory: MemoryReporter, serve: Serve) -> None:
    app = web.Application()
    sub = web.Application()
    sub.router.add_get("/items/{item}", echo)
    app.add_subapp("/shop/", sub)
    url = await serve(app)
    assert (await get(f"{url}/shop/items/pear"))[0] == 200
    memory.wait_for(1)
    (span,) = memory.find(kind="server")
    assert span["name"] == "GET /shop/items/{item}"


async def test_inbound_headers_followed_and_response_headers(
    memory: MemoryReporter, serve: Serve
) -> None:
    url = await serve(echo_app())
    inbound = {"request-id": "req-aio-1", "x-span-id": "00f067aa0ba902b7", "x-parent": "up"}
    status, body, headers = await get(f"{url}/echo", inbound)
    assert status == 200
    assert '"transaction_id": "req-aio-1"' in body
    assert headers["x-parent"] == "test-service"
    assert headers["x-span-id"] == "00f067aa0ba902b7"
    assert int(headers["x-client-send"]) > 0
    assert "x-must-collect" not in headers
    memory.wait_for(1)
    (span,) = memory.find(kind="server")
    assert span["request_id"] == "req-aio-1"
    assert span["parent_id"] == "00f067aa0ba902b7"
    assert span["tags"]["parent_service"] == "up"


TRACER_RESPONSE_HEADERS = ("x-parent", "x-client-send", "x-span-id", "x-must-collect")


@pytest.mark.parametrize("path", ["/echo", "/status/503"])
async def test_both_servers_answer_with_the_same_trace_headers(
    memory: MemoryReporter, serve: Serve, path: str
) -> None:
    """aiohttp and http.server get their response headers from one place: for the same request
    they answer with the same tracer headers (x-must-collect on the 503 included)."""
    import http.client

    from tests.conftest import Server
    from tracer.context import suppressed

    inbound = {"request-id": "req-both", "x-span-id": "00f067aa0ba902b7"}
    url = await serve(echo_app())
    _, _, aio = await get(f"{url}{path}", inbound)
    plain = Server()
    try:

        def fetch() -> dict[str, str]:
            # An outside caller, as get() is: its http.client call makes no client span.
            with suppressed():
                conn = http.client.HTTPConnection("127.0.0.1", plain.port, timeout=10)
                try:
                    conn.request("GET", path, headers=inbound)
                    response = conn.getresponse()
                    response.read()
                    return {k.lower(): v for k, v in response.getheaders()}
                finally:
                    conn.close()

        threaded = await asyncio.to_thread(fetch)
    finally:
        plain.close()

    def ours(headers: dict[str, str]) -> dict[str, str]:
        found = {k: v for k, v in headers.items() if k in TRACER_RESPONSE_HEADERS}
        assert int(found.pop("x-client-send")) > 0
        return found

    expected = {"x-parent": "test-service", "x-span-id": "00f067aa0ba902b7"}
    if path == "/status/503":
        expected["x-must-collect"] = "1"
    assert ours(aio) == ours(threaded) == expected


@pytest.mark.parametrize("code", [403, 404, 409, 503])
async def test_http_exceptions_record_their_status(
    memory: MemoryReporter, serve: Serve, code: int
) -> None:
    url = await serve(echo_app())
    status, _, headers = await get(f"{url}/status/{code}")
    assert status == code
    memory.wait_for(1)
    (span,) = memory.find(kind="server")
    assert span["http"]["status_code"] == code
    assert span["name"] == "GET /status/{code}"
    assert span["error"] is None
    if code >= 500:
        assert span["must_collect"] is True
        assert headers["x-must-collect"] == "1"
    else:
        assert "x-must-collect" not in headers


async def test_redirect_exception_status(memory: MemoryReporter, serve: Serve) -> None:
    url = await serve(echo_app())
    status, _, headers = await get(f"{url}/redirect/1")
    assert status == 302 and headers["location"] == "/users/final"
    memory.wait_for(1)
    (span,) = memory.find(kind="server")
    assert span["http"]["status_code"] == 302


def _comparable(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k != "date" and not k.startswith("x-")}


async def test_handler_exception_recorded_and_behaviour_unchanged(serve: Serve) -> None:
    url = await serve(echo_app())
    untraced = await get(f"{url}/raise")
    untraced_timeout = await get(f"{url}/timeout")
    reporter = reporters.create("memory")
    tracer.install(app_name="test-service", reporter=reporter, flush_interval=0.02)
    # The same application, set up after install(): the public hooks trace only those.
    url = await serve(echo_app())
    traced = await get(f"{url}/raise")
    traced_timeout = await get(f"{url}/timeout")
    assert untraced[0] == traced[0] == 500
    assert untraced[1] == traced[1]
    assert _comparable(untraced[2]) == _comparable(traced[2])
    assert untraced_timeout[:2] == traced_timeout[:2] and traced_timeout[0] == 504
    assert traced[2]["x-must-collect"] == "1"
    reporter.wait_for(2)
    spans = {s["http"]["path"]: s for s in reporter.find(kind="server")}
    failed = spans["/raise"]
    assert failed["http"]["status_code"] == 500
    assert failed["error"]["type"] == "ValueError"
    assert failed["error"]["message"] == "handler failed"
    assert "handler failed" in failed["error"]["stack"]
    assert failed["must_collect"] is True
    assert spans["/timeout"]["http"]["status_code"] == 504
    assert spans["/timeout"]["error"]["type"] == "TimeoutError"


@fast_path_only
async def test_app_set_up_before_install_is_traced(serve: Serve) -> None:
    # The app, its runner and its server exist before tracer does.
    url = await serve(echo_app())
    assert (await get(f"{url}/users/1"))[0] == 200
    reporter = reporters.create("memory")
    tracer.install(app_name="late", reporter=reporter, flush_interval=0.02)
    status, _, headers = await get(f"{url}/users/2")
    assert status == 200 and headers["x-parent"] == "late"
    reporter.wait_for(1)
    assert [s["http"]["path"] for s in reporter.find(kind="server")] == ["/users/2"]


async def test_streaming_response_span_ends_when_body_is_complete(
    memory: MemoryReporter, serve: Serve
) -> None:
    release = asyncio.Event()
    written: list[int] = []

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_type = "text/plain"
        await response.prepare(request)
        await response.write(b"first\n")
        await release.wait()
        await response.write(b"second\n")
        written.append(now_us())
        return response

    app = web.Application()
    app.router.add_get("/stream", stream)
    url = await serve(app)
    with context.suppressed():
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{url}/stream") as response:
                assert response.headers["x-parent"] == "test-service"
                assert await response.content.readline() == b"first\n"
                # Headers and the first chunk are out, the body is not complete: no span yet.
                assert tracer.flush()
                assert memory.find(kind="server") == []
                release.set()
                assert await response.content.read() == b"second\n"
    memory.wait_for(1)
    (span,) = memory.find(kind="server")
    assert span["http"]["status_code"] == 200
    assert span["events"][1]["type"] == "ss"
    assert span["events"][1]["time_us"] >= written[0]


async def test_websocket_upgrade_keeps_working(memory: MemoryReporter, serve: Serve) -> None:
    seen: list[str | None] = []

    async def ws_handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            seen.append(tracer.get_transaction_id())
            await ws.send_str(f"echo {message.data}")
        return ws

    app = web.Application()
    app.router.add_get("/ws", ws_handler)
    url = await serve(app)
    with context.suppressed():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{url}/ws", headers={"request-id": "ws-1"}) as ws:
                await ws.send_str("a")
                assert (await ws.receive()).data == "echo a"
                await ws.send_str("b")
                assert (await ws.receive()).data == "echo b"
    assert seen == ["ws-1", "ws-1"]
    memory.wait_for(1)
    (span,) = memory.find(kind="server")
    assert span["name"] == "GET /ws"
    assert span["http"]["status_code"] == 101
    assert span["request_id"] == "ws-1"
    assert span["error"] is None


async def test_keep_alive_isolation(memory: MemoryReporter, serve: Serve) -> None:
    url = await serve(echo_app())
    expected: list[str | None] = []
    seen: list[str] = []
    with context.suppressed():
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(connector=connector) as session:
            for i in range(30):
                headers = {"request-id": f"keepalive-{i}"} if i % 2 == 0 else {}
                expected.append(headers.get("request-id"))
                async with session.get(f"{url}/users/{i}", headers=headers) as response:
                    seen.append((await response.json())["transaction_id"])
    memory.wait_for(30)
    fresh: set[str] = set()
    for want, got in zip(expected, seen, strict=True):
        if want is not None:
            assert got == want
        else:
            assert got not in expected and got not in fresh
            fresh.add(got)
    assert len(memory.find(kind="server")) == 30


@fast_path_only
async def test_low_level_server_is_traced(memory: MemoryReporter) -> None:
    async def handler(request: web.BaseRequest) -> web.Response:
        return web.Response(text=str(tracer.get_transaction_id()))

    server = web.Server(handler)
    runner = web.ServerRunner(server)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        host, port = runner.addresses[0][:2]
        status, body, _ = await get(f"http://{host}:{port}/low", {"request-id": "low-1"})
    finally:
        await runner.cleanup()
    assert (status, body) == (200, "low-1")
    memory.wait_for(1)
    (span,) = memory.find(kind="server")
    assert span["name"] == "GET /low" and span["http"]["status_code"] == 200


@fast_path_only
def test_uninstall_restores_the_original_objects() -> None:
    application = web.Application
    handle_request = web_protocol.RequestHandler.__dict__["_handle_request"]
    prepare_headers = web_response.StreamResponse.__dict__["_prepare_headers"]
    handle_error = web_protocol.RequestHandler.__dict__["handle_error"]
    tracer.install(app_name="s", reporter=reporters.create("memory"))
    assert web_protocol.RequestHandler.__dict__["_handle_request"] is not handle_request
    assert web_response.StreamResponse.__dict__["_prepare_headers"] is not prepare_headers
    assert web.Application is application
    tracer.uninstall()
    assert web_protocol.RequestHandler.__dict__["_handle_request"] is handle_request
    assert web_response.StreamResponse.__dict__["_prepare_headers"] is prepare_headers
    assert web_protocol.RequestHandler.__dict__["handle_error"] is handle_error
    assert web.Application is application


@pytest.mark.skipif(FAST, reason="the public hooks' objects")
def test_uninstall_restores_the_public_hooks_objects() -> None:
    pre_freeze = web.Application.__dict__["pre_freeze"]
    tracer.install(app_name="s", reporter=reporters.create("memory"))
    assert web.Application.__dict__["pre_freeze"] is not pre_freeze
    tracer.uninstall()
    assert web.Application.__dict__["pre_freeze"] is pre_freeze
    assert not web.Application().middlewares


def test_aiohttp_imported_after_install_is_traced() -> None:
    code = (
        "import asyncio, sys, tracer, reporters\n"
        "assert 'aiohttp' not in sys.modules\n"
        "mem = reporters.create('memory')\n"
        "tracer.install(app_name='late', reporter=mem, flush_interval=0.02)\n"
        "from aiohttp import web, ClientSession\n"
        "async def hello(request):\n"
        "    return web.Response(text=tracer.get_transaction_id() or '')\n"
        "async def main():\n"
        "    app = web.Application()\n"
        "    app.router.add_get('/hello/{name}', hello)\n"
        "    runner = web.AppRunner(app)\n"
        "    await runner.setup()\n"
        "    site = web.TCPSite(runner, '127.0.0.1', 0)\n"
        "    await site.start()\n"
        "    host, port = runner.addresses[0][:2]\n"
        "    async with ClientSession() as s:\n"
        "        async with s.get(f'http://{host}:{port}/hello/x') as r:\n"
        "            text = await r.text()\n"
        "    await runner.cleanup()\n"
        "    return text\n"
        "text = asyncio.run(main())\n"
        "spans = mem.wait_for(2)\n"
        "client = [s for s in spans if s['kind'] == 'client'][0]\n"
        "server = [s for s in spans if s['kind'] == 'server'][0]\n"
        "assert text == client['request_id'], (text, client)\n"
        "assert server['parent_id'] == client['span_id']\n"
        "assert server['name'] == 'GET /hello/{name}'\n"
        "tracer.uninstall()\n"
        "from tracer.patching import is_ours\n"
        "from aiohttp import web_protocol\n"
        "assert not is_ours(web_protocol.RequestHandler.__dict__['_handle_request'])\n"
        "print('ok')\n"
    )
    assert_child_prints_ok(code)


async def test_spans_leave_no_reference_cycles(memory: MemoryReporter, serve: Serve) -> None:
    """A finished request leaves nothing for the cyclic garbage collector: a cycle per request
    (a span and its local trace pointing at each other) made collections run every few hundred
    requests under load."""
    import gc

    url = await serve(echo_app())
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        async with aiohttp.ClientSession() as session:  # traced: client spans too
            for i in range(20):
                async with session.get(f"{url}/users/{i}") as response:
                    assert response.status == 200
            async with session.get(f"{url}/raise") as response:
                assert response.status == 500
        memory.wait_for(42)
        gc.collect()
        leaked = [type(o).__name__ for o in gc.garbage]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert "Span" not in leaked and "LocalTrace" not in leaked, leaked


async def test_methods_another_tool_wrapped_first_are_still_traced() -> None:
    """Another instrumentation (a wrapt proxy, as several use) got to aiohttp's methods before
    install(): both run, and uninstall() puts the other tool's proxies back."""
    import wrapt
    from aiohttp import client

    calls: list[str] = []

    def foreign(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        # The other tool's wrapper is called as a method: with its instance, bound.
        calls.append(f"{type(instance).__name__}.{wrapped.__name__}")
        return wrapped(*args, **kwargs)

    targets = [
        (web_protocol.RequestHandler, "_handle_request"),
        (web_response.StreamResponse, "_prepare_headers"),
        (client.ClientSession, "_request"),
    ]
    originals = {t: t[0].__dict__[t[1]] for t in targets}
    for owner, name in targets:
        wrapt.wrap_function_wrapper(owner, name, foreign)
    proxies = {t: t[0].__dict__[t[1]] for t in targets}
    memory = reporters.create("memory")
    runner = None
    try:
        tracer.install(app_name="coexist", reporter=memory, flush_interval=0.02)
        app = echo_app()
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://{host}:{port}/users/7") as response:
                assert response.status == 200
                body = await response.json()
        memory.wait_for(2)
        (server,) = memory.find(kind="server")
        (client_span,) = memory.find(kind="client")
        assert server["parent_id"] == client_span["span_id"]
        assert body["headers"]["x-span-id"] == client_span["span_id"]
        assert sorted(set(calls)) == [
            "ClientSession._request",
            "RequestHandler._handle_request",
            "Response._prepare_headers",
        ]
        tracer.uninstall()
        for target in targets:
            assert target[0].__dict__[target[1]] is proxies[target]
    finally:
        if runner is not None:
            await runner.cleanup()
        for (owner, name), original in originals.items():
            setattr(owner, name, original)


async def test_https_request_gets_an_https_url(memory: MemoryReporter, serve_tls: Any) -> None:
    import ssl

    url, ca = await serve_tls(echo_app())
    client_context = ssl.create_default_context(cafile=str(ca))
    with context.suppressed():
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{url}/users/7", ssl=client_context) as response:
                assert response.status == 200
    memory.wait_for(1)
    (span,) = memory.find(kind="server")
    assert url.startswith("https://")
    assert span["http"]["url"] == f"{url}/users/7"
    assert span["name"] == "GET /users/{id}"
