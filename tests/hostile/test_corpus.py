"""Hostile inbound headers against http.server and aiohttp, traced and untraced.

Each case is sent as raw bytes, first to the untraced server, then with tracer installed. The
application must answer with the same status, its outbound call must succeed, nothing hostile may
reach the headers of that outbound call, and every record must be valid JSON free of secrets.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import re
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import pytest
import requests
from aiohttp import web

import reporters
import tracer
from reporters.memory import MemoryReporter
from tests.aioserver import AioServer
from tests.conftest import Server

TID = "4bf92f3577b34da6a3ce929d0e0e4736"
PID = "00f067aa0ba902b7"
TP = f"00-{TID}-{PID}-01".encode()
SECRET = "s3cret"


class Case:
    def __init__(
        self,
        lines: list[bytes],
        expect: str | None = None,
        path: bytes = b"/call",
        invalid: bool = False,
    ) -> None:
        self.lines = lines
        self.expect = expect  # "join", "new" or None
        self.path = path
        self.invalid = invalid


def tp(value: bytes) -> bytes:
    return b"traceparent: " + value


CASES: dict[str, Case] = {
    "uppercase-hex": Case([tp(TP.upper())], "new", invalid=True),
    "zero-trace-id": Case(
        [tp(b"00-" + b"0" * 32 + b"-" + PID.encode() + b"-01")], "new", invalid=True
    ),
    "zero-parent-id": Case(
        [tp(b"00-" + TID.encode() + b"-" + b"0" * 16 + b"-01")], "new", invalid=True
    ),
    "version-ff": Case([tp(b"ff" + TP[2:])], "new", invalid=True),
    "non-hex": Case([tp(TP[:10] + b"zz" + TP[12:])], "new", invalid=True),
    "traceparent-65000": Case([tp(b"00-" + b"a" * 65000)], "new"),
    "cr-in-value": Case([tp(TP[:20] + b"\r" + TP[20:])], "new"),
    "lf-in-value": Case([b"request-id: abc\nX-Injected: 1", tp(TP[:20] + b"\n" + TP[20:])]),
    "obs-fold": Case([tp(TP[:36] + b"\r\n " + TP[36:])], "new"),
    "nul-esc-ff": Case([b"request-id: a\x00b\x1b[31m\xff", tp(TP[:5] + b"\x00\x1b\xff")], "new"),
    "two-traceparents": Case([tp(TP), tp(b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01")], "new"),
    "surrounding-whitespace": Case([b"traceparent:   " + TP + b" \t "], "join"),
    "upper-case-names": Case([b"TRACEPARENT: " + TP, b"REQUEST-ID: abc-1"], "join"),
    "tracestate-40-bad-keys": Case(
        [tp(TP), b"tracestate: " + b",".join(b"K%d=v" % i for i in range(40))], "join"
    ),
    "tracestate-40": Case(
        [tp(TP), b"tracestate: " + b",".join(b"k%d=v" % i for i in range(40))], "join"
    ),
    "request-id-64k": Case([b"request-id: " + b"r" * 65536]),
    "request-id-8k": Case([b"request-id: " + b"r" * 8000], "new", invalid=True),
    "request-id-crlf-in-query": Case([], "new", b"/call?requestId=a%0d%0aX-Injected:%201", True),
    "b3-garbage": Case([b"b3: \xff\xfe" + b"-" * 40], "new", invalid=True),
    "x-b3-garbage": Case([b"X-B3-TraceId: " + b"g" * 32, b"X-B3-SpanId: 1"], "new", invalid=True),
    "x-span-id-garbage": Case([b"request-id: ok-1", b"x-span-id: \x1b[2J" + b"x" * 300]),
    "x-parent-escape": Case([b"request-id: ok-2", b"x-parent: \x1b]0;evil\x07"]),
    "x-client-send-huge": Case([b"request-id: ok-3", b"x-client-send: " + b"9" * 200]),
    "x-must-collect-garbage": Case([b"x-must-collect: 1\x00\x00"]),
    "hostile-host": Case([b"Host: evil\x00host\x1b"]),
    "absolute-form-credentials": Case([], None, b"http://user:" + SECRET.encode() + b"@h/call"),
    "secrets": Case(
        [
            b"Authorization: Bearer " + SECRET.encode(),
            b"Cookie: session=" + SECRET.encode(),
            b"Proxy-Authorization: Basic " + SECRET.encode(),
            b"X-Api-Key: " + SECRET.encode(),
            b"X-Custom-Secret: " + SECRET.encode(),
        ],
        None,
        b"/call?token=" + SECRET.encode() + b"&X-Goog-Signature=" + SECRET.encode() + b"&a=1",
    ),
}

# What may appear, whole, in each propagation header we send downstream.
SAFE = {
    "request-id": re.compile(r"[A-Za-z0-9._:\-]{1,128}"),
    "x-span-id": re.compile(r"[0-9a-f]{16}"),
    "x-parent": re.compile(r"[A-Za-z0-9._:\-]{1,128}"),
    "x-client-send": re.compile(r"[0-9]{1,20}"),
    "traceparent": re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]"),
    "tracestate": re.compile(r"[\x20-\x7e]{1,512}"),
    "b3": re.compile(r"[0-9a-f]{32}-[0-9a-f]{16}-[01]"),
    "x-must-collect": re.compile(r"1"),
}


def raw_request(port: int, path: bytes, lines: list[bytes]) -> tuple[int, bytes]:
    """Send one request as raw bytes; the status and body of the answer."""
    head = [b"GET " + path + b" HTTP/1.1", b"Connection: close"]
    if not any(line.lower().startswith(b"host:") for line in lines):
        head.append(b"Host: 127.0.0.1")
    data = b"\r\n".join([*head, *lines]) + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    answer = b"".join(chunks)
    if not answer:
        return 0, b""
    header, _, body = answer.partition(b"\r\n\r\n")
    status = int(header.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in header.lower():
        body = _dechunk(body)
    return status, body


def _dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, body = out + body[:size], body[size + 2 :]
    return out


# -- the applications ---------------------------------------------------------------------------


def http_server_app(downstream: str) -> Server:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            response = requests.get(f"{downstream}/echo", timeout=10)
            body = json.dumps(
                {"downstream_status": response.status_code, "sent": response.json()["headers"]}
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Server(Handler)


class AioApp:
    def __init__(self, downstream: str) -> None:
        async def call(request: web.Request) -> web.Response:
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{downstream}/echo") as response:
                    sent = (await response.json())["headers"]
                    status = response.status
            return web.json_response({"downstream_status": status, "sent": sent})

        self.server = AioServer(handler=call)
        self.port = self.server.port

    def close(self) -> None:
        self.server.close()


FLAVOURS: dict[str, Callable[[str], Any]] = {"http.server": http_server_app, "aiohttp": AioApp}


@pytest.fixture(params=sorted(FLAVOURS))
def app(request: pytest.FixtureRequest, server: Server) -> Iterator[tuple[str, Any]]:
    application = FLAVOURS[request.param](server.url)
    yield request.param, application
    application.close()


def _install() -> MemoryReporter:
    reporter = reporters.create("memory")
    tracer.install(
        app_name="hostile",
        reporter=reporter,
        flush_interval=0.02,
        sample_rate=1,
        record_headers=True,
        redact_headers=["X-Custom-Secret"],
    )
    return reporter


def _strings(value: Any, key: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield key, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k, key)
            yield from _strings(v, k)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v, key)


def check_record(record: dict[str, Any]) -> None:
    """Valid JSON (no NaN, UTF-8 encodable), no CR/LF/NUL outside a stack, no secret."""
    text = json.dumps(record, allow_nan=False, ensure_ascii=False)
    text.encode("utf-8")
    assert json.loads(text) == record
    assert SECRET not in text
    assert "evil" not in text or "\\x1b" in text
    for key, value in _strings(record):
        if key != "stack":
            assert not set(value) & {"\r", "\n", "\x00", "\x1b"}, (key, value)


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_case(name: str, app: tuple[str, Any]) -> None:
    _, application = app
    case = CASES[name]
    untraced_status, _ = raw_request(application.port, case.path, case.lines)
    reporter = _install()
    status, body = raw_request(application.port, case.path, case.lines)
    assert status == untraced_status, f"{name}: traced {status}, untraced {untraced_status}"
    if status != 200:
        # Refused by the server's own parser before any application (or tracer) code ran.
        tracer.flush()
        for record in reporter.spans:
            check_record(record)
        return
    answer = json.loads(body)
    assert answer["downstream_status"] == 200, "the outbound call failed"
    sent = {k.lower(): v for k, v in answer["sent"].items()}
    for header, pattern in SAFE.items():
        if header in sent:
            assert pattern.fullmatch(sent[header]), (header, sent[header])
    assert "x-injected" not in sent
    records = reporter.wait_for(3)
    assert len(records) == 3, records
    for record in records:
        check_record(record)
    (ours,) = [r for r in records if r["kind"] == "server" and r["http"]["path"] == "/call"]
    if case.invalid:
        assert tracer.stats()["inbound_invalid"] >= 1
    if case.expect is None:
        return
    if case.expect == "join":
        assert (ours["trace_id"], ours["parent_id"]) == (TID, PID)
        assert sent["traceparent"].startswith(f"00-{TID}-")
    else:
        assert ours["trace_id"] != TID and ours["parent_id"] is None
        assert ours["request_id"] == ours["trace_id"]
        assert TID not in json.dumps(sent)


def test_whitespace_and_case_are_normalised(app: tuple[str, Any]) -> None:
    _, application = app
    reporter = _install()
    status, body = raw_request(application.port, b"/call", CASES["upper-case-names"].lines)
    assert status == 200
    sent = json.loads(body)["sent"]
    assert sent["request-id"] == "abc-1"
    (ours,) = [r for r in reporter.wait_for(3) if r["http"]["path"] == "/call"]
    assert ours["request_id"] == "abc-1" and ours["trace_id"] == TID


def test_tracestate_cut_or_dropped(app: tuple[str, Any]) -> None:
    _, application = app
    _install()
    status, body = raw_request(application.port, b"/call", CASES["tracestate-40"].lines)
    assert status == 200
    members = json.loads(body)["sent"]["tracestate"].split(",")
    assert members == [f"k{i}=v" for i in range(32)]
    status, body = raw_request(application.port, b"/call", CASES["tracestate-40-bad-keys"].lines)
    assert status == 200 and "tracestate" not in json.loads(body)["sent"]


def test_secrets_are_redacted(app: tuple[str, Any]) -> None:
    _, application = app
    reporter = _install()
    case = CASES["secrets"]
    assert raw_request(application.port, case.path, case.lines)[0] == 200
    (ours,) = [r for r in reporter.wait_for(3) if r["http"]["path"] == "/call"]
    assert ours["http"]["url"].endswith("/call?token=REDACTED&X-Goog-Signature=REDACTED&a=1")
    recorded = ours["tags"]["http.request_headers"]
    for header in (
        "authorization",
        "cookie",
        "proxy-authorization",
        "x-api-key",
        "x-custom-secret",
    ):
        assert recorded[header] == "[REDACTED]"


def test_replaced_ids_are_counted(app: tuple[str, Any]) -> None:
    _, application = app
    _install()
    for _ in range(3):
        raw_request(application.port, b"/call", [b"request-id: bad value!"])
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and tracer.stats()["inbound_invalid"] < 3:
        time.sleep(0.01)
    assert tracer.stats()["inbound_invalid_by_header"]["request-id"] == 3


def test_asyncio_loop_is_not_left_behind() -> None:
    # The aiohttp applications above run their loop in a thread; nothing leaks into this one.
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()
