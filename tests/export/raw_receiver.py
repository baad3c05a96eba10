"""An HTTP receiver on 127.0.0.1 whose answers are raw bytes, for the tests of what the reporters
do with odd answers: a status line, headers or a body that ``http.server`` would never write.

``make`` builds each of the four HTTP reporters for it, and ``batch_of`` a batch to send.

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
