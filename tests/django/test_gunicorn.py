"""Django under gunicorn (gthread worker), tracer installed in the project's wsgi.py: real
requests from requests, tracer on both sides."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

import tracer
from reporters.memory import MemoryReporter
from tests.django.conftest import Served
from tests.support.spans import Sink, free_port, untraced_get
from tests.support.waiting import eventually

TRACE = "0af7651916cd43dd8448eb211c80319c"


@pytest.fixture(scope="module")
def gunicorn(sink: Sink) -> Iterator[Served]:
    port, metrics_port = free_port(), free_port()
    served = Served(
        sink,
        "django-gunicorn",
        [
            "-m",
            "gunicorn",
            "--bind",
            f"127.0.0.1:{port}",
            "--worker-class",
            "gthread",
            "--threads",
            "4",
            "mysite.wsgi:application",
        ],
        port,
        MYSITE_INSTALL="1",
        TRACE_METRICS_PORT=str(metrics_port),
    )
    served.metrics_port = metrics_port
    yield served
    served.stop()


def traceparent(trace_id: str, n: int) -> dict[str, str]:
    return {"traceparent": f"00-{trace_id[:-4]}{n:04x}-00f067aa0ba902b7-01"}


def test_the_callers_span_is_the_parent_and_the_route_names_the_span(
    memory: MemoryReporter, gunicorn: Served, sink: Sink
) -> None:
    with tracer.span("caller"):
        answer = requests.get(f"{gunicorn.url}/api/users/5/", timeout=30)
    assert answer.status_code == 200
    assert answer.headers["X-Stamp"] == "1"
    tracer.flush()
    (client,) = memory.find(kind="client")
    (server,) = sink.server_spans(client["trace_id"])
    assert server["parent_id"] == client["span_id"]
    assert server["service"] == "django-gunicorn"
    assert server["name"] == "GET /api/users/<int:id>/"
    assert server["http"]["route"] == "/api/users/<int:id>/"
    assert server["http"]["status_code"] == 200
    # The view ran in the server span.
    assert answer.json()["span_id"] == server["span_id"]


def test_a_view_that_calls_out_propagates_the_trace(gunicorn: Served, sink: Sink) -> None:
    trace_id = TRACE[:-4] + "0001"
    target = f"{gunicorn.url}/api/users/9/"
    answer = untraced_get(
        f"{gunicorn.url}/call/", params={"url": target}, headers=traceparent(TRACE, 1)
    )
    assert answer.status_code == 200
    spans = sink.trace(trace_id, 3)
    outer = next(s for s in spans if s["name"] == "GET /call/")
    client = next(s for s in spans if s["kind"] == "client")
    inner = next(s for s in spans if s["name"] == "GET /api/users/<int:id>/")
    assert outer["parent_id"] == "00f067aa0ba902b7"
    assert client["parent_id"] == outer["span_id"]
    assert inner["parent_id"] == client["span_id"]


def test_a_view_exception_is_on_the_span_and_the_client_sees_handler500(
    gunicorn: Served, sink: Sink
) -> None:
    answer = untraced_get(f"{gunicorn.url}/boom/", headers=traceparent(TRACE, 2))
    assert answer.status_code == 500
    assert answer.text == "custom 500 page"
    (span,) = sink.server_spans(TRACE[:-4] + "0002")
    assert span["error"]["type"] == "ValueError"
    assert span["http"]["status_code"] == 500


def test_async_to_sync_work_is_a_child_of_the_request_span(gunicorn: Served, sink: Sink) -> None:
    answer = untraced_get(f"{gunicorn.url}/async-to-sync/", headers=traceparent(TRACE, 3))
    assert answer.status_code == 200
    spans = sink.trace(TRACE[:-4] + "0003", 2)
    (server,) = [s for s in spans if s["kind"] == "server"]
    (work,) = [s for s in spans if s["name"] == "work async"]
    assert work["parent_id"] == server["span_id"]


def test_metrics_label_the_route_and_an_unmatched_request_other(gunicorn: Served) -> None:
    assert untraced_get(f"{gunicorn.url}/api/v2/items/pen/").status_code == 200
    assert untraced_get(f"{gunicorn.url}/no/such/page").status_code == 404
    url = f"http://127.0.0.1:{gunicorn.metrics_port}/metrics"

    def scraped() -> str:
        text = untraced_get(url).text
        wanted = ('http_route="/api/v2/items/<slug:name>/"', 'http_route="_OTHER"')
        return text if all(w in text for w in wanted) else ""

    text = eventually(scraped, what="both routes in the metrics")
    other = [
        line
        for line in text.splitlines()
        if line.startswith("http_server_request_duration_seconds_count")
        and 'http_route="_OTHER"' in line
    ]
    assert other and all('http_response_status_code="404"' in line for line in other)
    assert "/no/such/page" not in text
