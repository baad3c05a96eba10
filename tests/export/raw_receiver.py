"""An HTTP receiver on 127.0.0.1 whose answers are raw bytes, for the tests of what the reporters
do with odd answers: a status line, headers or a body that ``http.server`` would never write.

``make`` builds each of the four HTTP reporters for it, ``batch_of`` a batch to send, ``answer``
an answer to plan, and ``delivered_once`` checks that every span made arrived exactly once.

It reads each request (headers, then ``Content-Length`` bytes of body, gunzipped when the request
says so), keeps it, and writes the next planned answer as it is; once the plan is used up it
answers ``200 OK`` with an empty body. A planned answer says whether the request counts as
accepted (the receiver kept its spans) and whether the connection is closed after it.
"""

from __future__ import annotations

import gzip
import json
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

import tracer
from reporters import http as http_reporter
from reporters import logstash, otlp, zipkin

KINDS = ("http", "otlp", "zipkin", "logstash")
# Where each reporter posts spans, below the receiver's URL.
PATHS = {"http": "/spans", "otlp": "/v1/traces", "zipkin": "/api/v2/spans", "logstash": "/"}


def make(kind: str, url: str, **options: Any) -> Any:
    if kind == "http":
        return http_reporter.create(url + PATHS[kind], **options)
    if kind == "otlp":
        return otlp.create(url, protocol="http/json", env={}, **options)
    if kind == "zipkin":
        return zipkin.create(url + PATHS[kind], env={}, **options)
    return logstash.create(url=url + PATHS[kind], **options)


def batch_of(count: int) -> dict[str, Any]:
    return {
        "service": "svc",
        "host": "web-1",
        "pid": 4242,
        "sent_at_us": 1_714_564_800_000_000,
        "spans": [
            {
                "trace_id": f"{n + 1:032x}",
                "span_id": f"{n + 1:016x}",
                "name": f"job {n}",
                "kind": "internal",
                "start_us": 1_714_564_800_000_000,
                "duration_us": 10,
            }
            for n in range(count)
        ],
    }


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
# Requests are small in these tests; a longer head is a broken client, not a test.
_MAX_HEAD = 64 * 1024


@dataclass
class Planned:
    raw: bytes
    accepted: bool = False
    close: bool = True


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    accepted: bool

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class RawReceiver:
    plan: list[Planned] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)
    listener: socket.socket | None = None
    threads: list[threading.Thread] = field(default_factory=list)
    stopped: bool = False

    @property
    def url(self) -> str:
        assert self.listener is not None
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def start(self) -> RawReceiver:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self.threads.append(thread)
        return self

    def stop(self) -> None:
        self.stopped = True
        for thread in self.threads:
            thread.join(5)
        if self.listener is not None:
            self.listener.close()

    def accepted(self, path_suffix: str = "") -> list[Request]:
        with self.changed:
            return [r for r in self.requests if r.accepted and r.path.endswith(path_suffix)]

    def _accept(self) -> None:
        assert self.listener is not None
        while not self.stopped:
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(0.1)
        buffer = b""
        with conn:
            while not self.stopped:
                head_end = buffer.find(b"\r\n\r\n")
                if head_end < 0:
                    if len(buffer) > _MAX_HEAD:
                        return
                    try:
                        chunk = conn.recv(65536)
                    except TimeoutError:
                        continue
                    except OSError:
                        return
                    if not chunk:
                        return
                    buffer += chunk
                    continue
                lines = buffer[:head_end].decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0"))
                while len(buffer) < head_end + 4 + length and not self.stopped:
                    try:
                        chunk = conn.recv(65536)
                    except TimeoutError:
                        continue
                    except OSError:
                        return
                    if not chunk:
                        return
                    buffer += chunk
                body = buffer[head_end + 4 : head_end + 4 + length]
                buffer = buffer[head_end + 4 + length :]
                if headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                with self.changed:
                    planned = self.plan.pop(0) if self.plan else Planned(OK, True, False)
                    self.requests.append(Request(path, headers, body, planned.accepted))
                    self.changed.notify_all()
                try:
                    conn.sendall(planned.raw)
                except OSError:
                    return
                if planned.close:
                    return


def span_ids(kind: str, request: Request) -> list[str]:
    """The span ids one request carried, in the reporter's own encoding."""
    document = request.json()
    if kind == "http":
        return [s["span_id"] for s in document.get("spans", [])]
    if kind == "otlp":
        return [
            span["spanId"]
            for rs in document["resourceSpans"]
            for ss in rs["scopeSpans"]
            for span in ss["spans"]
        ]
    if kind == "zipkin":
        return [s["id"] for s in document]
    return [event["span_id"] for event in document if "span_id" in event]


def make_spans(count: int) -> list[str]:
    made = []
    for n in range(count):
        with tracer.span(f"job {n}") as span:
            assert span is not None
            made.append(span.span_id)
    return made


def delivered_once(kind: str, peer: RawReceiver, made: list[str]) -> None:
    """Every span made reached the receiver in an accepted request, each exactly once."""
    got = [sid for r in peer.accepted(PATHS[kind]) for sid in span_ids(kind, r)]
    assert sorted(got) == sorted(made)
    stats = tracer.stats()
    assert stats["delivered"] == stats["created"] == len(made), stats
    assert stats["dropped"] == 0, stats["dropped_by_reason"]


def answer(status: str, *headers: str, body: bytes = b"") -> bytes:
    head = [f"HTTP/1.1 {status}", *headers, f"Content-Length: {len(body)}"]
    return "\r\n".join(head).encode("latin-1") + b"\r\n\r\n" + body
