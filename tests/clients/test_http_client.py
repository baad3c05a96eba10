"""urllib.request and http.client: a client span per request of an HTTPConnection."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request

import pytest

import reporters
import tracer
from reporters.memory import MemoryReporter
from tests.clients.conftest import TRACE_HEADERS, clients
from tests.conftest import Server, refused_port


def test_urlopen_is_one_client_span_and_the_server_its_child(
    memory: MemoryReporter, echo: Server
) -> None:
    request = urllib.request.Request(f"{echo.url}/wire?q=1", headers={"X-Own": "kept"})
    with tracer.span("job") as job, urllib.request.urlopen(request, timeout=10) as answer:
        sent = json.loads(answer.read())["headers"]
    spans = memory.wait_for(3)
    (client,) = clients(spans)
    (srv,) = [s for s in spans if s["kind"] == "server"]
    assert client["parent_id"] == job.span_id and srv["parent_id"] == client["span_id"]
    assert set(TRACE_HEADERS) <= set(sent) and sent["x-own"] == "kept"
    assert sent["x-span-id"] == client["span_id"]
    assert client["name"] == f"GET 127.0.0.1:{echo.port}/wire"
    assert client["http"]["url"] == f"{echo.url}/wire?q=1"
    assert client["http"]["status_code"] == 200


def test_an_error_status_is_recorded_and_raised_unchanged(
    memory: MemoryReporter, echo: Server
) -> None:
    with pytest.raises(urllib.error.HTTPError) as failed:
        urllib.request.urlopen(f"{echo.url}/status/404", timeout=10)
    assert failed.value.code == 404
    (client,) = clients(memory.wait_for(2))
    assert client["http"]["status_code"] == 404 and client["error"] is None


def test_a_connection_refused_is_a_network_error(memory: MemoryReporter) -> None:
    with refused_port() as port, pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/down", timeout=10)
    (client,) = clients(memory.wait_for(1))
    assert client["error"]["type"] == "network-error"


def test_http_client_keep_alive_one_span_per_request(memory: MemoryReporter, echo: Server) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", echo.port, timeout=10)
    seen = []
    try:
        for i in range(3):
            conn.request("GET", f"/k/{i}")
            seen.append(json.loads(conn.getresponse().read())["headers"]["x-span-id"])
    finally:
        conn.close()
    spans = clients(memory.wait_for(6))
    assert [c["span_id"] for c in spans] == seen
    assert [c["http"]["path"] for c in spans] == ["/k/0", "/k/1", "/k/2"]


def test_uninstall_restores_the_originals() -> None:
    originals = [vars(http.client.HTTPConnection)[n] for n in ("request", "getresponse")]
    tracer.install(app_name="s", reporter=reporters.create("memory"))
    assert vars(http.client.HTTPConnection)["request"] is not originals[0]
    tracer.uninstall()
    assert [vars(http.client.HTTPConnection)[n] for n in ("request", "getresponse")] == originals
    assert all(
        vars(http.client.HTTPConnection)[n] is o
        for n, o in zip(("request", "getresponse"), originals, strict=True)
    )
