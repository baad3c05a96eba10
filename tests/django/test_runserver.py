"""``tracer run manage.py runserver --noreload``: Django's development server is http.server
underneath, and each request still has exactly one server span, named by its route."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

import tracer
from reporters.memory import MemoryReporter
from tests.django.conftest import Served
from tests.support.spans import Sink, free_port, untraced_get

TRACE = "5ce929d0e0e47364bf92f3577b34da6a"


@pytest.fixture(scope="module")
def runserver(sink: Sink) -> Iterator[Served]:
    port = free_port()
    served = Served(
        sink,
        "django-runserver",
        ["-m", "tracer", "run", "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
        port,
    )
    yield served
    served.stop()


def test_one_server_span_per_request_named_by_route(
    memory: MemoryReporter, runserver: Served, sink: Sink
) -> None:
    with tracer.span("caller"):
        answer = requests.get(f"{runserver.url}/api/users/12/", timeout=30)
    assert answer.status_code == 200
    tracer.flush()
    (client,) = memory.find(kind="client")
    (server,) = sink.server_spans(client["trace_id"])
    # A later request's span arrives after any second span of the first (there must be none).
    later = {"traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"}
    assert untraced_get(f"{runserver.url}/hello/", headers=later).status_code == 200
    (hello,) = sink.server_spans(TRACE)
    assert hello["name"] == "GET /hello/"
    assert [s for s in sink.spans() if s["trace_id"] == client["trace_id"]] == [server]
    assert server["service"] == "django-runserver"
    assert server["parent_id"] == client["span_id"]
    assert server["name"] == "GET /api/users/<int:id>/"
    assert server["http"]["status_code"] == 200
    assert answer.json()["span_id"] == server["span_id"]
