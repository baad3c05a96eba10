"""One trace across four services, each under its usual server in a child process:

Flask (gunicorn) -> FastAPI (uvicorn) -> Django (gunicorn) -> aiohttp (its own server), each
calling the next with ``requests`` or aiohttp's client, tracer installed in each and sending to
one receiver here. The spans join into one tree: one trace id, each server span the child of
the client span that called it, each client span the child of its service's server span, and
each server span named by its route template, never by the raw path.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest

pytest.importorskip("flask")
pytest.importorskip("fastapi")
pytest.importorskip("django")
pytest.importorskip("gunicorn")
pytest.importorskip("uvicorn")

import requests

from tests.frameworks.support import (
    Service,
    aiohttp_service,
    gunicorn,
    received_spans,
    tracer_env,
    uvicorn,
)
from tests.support.receivers import HttpSink
from tests.support.waiting import eventually

# service, in the order of the calls -> its server span's route template
HOPS = {
    "flask": "/flask/<int:n>",
    "fastapi": "/fastapi/{n}",
    "django": "/django/<int:n>/",
    "aiohttp": "/aiohttp/{n}",
}
CHAIN = list(HOPS)


@pytest.fixture(scope="module")
def sink() -> Iterator[HttpSink]:
    receiver = HttpSink().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def front(sink: HttpSink) -> Iterator[Service]:
    """The four services, started from the last of the chain to the first; the first."""
    with ExitStack() as stack:
        leaf = stack.enter_context(aiohttp_service(**tracer_env("aiohttp", sink)))
        django = stack.enter_context(
            gunicorn(
                "django_app",
                SERVICE_NEXT=leaf.url + "/aiohttp/{n}",
                **tracer_env("django", sink),
            )
        )
        fastapi = stack.enter_context(
            uvicorn(
                "fastapi_app",
                SERVICE_NEXT=django.url + "/django/{n}/",
                **tracer_env("fastapi", sink),
            )
        )
        flask = stack.enter_context(
            gunicorn(
                "flask_app",
                SERVICE_NEXT=fastapi.url + "/fastapi/{n}",
                **tracer_env("flask", sink),
            )
        )
        yield flask


def _one(spans: list[dict[str, Any]], service: str, kind: str) -> dict[str, Any]:
    found = [s for s in spans if s["service"] == service and s["kind"] == kind]
    assert len(found) == 1, (service, kind, spans)
    return found[0]


def test_flask_fastapi_django_aiohttp_join_into_one_tree(front: Service, sink: HttpSink) -> None:
    answer = requests.get(f"{front.url}/flask/7", timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "service": "flask",
        "next": {
            "service": "fastapi",
            "next": {"service": "django", "next": {"service": "aiohttp", "n": 7}},
        },
    }
    # Four server spans and three client spans; nothing else is traced in these services.
    eventually(lambda: len(received_spans(sink)) >= 7, what="seven spans from four services")
    spans = received_spans(sink)
    assert len(spans) == 7, spans
    assert len({s["trace_id"] for s in spans}) == 1
    assert len({s["span_id"] for s in spans}) == 7

    parent: dict[str, Any] | None = None
    for service in CHAIN:
        server = _one(spans, service, "server")
        assert server["parent_id"] == (None if parent is None else parent["span_id"]), service
        assert server["http"]["route"] == HOPS[service], server
        assert server["name"] == f"GET {HOPS[service]}", server
        assert server["http"]["status_code"] == 200
        assert [e["type"] for e in server["events"]] == ["sr", "ss"]
        if service == CHAIN[-1]:
            break
        client = _one(spans, service, "client")
        assert client["parent_id"] == server["span_id"], service
        assert client["http"]["status_code"] == 200
        parent = client
