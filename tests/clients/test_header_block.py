"""The propagation headers written as one piece of the header block (http.client, urllib3, httpx):
each goes out once, a caller's header of the same name gives way, and a connection that never
writes the piece switches the block off for the calls after it."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import urllib3
from urllib3._collections import HTTPHeaderDict

import tracer
from reporters.memory import MemoryReporter
from tests.clients.conftest import TRACE_HEADERS, clients
from tests.conftest import Server
from tracer.instrumentation import http_client
from tracer.instrumentation import httpx as httpx_instrumentation
from tracer.instrumentation import urllib3 as urllib3_instrumentation


@pytest.fixture(autouse=True)
def _direct_again() -> Iterator[None]:
    yield
    http_client.direct = urllib3_instrumentation.direct = httpx_instrumentation.direct = True


def _names(raw: list[list[str]]) -> list[str]:
    return [name for name, _ in raw]


def _traceparent_of(span: dict[str, Any]) -> str:
    return f"00-{span['trace_id']}-{span['span_id']}-01"


def test_http_client_a_callers_header_of_the_same_name_gives_way(
    memory: MemoryReporter, echo: Server
) -> None:
    own = {"Traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01", "X-Own": "kept"}
    conn = http.client.HTTPConnection("127.0.0.1", echo.port, timeout=10)
    try:
        with tracer.span("job"):
            conn.request("GET", "/same", headers=own)
            raw = json.loads(conn.getresponse().read())["raw"]
    finally:
        conn.close()
    (client,) = clients(memory.wait_for(3))
    names = _names(raw)
    assert all(names.count(name) == 1 for name in TRACE_HEADERS)
    assert dict(raw)["traceparent"] == _traceparent_of(client)
    assert dict(raw)["x-own"] == "kept" and "Traceparent" in own


class _OwnPutrequest(http.client.HTTPConnection):
    """A connection that writes its request line its own way, never through http.client's."""

    def putrequest(self, method: str, url: str, *args: Any, **kw: Any) -> None:
        self._method = method
        self._HTTPConnection__state = "Request-started"  # type: ignore[attr-defined]
        self._output(f"{method} {url} HTTP/1.1".encode("ascii"))
        self.putheader("Host", f"127.0.0.1:{self.port}")
        self.putheader("Accept-Encoding", "identity")


def test_http_client_a_connection_of_its_own_switches_the_block_off(
    memory: MemoryReporter, echo: Server, caplog: pytest.LogCaptureFixture
) -> None:
    seen = []
    for _ in range(2):
        conn = _OwnPutrequest("127.0.0.1", echo.port, timeout=10)
        try:
            conn.request("GET", "/own")
            seen.append(json.loads(conn.getresponse().read())["headers"])
        finally:
            conn.close()
    assert not http_client.direct
    assert "putrequest" in caplog.text
    # The first call's headers were lost; the second's went with the caller's.
    assert set(TRACE_HEADERS) <= set(seen[1])
    assert len(clients(memory.wait_for(4))) == 2


def test_urllib3_a_callers_header_of_the_same_name_gives_way_in_a_copy(
    memory: MemoryReporter, echo: Server
) -> None:
    own = HTTPHeaderDict({"TRACEPARENT": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"})
    own.add("X-Twice", "a")
    own.add("X-Twice", "b")
    with urllib3.PoolManager() as pool, tracer.span("job"):
        raw = json.loads(pool.request("GET", f"{echo.url}/same", headers=own).data)["raw"]
    (client,) = clients(memory.wait_for(3))
    names = _names(raw)
    assert all(names.count(name) == 1 for name in TRACE_HEADERS)
    assert dict(raw)["traceparent"] == _traceparent_of(client)
    assert [v for k, v in raw if k == "x-twice"] in (["a, b"], ["a", "b"])
    assert list(own.items()) == [
        ("TRACEPARENT", "00-" + "1" * 32 + "-" + "2" * 16 + "-01"),
        ("X-Twice", "a"),
        ("X-Twice", "b"),
    ]


def test_urllib3_a_call_made_inside_a_traced_one_does_not_send_its_headers(
    memory: MemoryReporter, echo: Server
) -> None:
    inner: list[list[list[str]]] = []

    def body() -> Iterator[bytes]:
        # Runs while the outer call sends its request: a call of its own, untraced (one call at
        # a time), which must not carry the outer call's headers.
        with urllib3.PoolManager() as other:
            inner.append(json.loads(other.request("GET", f"{echo.url}/inner").data)["raw"])
        yield b"x"

    with urllib3.PoolManager() as pool, tracer.span("job"):
        pool.request("POST", f"{echo.url}/outer", body=body(), chunked=True)
    assert inner and not set(TRACE_HEADERS) & set(_names(inner[0]))


def test_httpx_request_headers_show_what_went_out(memory: MemoryReporter, echo: Server) -> None:
    with httpx.Client() as client, tracer.span("job"):
        response = client.get(f"{echo.url}/shown", headers={"B3": "stale"})
    raw = response.json()["raw"]
    (span,) = clients(memory.wait_for(3))
    names = _names(raw)
    assert all(names.count(name) == 1 for name in (*TRACE_HEADERS, "b3"))
    assert response.request.headers["x-span-id"] == span["span_id"] == dict(raw)["x-span-id"]
    assert response.request.headers.get_list("b3") == [dict(raw)["b3"]]
    assert httpx_instrumentation.direct


def test_httpx_a_transport_of_its_own_gets_the_headers_in_the_request(
    memory: MemoryReporter,
) -> None:
    seen: list[httpx.Headers] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers)
        return httpx.Response(200, content=b"ok")

    with httpx.Client(transport=httpx.MockTransport(answer)) as client:
        assert client.get("http://example.invalid/mock").content == b"ok"
    assert set(TRACE_HEADERS) <= set(seen[0])
    assert httpx_instrumentation.direct
    assert len(clients(memory.wait_for(1))) == 1


def _get_http_client(url: str, headers: dict[str, str]) -> None:
    where = urllib3.util.parse_url(url)
    conn = http.client.HTTPConnection(str(where.host), where.port, timeout=10)
    try:
        conn.request("GET", str(where.path), headers=headers)
        conn.getresponse().read()
    finally:
        conn.close()


def _get_urllib3(url: str, headers: dict[str, str]) -> None:
    with urllib3.PoolManager() as pool:
        pool.request("GET", url, headers=headers)


def _get_httpx(url: str, headers: dict[str, str]) -> None:
    with httpx.Client() as client:
        client.get(url, headers=headers)


@pytest.mark.parametrize("get", [_get_http_client, _get_urllib3, _get_httpx])
@pytest.mark.parametrize("name", ["Traceparent", "request-id"])
def test_a_callers_own_trace_header_outside_any_trace_is_continued(
    memory: MemoryReporter, echo: Server, get: Any, name: str
) -> None:
    trace, parent = "3" * 32, "4" * 16
    value = f"00-{trace}-{parent}-01" if name == "Traceparent" else "caller-request"
    get(f"{echo.url}/own-trace", {name: value, "X-Other": "1"})
    (client,) = clients(memory.wait_for(2))
    if name == "Traceparent":
        assert client["trace_id"] == trace and client["parent_id"] == parent
    else:
        assert client["request_id"] == "caller-request"
