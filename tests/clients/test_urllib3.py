"""urllib3: a client span per ``HTTPConnectionPool.urlopen``, PoolManager's redirect hops each."""

from __future__ import annotations

import json

import pytest
import urllib3

import reporters
import tracer
from reporters.memory import MemoryReporter
from tests.clients.conftest import TRACE_HEADERS, clients, no_open_call
from tests.conftest import Server, refused_port


@pytest.fixture(scope="module")
def pool() -> urllib3.PoolManager:
    return urllib3.PoolManager()


def test_a_request_is_one_client_span_and_the_server_its_child(
    memory: MemoryReporter, echo: Server, pool: urllib3.PoolManager
) -> None:
    own = {"x-own": "kept"}
    with tracer.span("job") as job:
        response = pool.request("GET", f"{echo.url}/wire?q=1", headers=own)
    sent = json.loads(response.data)["headers"]
    spans = memory.wait_for(3)
    (client,) = clients(spans)
    (srv,) = [s for s in spans if s["kind"] == "server"]
    assert client["parent_id"] == job.span_id and srv["parent_id"] == client["span_id"]
    assert set(TRACE_HEADERS) <= set(sent) and sent["x-own"] == "kept"
    assert sent["x-span-id"] == client["span_id"]
    # The caller's mapping is left as it was.
    assert own == {"x-own": "kept"}
    assert client["name"] == f"GET 127.0.0.1:{echo.port}/wire"
    assert client["http"]["url"] == f"{echo.url}/wire?q=1"
    assert client["http"]["status_code"] == 200
    assert no_open_call()


def test_each_redirect_hop_is_a_span(
    memory: MemoryReporter, echo: Server, pool: urllib3.PoolManager
) -> None:
    with tracer.span("job") as job:
        response = pool.request("GET", f"{echo.url}/redirect")
    assert response.status == 200
    spans = memory.wait_for(5)
    hops = clients(spans)
    assert [(c["http"]["path"], c["http"]["status_code"]) for c in hops] == [
        ("/redirect", 302),
        ("/landed", 200),
    ]
    assert {c["parent_id"] for c in hops} == {job.span_id}
    servers = {s["parent_id"] for s in spans if s["kind"] == "server"}
    assert servers == {c["span_id"] for c in hops}


def test_a_pool_used_directly_and_positional_headers(memory: MemoryReporter, echo: Server) -> None:
    with urllib3.HTTPConnectionPool("127.0.0.1", echo.port) as direct:
        response = direct.urlopen("POST", "/direct", b"body", {"x-own": "1"})
    sent = json.loads(response.data)["headers"]
    (client,) = clients(memory.wait_for(2))
    assert sent["x-span-id"] == client["span_id"] and sent["x-own"] == "1"
    assert client["http"]["method"] == "POST"


def test_a_body_not_preloaded_ends_the_span_once_read(
    memory: MemoryReporter, echo: Server, pool: urllib3.PoolManager
) -> None:
    response = pool.request("GET", f"{echo.url}/streamed", preload_content=False)
    assert response.status == 200
    tracer.flush()
    # The head is in, the body is not read: the call is not over.
    assert clients(memory.spans) == []
    assert json.loads(response.read())["path"] == "/streamed"
    tracer.flush()
    assert len(clients(memory.spans)) == 1


def test_a_body_not_preloaded_ends_the_span_when_released(
    memory: MemoryReporter, echo: Server, pool: urllib3.PoolManager
) -> None:
    response = pool.request("GET", f"{echo.url}/released", preload_content=False)
    response.drain_conn()
    tracer.flush()
    assert len(clients(memory.spans)) == 1


def test_a_connection_refused_is_a_network_error_raised_unchanged(
    memory: MemoryReporter, pool: urllib3.PoolManager
) -> None:
    with refused_port() as port, pytest.raises(urllib3.exceptions.MaxRetryError):
        pool.request("GET", f"http://127.0.0.1:{port}/down", retries=1)
    # Its retries are inside the one call.
    (client,) = clients(memory.wait_for(1))
    assert client["error"]["type"] == "network-error"
    assert no_open_call()


def test_uninstall_restores_the_originals() -> None:
    from urllib3.connectionpool import HTTPConnectionPool
    from urllib3.response import HTTPResponse

    targets = [
        (HTTPConnectionPool, "urlopen"),
        (HTTPResponse, "release_conn"),
        (HTTPResponse, "close"),
    ]
    originals = [vars(owner)[name] for owner, name in targets]
    tracer.install(app_name="s", reporter=reporters.create("memory"))
    assert all(
        vars(owner)[name] is not o for (owner, name), o in zip(targets, originals, strict=True)
    )
    tracer.uninstall()
    assert all(vars(owner)[name] is o for (owner, name), o in zip(targets, originals, strict=True))
