"""Interop with the real OpenTelemetry SDK: W3C Trace Context, and B3 through its B3 propagator.

Each test has one side instrumented by OpenTelemetry and the other by tracer, over real sockets,
and asserts that both recorded one trace: the same trace id, the server's parent being the
client's span.
"""

from __future__ import annotations

import asyncio
import time
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk.trace")
pytest.importorskip("opentelemetry.propagators.b3")
pytest.importorskip("opentelemetry.instrumentation.requests")
pytest.importorskip("opentelemetry.instrumentation.aiohttp_server")

import aiohttp
import requests
from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.propagators.b3 import B3MultiFormat, B3SingleFormat
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

import reporters
import tracer
from reporters.memory import MemoryReporter
from tests.conftest import Server
from tests.propagation.interop import (
    AioServer,
    Otel,
    global_propagator,
    hex_span,
    hex_trace,
    instrumentation_name,
)

# (OpenTelemetry propagator, tracer's propagation option for the same wire format)
WIRE = {
    "tracecontext": (TraceContextTextMapPropagator, ["tracecontext"]),
    "b3-single": (B3SingleFormat, ["b3"]),
    "b3-multi": (B3MultiFormat, ["b3multi"]),
    "defaults-vs-tracecontext": (TraceContextTextMapPropagator, ["trace", "tracecontext", "b3"]),
    "defaults-vs-b3-single": (B3SingleFormat, ["trace", "tracecontext", "b3"]),
}

AIOHTTP_SERVER = instrumentation_name("tracer.instrumentation.aiohttp_server")
AIOHTTP_CLIENT = instrumentation_name("tracer.instrumentation.aiohttp_client")


@pytest.fixture(params=sorted(WIRE))
def wire(request: pytest.FixtureRequest) -> Iterator[list[str]]:
    propagator_class, ours = WIRE[request.param]
    propagator: TextMapPropagator = propagator_class()
    with global_propagator(propagator):
        yield ours


def _install(instrument: list[str], propagation: list[str], **options: Any) -> MemoryReporter:
    reporter = reporters.create("memory")
    tracer.install(
        app_name="ours",
        reporter=reporter,
        flush_interval=0.02,
        instrument=instrument,
        propagation=propagation,
        **options,
    )
    return reporter


def _ours(reporter: MemoryReporter, kind: str, count: int = 1) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(reporter.find(kind=kind)) < count:
        time.sleep(0.005)
    spans = reporter.find(kind=kind)
    assert len(spans) == count, reporter.spans
    return spans[-1]


# -- OpenTelemetry client -> tracer server ---------------------------------------------------


def test_otel_requests_client_to_tracer_http_server(server: Server, wire: list[str]) -> None:
    otel = Otel()
    reporter = _install(["http.server"], wire)
    RequestsInstrumentor().instrument(tracer_provider=otel.provider)
    try:
        assert requests.get(f"{server.url}/joined", timeout=10).status_code == 200
    finally:
        RequestsInstrumentor().uninstrument()
    (theirs,) = otel.spans(SpanKind.CLIENT)
    ours = _ours(reporter, "server")
    assert ours["trace_id"] == hex_trace(theirs.context.trace_id)
    assert ours["parent_id"] == hex_span(theirs.context.span_id)
    assert ours["request_id"] == ours["trace_id"]
    assert ours["sampled"] is True


def test_unsampled_otel_client_is_followed(server: Server) -> None:
    otel = Otel(sampled=False)
    reporter = _install(["http.server"], ["tracecontext"], sample_rate=1)
    RequestsInstrumentor().instrument(tracer_provider=otel.provider)
    try:
        sent = requests.get(f"{server.url}/unsampled", timeout=10).json()["headers"]
    finally:
        RequestsInstrumentor().uninstrument()
    # OpenTelemetry sets the W3C Level 2 "random" flag (02); only the sampled bit (01) counts.
    assert int(sent["traceparent"][-2:], 16) & 1 == 0
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not tracer.stats()["unsampled_dropped"]:
        time.sleep(0.005)
    tracer.flush()
    assert reporter.spans == [] and tracer.stats()["unsampled_dropped"] == 1


@pytest.mark.skipif(AIOHTTP_SERVER is None, reason="tracer's aiohttp server instrumentation")
def test_otel_aiohttp_client_to_tracer_aiohttp_server(wire: list[str]) -> None:
    otel = Otel()
    assert AIOHTTP_SERVER is not None
    reporter = _install([AIOHTTP_SERVER], wire)
    server = AioServer()
    AioHttpClientInstrumentor().instrument(tracer_provider=otel.provider)

    async def call() -> int:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{server.url}/joined") as response:
                await response.read()
                return response.status

    try:
        assert asyncio.run(call()) == 200
    finally:
        AioHttpClientInstrumentor().uninstrument()
        server.close()
    (theirs,) = otel.spans(SpanKind.CLIENT)
    ours = _ours(reporter, "server")
    assert ours["trace_id"] == hex_trace(theirs.context.trace_id)
    assert ours["parent_id"] == hex_span(theirs.context.span_id)


# -- tracer client -> OpenTelemetry server ---------------------------------------------------


@pytest.fixture
def otel_server() -> Iterator[tuple[Otel, AioServer]]:
    otel = Otel()
    # The instrumentor replaces web.Application by a subclass carrying its middleware, which
    # aiohttp discourages with a warning.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        AioHttpServerInstrumentor().instrument(tracer_provider=otel.provider)
        try:
            server = AioServer()
        finally:
            AioHttpServerInstrumentor().uninstrument()
    yield otel, server
    server.close()


def test_tracer_requests_client_to_otel_aiohttp_server(
    otel_server: tuple[Otel, AioServer], wire: list[str]
) -> None:
    otel, server = otel_server
    reporter = _install(["requests"], wire)
    assert requests.get(f"{server.url}/joined", timeout=10).status_code == 200
    ours = _ours(reporter, "client")
    (theirs,) = otel.spans(SpanKind.SERVER)
    assert theirs.parent is not None and theirs.parent.is_remote
    assert hex_trace(theirs.context.trace_id) == ours["trace_id"]
    assert hex_span(theirs.parent.span_id) == ours["span_id"]
    assert theirs.context.trace_flags.sampled


def test_unsampled_tracer_client_is_followed_by_otel(otel_server: tuple[Otel, AioServer]) -> None:
    otel, server = otel_server
    _install(["requests"], ["tracecontext"], sample_rate=0)
    assert requests.get(f"{server.url}/x", timeout=10).status_code == 200
    # OpenTelemetry's default sampler is parent-based: it records nothing for an unsampled caller.
    assert otel.exporter.get_finished_spans() == ()


@pytest.mark.skipif(AIOHTTP_CLIENT is None, reason="tracer's aiohttp client instrumentation")
def test_tracer_aiohttp_client_to_otel_aiohttp_server(
    otel_server: tuple[Otel, AioServer], wire: list[str]
) -> None:
    otel, server = otel_server
    assert AIOHTTP_CLIENT is not None
    reporter = _install([AIOHTTP_CLIENT], wire)

    async def call() -> int:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{server.url}/joined") as response:
                await response.read()
                return response.status

    assert asyncio.run(call()) == 200
    ours = _ours(reporter, "client")
    (theirs,) = otel.spans(SpanKind.SERVER)
    assert theirs.parent is not None
    assert hex_trace(theirs.context.trace_id) == ours["trace_id"]
    assert hex_span(theirs.parent.span_id) == ours["span_id"]
