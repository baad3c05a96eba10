"""Django's ASGI handler under uvicorn, with tracer installed in the project's asgi.py after
Django was imported and the application also wrapped by ``tracer.asgi()``: still one server span
per request."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

import tracer
from reporters.memory import MemoryReporter
from tests.django.conftest import Served
from tests.support.spans import Sink, free_port, untraced_get

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture(scope="module")
def uvicorn(sink: Sink) -> Iterator[Served]:
    port = free_port()
    served = Served(
        sink,
        "django-uvicorn",
        [
            "-m",
            "uvicorn",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "mysite.asgi:application",
        ],
        port,
        MYSITE_INSTALL="1",
        MYSITE_WRAP="1",
    )
    yield served
    served.stop()


def traceparent(n: int) -> dict[str, str]:
    return {"traceparent": f"00-{TRACE[:-4]}{n:04x}-00f067aa0ba902b7-01"}


def test_one_server_span_named_by_route_child_of_the_caller(
    memory: MemoryReporter, uvicorn: Served, sink: Sink
) -> None:
    with tracer.span("caller"):
        answer = requests.get(f"{uvicorn.url}/api/v2/items/pen/", timeout=30)
    assert answer.status_code == 200
    tracer.flush()
    (client,) = memory.find(kind="client")
    (server,) = sink.server_spans(client["trace_id"])
    # Let a second span (there must be none) arrive: a later request's span comes after it.
    assert untraced_get(f"{uvicorn.url}/hello/", headers=traceparent(9)).status_code == 200
    sink.server_spans(TRACE[:-4] + "0009")
    assert [s for s in sink.spans() if s["trace_id"] == client["trace_id"]] == [server]
    assert server["parent_id"] == client["span_id"]
    assert server["name"] == "GET /api/v2/items/<slug:name>/"
    assert server["http"]["status_code"] == 200


def test_sync_to_async_work_is_a_child_of_the_request_span(uvicorn: Served, sink: Sink) -> None:
    answer = untraced_get(f"{uvicorn.url}/sync-to-async/", headers=traceparent(1))
    assert answer.status_code == 200
    spans = sink.trace(TRACE[:-4] + "0001", 2)
    (server,) = [s for s in spans if s["kind"] == "server"]
    (work,) = [s for s in spans if s["name"] == "work sync"]
    assert server["name"] == "GET /sync-to-async/"
    assert work["parent_id"] == server["span_id"]
    assert answer.json()["view"]["span_id"] == server["span_id"]


def test_async_to_sync_work_in_a_sync_view_is_a_child(uvicorn: Served, sink: Sink) -> None:
    answer = untraced_get(f"{uvicorn.url}/async-to-sync/", headers=traceparent(2))
    assert answer.status_code == 200
    spans = sink.trace(TRACE[:-4] + "0002", 2)
    (server,) = [s for s in spans if s["kind"] == "server"]
    (work,) = [s for s in spans if s["name"] == "work async"]
    assert work["parent_id"] == server["span_id"]


def test_a_view_exception_is_on_the_span_and_the_client_sees_handler500(
    uvicorn: Served, sink: Sink
) -> None:
    answer = untraced_get(f"{uvicorn.url}/boom/", headers=traceparent(3))
    assert (answer.status_code, answer.text) == (500, "custom 500 page")
    (span,) = sink.server_spans(TRACE[:-4] + "0003")
    assert span["error"]["type"] == "ValueError"
    assert span["http"]["status_code"] == 500


def test_an_unmatched_request_is_named_by_its_method(uvicorn: Served, sink: Sink) -> None:
    assert untraced_get(f"{uvicorn.url}/nowhere/", headers=traceparent(4)).status_code == 404
    (span,) = sink.server_spans(TRACE[:-4] + "0004")
    assert span["name"] == "GET"
    assert span["http"]["route"] is None
