"""One client span per logical call, whatever library runs on which.

requests runs on urllib3, which runs on http.client; each of them is instrumented, and a call
through the top one is still one span with one set of trace headers.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator

import httpx
import pytest
import requests
import urllib3

import tracer
from reporters.memory import MemoryReporter
from tests.clients.conftest import clients, no_open_call
from tests.conftest import QuietHandler, Server


def sent_once(raw: list[list[str]]) -> dict[str, str]:
    """The headers the server saw, each of tracer's exactly once."""
    names = [name for name, _ in raw]
    for name in ("traceparent", "x-span-id", "request-id"):
        assert names.count(name) == 1, raw
    return dict((name, value) for name, value in raw)


def test_requests_on_urllib3_on_http_client_is_one_span(
    memory: MemoryReporter, echo: Server
) -> None:
    with tracer.span("job") as job:
        raw = requests.get(f"{echo.url}/requests", timeout=10).json()["raw"]
        streamed = requests.get(f"{echo.url}/streamed", stream=True, timeout=10)
        assert streamed.content
    spans = memory.wait_for(5)
    calls = clients(spans)
    assert len(calls) == 2
    assert sent_once(raw)["x-span-id"] == calls[0]["span_id"]
    assert {c["parent_id"] for c in calls} == {job.span_id}
    assert no_open_call()


def test_urllib3_on_http_client_is_one_span(memory: MemoryReporter, echo: Server) -> None:
    with urllib3.PoolManager() as pool:
        raw = json.loads(pool.request("GET", f"{echo.url}/urllib3").data)["raw"]
    (call,) = clients(memory.wait_for(2))
    assert sent_once(raw)["x-span-id"] == call["span_id"]


def test_client_call_around_instrumented_libraries_is_its_one_span(
    memory: MemoryReporter, echo: Server
) -> None:
    seen = []
    for fetch in (
        lambda url, headers: requests.get(url, headers=headers, timeout=10).json()["raw"],
        lambda url, headers: httpx.get(url, headers=headers).json()["raw"],
        lambda url, headers: json.loads(
            urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10).read()
        )["raw"],
    ):
        with tracer.client_call("GET", f"{echo.url}/wrapped") as call:
            seen.append(sent_once(fetch(f"{echo.url}/wrapped", call.headers)))
    calls = clients(memory.wait_for(6))
    assert len(calls) == 3
    assert [headers["x-span-id"] for headers in seen] == [c["span_id"] for c in calls]
    assert no_open_call()


class Urllib3Transport(httpx.BaseTransport):
    """An httpx transport that sends with urllib3 (as some SDKs do)."""

    def __init__(self) -> None:
        self.pool = urllib3.PoolManager()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        answer = self.pool.request(
            request.method, str(request.url), headers=dict(request.headers), body=request.read()
        )
        return httpx.Response(answer.status, headers=dict(answer.headers), content=answer.data)


def test_httpx_on_a_urllib3_transport_is_one_span(memory: MemoryReporter, echo: Server) -> None:
    with httpx.Client(transport=Urllib3Transport()) as client:
        raw = client.get(f"{echo.url}/layered").json()["raw"]
    (call,) = clients(memory.wait_for(2))
    assert sent_once(raw)["x-span-id"] == call["span_id"]


class Relay(QuietHandler):
    """Calls the echo server with urllib while it serves its own request."""

    echo_url = ""

    def do_GET(self) -> None:
        with urllib.request.urlopen(f"{self.echo_url}/behind", timeout=10) as answer:
            self.reply(200, body=answer.read())


@pytest.fixture(scope="module")
def relay(echo: Server) -> Iterator[Server]:
    Relay.echo_url = echo.url
    srv = Server(Relay)
    yield srv
    srv.close()


def test_a_call_made_inside_a_server_span_of_the_same_process_is_its_own(
    memory: MemoryReporter, relay: Server
) -> None:
    requests.get(f"{relay.url}/front", timeout=10)
    spans = memory.wait_for(4)
    first, second = clients(spans)
    servers = {s["http"]["path"]: s for s in spans if s["kind"] == "server"}
    assert servers["/front"]["parent_id"] == first["span_id"]
    assert second["parent_id"] == servers["/front"]["span_id"]
    assert servers["/behind"]["parent_id"] == second["span_id"]
