"""Receivers on 127.0.0.1 that the reporters send to.

- :class:`HttpSink`: an ``http.server`` endpoint answering from a plan, then 200.
- :class:`RawReceiver`: an HTTP endpoint whose answers are raw bytes (a status line, headers or a
  body that ``http.server`` would never write).
- :class:`LineServer`: a TCP (optionally TLS) server collecting newline-ended lines, standing in
  for Logstash.
"""

from __future__ import annotations

import gzip
import http.server
import json
import queue
import socket
import ssl
import threading
from dataclasses import dataclass, field
from typing import Any

from tests.support.servers import QuietHandler, ReceiverBase, TcpListener, strict_loads


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    raw_body: bytes
    body: Any
    client_port: int


@dataclass
class HttpSink(ReceiverBase):
    """An http.server receiver: answers from ``plan`` (status, headers, body) in turn, then 200."""

    plan: list[tuple[int, dict[str, str], bytes]] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    close_after_response: bool = False

    def handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        sink = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                data = raw
                if self.headers.get("Content-Encoding") == "gzip":
                    data = gzip.decompress(raw)
                sink.received.append(
                    Received(
                        "POST",
                        self.path,
                        dict(self.headers.items()),
                        raw,
                        strict_loads(data),
                        self.client_address[1],
                    )
                )
                status, headers, body = sink.plan.pop(0) if sink.plan else (200, {}, b'{"ok":true}')
                self.reply(status, headers, body)
                if sink.close_after_response:
                    # Close without announcing it, as an idle-timeout would.
                    self.close_connection = True

        return Handler


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


def answer(status: str, *headers: str, body: bytes = b"") -> bytes:
    """The raw bytes of an HTTP/1.1 answer: ``status`` (``"200 OK"``), header lines, body."""
    head = [f"HTTP/1.1 {status}", *headers, f"Content-Length: {len(body)}"]
    return "\r\n".join(head).encode("latin-1") + b"\r\n\r\n" + body


class RawReceiver(TcpListener):
    """Reads each request (headers, then ``Content-Length`` bytes of body, gunzipped when the
    request says so), keeps it, and writes the next planned answer as it is; once the plan is
    used up it answers ``200 OK`` with an empty body. A planned answer says whether the request
    counts as accepted and whether the connection is closed after it."""

    def __init__(self) -> None:
        self.plan: list[Planned] = []
        self.requests: list[Request] = []
        self.changed = threading.Condition()
        self.stopped = False
        super().__init__()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RawReceiver:
        return self

    def stop(self) -> None:
        self.stopped = True
        self.close()

    def accepted(self, path_suffix: str = "") -> list[Request]:
        with self.changed:
            return [r for r in self.requests if r.accepted and r.path.endswith(path_suffix)]

    def _recv(self, conn: socket.socket) -> bytes | None:
        """The next bytes from ``conn``: ``b""`` when none came yet, None when it is over."""
        try:
            chunk = conn.recv(65536)
        except TimeoutError:
            return b""
        except OSError:
            return None
        return chunk or None

    def serve(self, conn: socket.socket) -> None:
        conn.settimeout(0.05)
        buffer = b""
        with conn:
            while not self.stopped:
                head_end = buffer.find(b"\r\n\r\n")
                if head_end < 0:
                    if len(buffer) > _MAX_HEAD:
                        return
                    chunk = self._recv(conn)
                    if chunk is None:
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
                    chunk = self._recv(conn)
                    if chunk is None:
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


class LineServer(TcpListener):
    """A TCP (optionally TLS) server standing in for Logstash: collects newline-ended lines."""

    def __init__(self, port: int = 0, ssl_context: ssl.SSLContext | None = None) -> None:
        self.ssl_context = ssl_context
        self.lines: queue.Queue[bytes] = queue.Queue()
        self.handshake_errors: queue.Queue[BaseException] = queue.Queue()
        super().__init__(port)

    def serve(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        stream: socket.socket = conn
        try:
            if self.ssl_context is not None:
                stream = self.ssl_context.wrap_socket(conn, server_side=True)
                self._conns.append(stream)
            buffer = b""
            while True:
                chunk = stream.recv(65536)
                if not chunk:
                    return
                buffer += chunk
                *complete, buffer = buffer.split(b"\n")
                for line in complete:
                    self.lines.put(line)
        except (ssl.SSLError, ConnectionError) as exc:
            self.handshake_errors.put(exc)
        except OSError:
            return

    def get_lines(self, n: int, timeout: float = 5.0) -> list[bytes]:
        return [self.lines.get(timeout=timeout) for _ in range(n)]

    def get_records(self, n: int) -> list[dict[str, Any]]:
        return [strict_loads(line) for line in self.get_lines(n)]
