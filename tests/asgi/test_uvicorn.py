"""FastAPI (with a mounted Starlette application) under uvicorn in one child process, tracer
installed in the application's module, serving every test of this module."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from websockets.sync.client import connect

import tracer
from reporters.memory import MemoryReporter
from tests.asgi.conftest import Served
from tests.support.spans import Sink, untraced_get
from tests.support.waiting import eventually

TRACE = "4bf92f3577b34da6a3ce929d0e0e"


def trace_id(n: int) -> str:
    return f"{TRACE}{n:04x}"


def traceparent(n: int) -> dict[str, str]:
    return {"traceparent": f"00-{trace_id(n)}-00f067aa0ba902b7-01"}


@pytest.fixture(scope="module")
def served(sink: Sink) -> Iterator[Served]:
    server = Served(sink, "fastapi-uvicorn", [], tracer_run=False, ASGI_INSTALL="1")
    yield server
    server.stop()


def server_span(sink: Sink, n: int, count: int = 1) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The one server span of trace ``n`` and the trace's other spans, once ``count`` spans in
    all arrived."""
    spans = sink.trace(trace_id(n), count)
    (server,) = [s for s in spans if s["kind"] in ("server", "websocket")]
    return server, [s for s in spans if s is not server]


def test_named_by_route_and_a_child_of_the_traced_caller(
    memory: MemoryReporter, served: Served, sink: Sink
) -> None:
    with tracer.span("caller"):
        answer = requests.get(f"{served.url}/hello/7?x=1", timeout=30)
    assert answer.status_code == 200
    assert answer.headers["x-parent"] == "fastapi-uvicorn"
    tracer.flush()
    (client,) = memory.find(kind="client")
    (server,) = [s for s in sink.trace(client["trace_id"], 1) if s["kind"] == "server"]
    assert server["parent_id"] == client["span_id"]
    assert server["name"] == "GET /hello/{n}"
    assert server["http"]["route"] == "/hello/{n}"
    assert server["http"]["status_code"] == 200
    assert server["http"]["url"].endswith("/hello/7?x=1")
    assert 0 <= server["tags"]["ttfb_us"] <= server["duration_us"]
    assert [e["type"] for e in server["events"]] == ["sr", "ss"]
    assert answer.json()["span_id"] == server["span_id"]
    # The caller learns the server's start from x-client-send.
    assert answer.headers["x-client-send"] == str(server["start_us"])


@pytest.mark.parametrize(
    ("n", "headers"),
    [
        (1, traceparent(1)),
        (2, {"b3": f"{trace_id(2)}-00f067aa0ba902b7-1"}),
        (3, {"x-b3-traceid": trace_id(3), "x-b3-spanid": "00f067aa0ba902b7", "x-b3-sampled": "1"}),
    ],
)
def test_w3c_and_b3_headers_continue_the_trace(
    served: Served, sink: Sink, n: int, headers: dict[str, str]
) -> None:
    assert untraced_get(f"{served.url}/hello/{n}", headers=headers).status_code == 200
    server, _ = server_span(sink, n)
    assert server["parent_id"] == "00f067aa0ba902b7"
    assert server["name"] == "GET /hello/{n}"


@pytest.mark.parametrize(
    ("n", "path", "route"),
    [
        (10, "/api/v2/items/pen", "/api/v2/items/{name}"),
        (11, "/legacy/pages/3", "/legacy/pages/{page}"),
    ],
)
def test_included_routers_and_mounts_name_the_whole_template(
    served: Served, sink: Sink, n: int, path: str, route: str
) -> None:
    answer = untraced_get(f"{served.url}{path}", headers=traceparent(n))
    assert answer.status_code == 200
    server, _ = server_span(sink, n)
    assert server["http"]["route"] == route
    assert server["name"] == f"GET {route}"
    assert answer.json()["span_id"] == server["span_id"]


def test_no_route_is_named_by_the_method_alone(served: Served, sink: Sink) -> None:
    assert untraced_get(f"{served.url}/nowhere/42", headers=traceparent(20)).status_code == 404
    server, _ = server_span(sink, 20)
    assert server["name"] == "GET"
    assert server["http"]["route"] is None
    assert server["http"]["status_code"] == 404


def test_a_cors_preflight_answered_by_middleware(served: Served, sink: Sink) -> None:
    with tracer.context.suppressed():
        answer = requests.options(
            f"{served.url}/hello/1",
            headers={
                **traceparent(21),
                "Origin": "http://example.com",
                "Access-Control-Request-Method": "GET",
            },
            timeout=30,
        )
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == "*"
    server, _ = server_span(sink, 21)
    assert server["name"] == "OPTIONS"
    assert server["http"]["status_code"] == 200


def test_an_exception_in_a_view_is_on_the_span_and_the_answer_is_unchanged(
    served: Served, sink: Sink
) -> None:
    answer = untraced_get(f"{served.url}/boom", headers=traceparent(30))
    assert answer.status_code == 500
    assert answer.text == "Internal Server Error"
    server, _ = server_span(sink, 30)
    assert server["http"]["status_code"] == 500
    assert server["error"]["type"] == "ValueError"
    assert server["error"]["message"] == "the view failed"
    assert server["name"] == "GET /boom"


def test_the_apps_own_exception_handler_still_answers(served: Served, sink: Sink) -> None:
    answer = untraced_get(f"{served.url}/teapot", headers=traceparent(31))
    assert (answer.status_code, answer.text) == (418, "teapot")
    server, _ = server_span(sink, 31)
    assert server["http"]["status_code"] == 418
    assert server["error"] is None


def test_a_streamed_response_is_one_span_over_the_whole_stream(served: Served, sink: Sink) -> None:
    answer = untraced_get(f"{served.url}/stream", headers=traceparent(40))
    assert answer.text == "chunk 0\nchunk 1\nchunk 2\n"
    server, others = server_span(sink, 40, 4)
    chunks = sorted(others, key=lambda s: s["name"])
    assert [c["name"] for c in chunks] == ["chunk 0", "chunk 1", "chunk 2"]
    end = server["start_us"] + server["duration_us"]
    for chunk in chunks:
        assert chunk["parent_id"] == server["span_id"]
        # Made while the body was being sent: inside the server span, not after it.
        assert server["start_us"] <= chunk["start_us"]
        assert chunk["start_us"] + chunk["duration_us"] <= end
    assert server["tags"]["ttfb_us"] <= server["duration_us"]


def test_server_sent_events(served: Served, sink: Sink) -> None:
    answer = untraced_get(f"{served.url}/sse", headers=traceparent(41), stream=True)
    assert answer.headers["content-type"].startswith("text/event-stream")
    events = [line for line in answer.iter_lines() if line]
    assert events == [b"data: 0", b"data: 1", b"data: 2"]
    server, _ = server_span(sink, 41)
    assert server["name"] == "GET /sse"
    assert server["http"]["status_code"] == 200


def test_a_websocket_connection_is_one_span_of_its_own_kind(served: Served, sink: Sink) -> None:
    ws_url = served.url.replace("http://", "ws://") + "/ws/lobby"
    with tracer.context.suppressed():
        with connect(ws_url, additional_headers=traceparent(50)) as ws:
            ws.send("one")
            first = json.loads(ws.recv())
            ws.send("two")
            ws.recv()
            ws.send("bye")
    server, others = server_span(sink, 50, 3)
    assert server["kind"] == "websocket"
    assert server["name"] == "GET /ws/{room}"
    assert server["http"]["status_code"] == 101
    assert [e["type"] for e in server["events"]] == ["sr", "ss"]
    # The handler saw the span it made inside the connection's.
    assert first["span_id"] in {s["span_id"] for s in others}
    # The two spans the handler made, and none per message sent or received.
    assert [s["name"] for s in others] == ["ws message", "ws message"]
    assert all(s["parent_id"] == server["span_id"] for s in others)


def test_lifespan_is_not_traced(served: Served, sink: Sink) -> None:
    assert untraced_get(f"{served.url}/lifespan").json() == {"span": "None"}


@pytest.mark.parametrize(
    ("n", "path", "names"),
    [
        (60, "/background", ["background sync"]),
        (61, "/threadpool", ["threadpool work"]),
        (62, "/taskgroup", ["task 0", "task 1"]),
    ],
)
def test_background_work_keeps_the_trace(
    served: Served, sink: Sink, n: int, path: str, names: list[str]
) -> None:
    answer = untraced_get(f"{served.url}{path}", headers=traceparent(n))
    assert answer.status_code == 200
    server, others = server_span(sink, n, 1 + len(names))
    assert sorted(s["name"] for s in others) == names
    assert all(s["parent_id"] == server["span_id"] for s in others)
    assert answer.json()["span_id"] == server["span_id"]


def test_a_sync_view_in_the_thread_pool_sees_its_request(served: Served, sink: Sink) -> None:
    answer = untraced_get(f"{served.url}/sync", headers=traceparent(63))
    server, _ = server_span(sink, 63)
    assert answer.json()["span_id"] == server["span_id"]
    assert server["name"] == "GET /sync"


def test_nothing_leaks_between_requests_on_one_connection(served: Served, sink: Sink) -> None:
    with tracer.context.suppressed(), requests.Session() as session:
        seen = []
        for n, path in [(70, "/background"), (71, "/hello/1"), (72, "/nowhere"), (73, "/sync")]:
            answer = session.get(f"{served.url}{path}", headers=traceparent(n), timeout=30)
            seen.append((n, answer))
    for n, answer in seen:
        server, _ = server_span(sink, n)
        if answer.status_code == 200:
            assert answer.json()["trace_id"] == trace_id(n)
            assert answer.json()["span_id"] == server["span_id"]
    # The request after the one with a background task is named by its own route.
    assert server_span(sink, 71)[0]["name"] == "GET /hello/{n}"
    assert server_span(sink, 72)[0]["name"] == "GET"


def test_metrics_label_routes_and_leave_websockets_out(served: Served, sink: Sink) -> None:
    for _ in range(3):
        assert untraced_get(f"{served.url}/legacy/pages/9").status_code == 200
    untraced_get(f"{served.url}/nowhere/else")
    ws_url = served.url.replace("http://", "ws://") + "/ws/metrics"
    with tracer.context.suppressed(), connect(ws_url) as ws:
        ws.send("bye")
    text = untraced_get(f"{served.url}/metrics").text
    counts = [
        line
        for line in text.splitlines()
        if line.startswith("http_server_request_duration_seconds_count")
    ]
    legacy = [line for line in counts if 'http_route="/legacy/pages/{page}"' in line]
    assert len(legacy) == 1 and float(legacy[0].rsplit(" ", 1)[1]) >= 3
    assert any('http_route="_OTHER"' in line for line in counts)
    assert not any("/ws/" in line for line in counts)
    assert not any("nowhere" in line for line in counts)

    # Closed websockets are no longer active requests: only the scrape's own request is (the
    # connection's span may end just after the client saw it close).
    def active() -> bool:
        scraped = untraced_get(f"{served.url}/metrics").text
        (line,) = [x for x in scraped.splitlines() if x.startswith("http_server_active_requests")]
        return float(line.rsplit(" ", 1)[1]) == 1

    eventually(active, what="one active request")


@pytest.fixture(scope="module")
def wrapped(sink: Sink) -> Iterator[Served]:
    server = Served(sink, "fastapi-wrapped", [], tracer_run=False, ASGI_INSTALL="1", ASGI_WRAP="1")
    yield server
    server.stop()


def test_three_layers_make_one_span(wrapped: Served, sink: Sink) -> None:
    # uvicorn's layer, tracer.asgi() around the application, and FastAPI's own.
    for n, path in [(80, "/hello/5"), (81, "/legacy/pages/1"), (82, "/boom")]:
        untraced_get(f"{wrapped.url}{path}", headers=traceparent(n))
    untraced_get(f"{wrapped.url}/hello/6", headers=traceparent(83))
    # Spans arrive in order: once the last request's has, a duplicate of the others would have.
    server_span(sink, 83)
    for n, name in [(80, "GET /hello/{n}"), (81, "GET /legacy/pages/{page}"), (82, "GET /boom")]:
        spans = [s for s in sink.spans() if s["trace_id"] == trace_id(n)]
        assert [s["name"] for s in spans] == [name]
