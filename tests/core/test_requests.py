"""requests: client spans and the headers that cross the wire."""

from __future__ import annotations

import socket
from typing import Any

import pytest
import requests

import reporters
import tracer
from reporters.memory import MemoryReporter
from tests.conftest import Server, assert_child_prints_ok, refused_port


def test_headers_on_the_wire_and_client_span(memory: MemoryReporter, server: Server) -> None:
    response = requests.get(f"{server.url}/wire", timeout=10)
    assert response.status_code == 200
    sent = response.json()["headers"]
    memory.wait_for(2)
    (client,) = memory.find(kind="client")
    (srv,) = memory.find(kind="server")
    assert sent["request-id"] == client["request_id"]
    assert sent["x-span-id"] == client["span_id"]
    assert sent["x-parent"] == "test-service"
    cs = client["events"][0]
    assert cs["type"] == "cs" and int(sent["x-client-send"]) == cs["time_us"]
    assert srv["parent_id"] == client["span_id"]
    assert srv["trace_id"] == client["trace_id"]
    assert client["http"]["status_code"] == 200
    assert client["name"] == f"GET 127.0.0.1:{server.port}/wire"
    times = [client["events"][0]["time_us"], srv["events"][0]["time_us"]]
    times += [srv["events"][1]["time_us"], client["events"][1]["time_us"]]
    assert times == sorted(times), "cs <= sr <= ss <= cr"


def test_session_and_status_codes(memory: MemoryReporter, server: Server) -> None:
    with requests.Session() as session:
        assert session.get(f"{server.url}/status/404", timeout=10).status_code == 404
        assert session.post(f"{server.url}/p", data=b"x", timeout=10).status_code == 200
    memory.wait_for(4)
    clients = memory.find(kind="client")
    assert sorted((c["http"]["method"], c["http"]["status_code"]) for c in clients) == [
        ("GET", 404),
        ("POST", 200),
    ]


def test_connection_error_recorded_and_reraised(memory: MemoryReporter) -> None:
    with refused_port() as port, pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/down", timeout=5)
    tracer.flush()
    (client,) = memory.find(kind="client")
    assert client["error"]["type"] == "network-error"
    assert client["must_collect"] is True
    assert [e["type"] for e in client["events"]] == ["cs", "cr"]


def test_timeout_recorded_and_reraised(memory: MemoryReporter) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts, never answers
    try:
        with pytest.raises(requests.Timeout):
            requests.get(f"http://127.0.0.1:{listener.getsockname()[1]}/", timeout=0.3)
    finally:
        listener.close()
    tracer.flush()
    (client,) = memory.find(kind="client")
    assert client["error"]["type"] == "network-error"
    assert "Timeout" in client["error"]["message"]


def test_inside_server_span_client_is_child(memory: MemoryReporter, server: Server) -> None:
    with tracer.span("job") as job:
        assert job is not None
        response = requests.get(f"{server.url}/x", timeout=10)
    assert response.json()["headers"]["request-id"] == job.request_id
    memory.wait_for(3)
    (client,) = memory.find(kind="client")
    assert client["parent_id"] == job.span_id
    assert client["trace_id"] == job.trace_id


def test_ignore_hosts(server: Server) -> None:
    reporter = reporters.create("memory")
    tracer.install(app_name="s", reporter=reporter, ignore_hosts=["127.0.0.1"], flush_interval=0.02)
    response = requests.get(f"{server.url}/ignored", timeout=10)
    assert "request-id" not in response.json()["headers"]
    tracer.flush()
    assert reporter.find(kind="client") == []


@pytest.mark.parametrize("name", ["request-id", "Request-Id"])
def test_caller_request_id_starts_the_trace(
    memory: MemoryReporter, server: Server, name: str
) -> None:
    response = requests.get(f"{server.url}/own", headers={name: "mine-1"}, timeout=10)
    assert response.json()["headers"]["request-id"] == "mine-1"
    assert response.json()["transaction_id"] == "mine-1"


def test_imported_after_install_is_patched() -> None:
    code = (
        "import sys, tracer, reporters\n"
        "assert 'requests' not in sys.modules\n"
        "tracer.install(app_name='late', reporter=reporters.create('memory'))\n"
        "import requests\n"
        "from tracer.patching import is_ours\n"
        "assert is_ours(requests.Session.__dict__['send'])\n"
        "tracer.uninstall()\n"
        "assert not is_ours(requests.Session.__dict__['send'])\n"
        "print('ok')\n"
    )
    assert_child_prints_ok(code)


def assert_causal(spans: list[dict[str, Any]]) -> int:
    """cs <= sr <= ss <= cr for every client span whose server span is here; returns the pairs."""
    servers = {s["parent_id"]: s for s in spans if s["kind"] == "server"}
    pairs = 0
    for client in (s for s in spans if s["kind"] == "client"):
        server = servers[client["span_id"]]
        ev = {e["type"]: e["time_us"] for e in client["events"] + server["events"]}
        assert ev["cs"] <= ev["sr"] <= ev["ss"] <= ev["cr"], ev
        pairs += 1
    return pairs


def test_events_in_causal_order_on_every_call(memory: MemoryReporter, server: Server) -> None:
    with requests.Session() as session:
        for i in range(100):
            assert session.get(f"{server.url}/c/{i}", timeout=10).status_code == 200
    assert assert_causal(memory.wait_for(200)) == 100
