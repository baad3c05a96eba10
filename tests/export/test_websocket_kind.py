"""A websocket connection's span (kind ``websocket``) as OTLP and Zipkin receive it: SERVER, its
parent remote, with ``tracer.kind`` ``websocket`` so it stays apart from a request."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2")

import tracer
from reporters import otlp, zipkin
from tests.export.conftest import install
from tests.export.receiver import OtlpReceiver, ZipkinReceiver

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
SERVER = 2
IS_REMOTE = 0x200


async def echo(scope: Any, receive: Any, send: Any) -> None:
    assert scope["type"] == "websocket"
    await receive()
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": "hi"})
    await send({"type": "websocket.close", "code": 1000})


def connect(path: str) -> list[dict[str, Any]]:
    """One websocket connection to ``tracer.asgi(echo)``, from a caller in trace TRACE_ID."""
    scope = {
        "type": "websocket",
        "scheme": "ws",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01".encode()),
        ],
    }
    incoming = [{"type": "websocket.connect"}, {"type": "websocket.disconnect", "code": 1000}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(tracer.asgi(echo)(scope, receive, send))
    return sent


def test_otlp_sends_a_websocket_as_server(receiver: OtlpReceiver, protocol: str) -> None:
    install(otlp.create(receiver.endpoint, protocol=protocol), instrument=[])
    assert connect("/ws")[0]["type"] == "websocket.accept"
    assert tracer.flush(10)
    (seen,) = receiver.wait_spans(1)
    assert seen.span.kind == SERVER
    assert seen.trace_id == TRACE_ID and seen.parent_id == PARENT_ID
    assert seen.span.flags & IS_REMOTE
    assert seen.attributes["tracer.kind"] == "websocket"
    assert seen.attributes["url.path"] == "/ws"
    assert seen.attributes["http.response.status_code"] == 101


def test_zipkin_sends_a_websocket_as_server(zipkin_receiver: ZipkinReceiver) -> None:
    install(zipkin.create(zipkin_receiver.url), instrument=[])
    assert connect("/ws")[0]["type"] == "websocket.accept"
    assert tracer.flush(10)
    (span,) = zipkin_receiver.wait_spans(1)
    assert span["kind"] == "SERVER"
    assert span["traceId"] == TRACE_ID and span["parentId"] == PARENT_ID
    assert span["tags"]["tracer.kind"] == "websocket"
    assert span["tags"]["http.path"] == "/ws"
    assert span["tags"]["http.status_code"] == "101"
