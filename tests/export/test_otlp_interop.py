"""Interop through a real peer: a service instrumented with the OpenTelemetry SDK, exporting with
the SDK's own OTLP/HTTP exporter (in its own process), and tracer services (http.server, requests,
aiohttp server and client, exporting with the OTLP reporter) send their spans to one receiver.
The receiver must see one trace, with every parent link right, across both directions::

    test (tracer requests) -> front (tracer http.server) -requests-> relay (OpenTelemetry aiohttp)
      -aiohttp-> hop (tracer aiohttp server) -aiohttp-> leaf (OpenTelemetry aiohttp)
"""

from __future__ import annotations

import asyncio
import http.server
import itertools
import json
import queue
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2")
pytest.importorskip("opentelemetry.exporter.otlp.proto.http.trace_exporter")
pytest.importorskip("opentelemetry.instrumentation.aiohttp_server")

import aiohttp
import requests
from aiohttp import web

import tracer
from reporters import otlp
from tests.aioserver import AioServer
from tests.conftest import Server, subprocess_env
from tests.export.conftest import install
from tests.export.receiver import OtlpReceiver, Seen

SERVER, CLIENT = 2, 3
PEER = Path(__file__).with_name("otel_peer.py")


class Peer:
    """The OpenTelemetry service's process."""

    def __init__(self, receiver: OtlpReceiver) -> None:
        env = subprocess_env(OTEL_SEMCONV_STABILITY_OPT_IN="http")
        self.process = subprocess.Popen(
            [sys.executable, str(PEER), receiver.endpoint],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        lines: queue.Queue[str] = queue.Queue()
        assert self.process.stdout is not None
        threading.Thread(target=self._read, args=(self.process.stdout, lines), daemon=True).start()
        try:
            line = lines.get(timeout=30)
        except queue.Empty:
            self.close()
            raise AssertionError("the OpenTelemetry peer did not start") from None
        assert line.startswith("PORT "), line + self._stderr()
        self.url = f"http://127.0.0.1:{int(line.split()[1])}"

    @staticmethod
    def _read(stream: IO[str], lines: queue.Queue[str]) -> None:
        for line in stream:
            lines.put(line.strip())

    def _stderr(self) -> str:
        return "" if self.process.stderr is None else self.process.stderr.read()

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


@pytest.fixture
def peer(receiver: OtlpReceiver) -> Iterator[Peer]:
    started = Peer(receiver)
    yield started
    started.close()


class HopServer(AioServer):
    """tracer's aiohttp service: ``GET /hop?to=URL`` calls URL with aiohttp's client."""

    def __init__(self) -> None:
        super().__init__()

    async def _start(self, middlewares: list[Any], handler: Any) -> int:
        async def hop(request: web.Request) -> web.Response:
            async with aiohttp.ClientSession() as session:
                async with session.get(request.query["to"]) as response:
                    return web.Response(text=await response.text())

        app = web.Application()
        app.router.add_get("/hop", hop)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return int(self.runner.addresses[0][1])


def front_handler(target: str) -> type[http.server.BaseHTTPRequestHandler]:
    """tracer's http.server service: ``GET /start`` calls ``target`` with requests."""

    class Front(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            answer = requests.get(target, timeout=10)
            body = json.dumps({"relayed": answer.json()}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Front


def path_of(seen: Seen) -> str:
    # OpenTelemetry's instrumentations give the stable attributes with the opt-in; older ones
    # only the old names.
    found = seen.attributes
    if seen.span.kind == SERVER:
        return str(found.get("url.path") or found.get("http.target", "")).split("?")[0]
    full = str(found.get("url.full") or found.get("http.url", ""))
    return urllib.parse.urlsplit(full).path


def find(spans: list[Seen], service: str, kind: int, path: str) -> Seen:
    found = [
        s for s in spans if s.service == service and s.span.kind == kind and path_of(s) == path
    ]
    assert len(found) == 1, (
        service,
        kind,
        path,
        [(s.service, s.span.kind, path_of(s)) for s in spans],
    )
    return found[0]


def test_one_trace_across_opentelemetry_and_tracer(
    receiver: OtlpReceiver, peer: Peer, protocol: str
) -> None:
    install(
        otlp.create(receiver.endpoint, protocol=protocol),
        app_name="tracer-svc",
        instrument=["http.server", "requests", "aiohttp.server", "aiohttp.client"],
    )
    hop = HopServer()
    leaf = f"{peer.url}/leaf"
    hop_url = f"{hop.url}/hop?{urllib.parse.urlencode({'to': leaf})}"
    relay = f"{peer.url}/relay?{urllib.parse.urlencode({'to': hop_url})}"
    front = Server(front_handler(relay))
    try:
        answer = requests.get(f"{front.url}/start", timeout=30)
        assert answer.status_code == 200 and answer.json() == {"relayed": {"status": 200}}
        assert tracer.flush(10)
        spans = receiver.wait_spans(8)
    finally:
        front.close()
        hop.close()
    assert len(spans) == 8, [(s.service, s.span.name) for s in spans]

    ours, theirs = "tracer-svc", "otel-peer"
    root = find(spans, ours, CLIENT, "/start")
    front_server = find(spans, ours, SERVER, "/start")
    front_client = find(spans, ours, CLIENT, "/relay")
    relay_server = find(spans, theirs, SERVER, "/relay")
    relay_client = find(spans, theirs, CLIENT, "/hop")
    hop_server = find(spans, ours, SERVER, "/hop")
    hop_client = find(spans, ours, CLIENT, "/leaf")
    leaf_server = find(spans, theirs, SERVER, "/leaf")

    assert {s.trace_id for s in spans} == {root.trace_id}
    assert len({s.span_id for s in spans}) == 8
    assert root.span.parent_span_id == b""
    chain = [
        root,
        front_server,
        front_client,
        relay_server,  # tracer calling OpenTelemetry (requests)
        relay_client,
        hop_server,  # OpenTelemetry calling tracer (aiohttp)
        hop_client,
        leaf_server,  # tracer calling OpenTelemetry (aiohttp)
    ]
    for parent, child in itertools.pairwise(chain):
        assert child.parent_id == parent.span_id, (parent.span.name, child.span.name)


def test_the_peer_alone_reaches_the_receiver(receiver: OtlpReceiver, peer: Peer) -> None:
    """The receiver takes the SDK's own export as it takes tracer's (the proof's baseline)."""

    async def call() -> int:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{peer.url}/leaf") as response:
                return response.status

    assert asyncio.run(call()) == 200
    (seen,) = receiver.wait_spans(1)
    assert seen.service == "otel-peer" and seen.span.kind == SERVER
    assert receiver.requests[0].content_type == "application/x-protobuf"
