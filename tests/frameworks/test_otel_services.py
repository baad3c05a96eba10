"""OpenTelemetry and tracer in one trace, both ways, each service under its usual server:

an OpenTelemetry-instrumented FastAPI service (its FastAPI and requests instrumentors, the SDK,
W3C Trace Context) under uvicorn, and a tracer-instrumented Flask service under gunicorn.
OpenTelemetry's client span is the parent of tracer's server span, and tracer's client span the
parent of OpenTelemetry's server span: one trace id across both.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("flask")
pytest.importorskip("fastapi")
pytest.importorskip("gunicorn")
pytest.importorskip("uvicorn")
pytest.importorskip("opentelemetry.instrumentation.fastapi")
pytest.importorskip("opentelemetry.instrumentation.requests")

import requests

from tests.frameworks.support import Service, gunicorn, otel_spans, received_spans, tracer_env
from tests.frameworks.support import uvicorn as uvicorn_service
from tests.support.receivers import HttpSink
from tests.support.waiting import eventually


@pytest.fixture(scope="module")
def sink() -> Iterator[HttpSink]:
    receiver = HttpSink().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def flask_service(sink: HttpSink) -> Iterator[Service]:
    # The W3C headers alone, as OpenTelemetry's default propagator sends and reads.
    env = {**tracer_env("flask", sink), "TRACE_PROPAGATION": "tracecontext"}
    with gunicorn("flask_app", SERVICE_NEXT="unused", **env) as service:
        yield service


@pytest.fixture(scope="module")
def otel_service() -> Iterator[Service]:
    with uvicorn_service("otel_fastapi_app") as service:
        yield service


def _ours(sink: HttpSink, kind: str, path: str) -> dict[str, Any]:
    def find() -> list[dict[str, Any]]:
        return [
            s
            for s in received_spans(sink)
            if s["kind"] == kind and (s["http"] or {}).get("path") == path
        ]

    eventually(find, what=f"tracer's {kind} span for {path}")
    (span,) = find()
    return span


def _theirs(service: Service, kind: str, trace_id: str) -> list[dict[str, Any]]:
    return [s for s in otel_spans(service) if s["kind"] == kind and s["trace_id"] == trace_id]


def test_otel_fastapi_client_span_is_the_parent_of_tracers_flask_server_span(
    flask_service: Service, otel_service: Service, sink: HttpSink
) -> None:
    to = f"{flask_service.url}/leaf/from-otel"
    answer = requests.get(f"{otel_service.url}/relay", params={"to": to}, timeout=60)
    assert answer.json() == {"service": "otel-fastapi", "status": 200}
    ours = _ours(sink, "server", "/leaf/from-otel")
    assert ours["name"] == "GET /leaf/<name>"
    clients = eventually(
        lambda: _theirs(otel_service, "CLIENT", ours["trace_id"]),
        what="OpenTelemetry's client span in the same trace",
    )
    (client,) = clients
    assert ours["parent_id"] == client["span_id"]
    (server,) = eventually(lambda: _theirs(otel_service, "SERVER", ours["trace_id"]))
    assert server["parent_id"] is None and server["route"] == "/relay"
    assert client["parent_id"] == server["span_id"]


def test_tracers_flask_client_span_is_the_parent_of_otel_fastapi_server_span(
    flask_service: Service, otel_service: Service, sink: HttpSink
) -> None:
    to = f"{otel_service.url}/leaf/from-tracer"
    answer = requests.get(f"{flask_service.url}/relay", params={"to": to}, timeout=60)
    assert answer.json() == {"service": "flask", "status": 200}
    ours_server = _ours(sink, "server", "/relay")
    ours_client = _ours(sink, "client", "/leaf/from-tracer")
    assert ours_server["parent_id"] is None
    assert ours_client["parent_id"] == ours_server["span_id"]
    assert ours_client["trace_id"] == ours_server["trace_id"]
    (server,) = eventually(
        lambda: _theirs(otel_service, "SERVER", ours_client["trace_id"]),
        what="OpenTelemetry's server span in tracer's trace",
    )
    assert server["remote_parent"] is True
    assert server["parent_id"] == ours_client["span_id"]
    assert server["route"] == "/leaf/{name}"
