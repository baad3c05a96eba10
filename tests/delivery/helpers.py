"""Real listeners on 127.0.0.1 for the delivery tests: a line server, a UDP socket, an HTTP sink."""

from __future__ import annotations

import gzip
import http.server
import json
import queue
import socket
import ssl
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reporters.base import DeliveryError


class Outcomes:
    """A reporter callback that records every call."""

    def __init__(self) -> None:
        self.calls: list[BaseException | None] = []

    def __call__(self, error: BaseException | None) -> None:
        self.calls.append(error)

    @property
    def only(self) -> BaseException | None:
        assert len(self.calls) == 1, f"callback called {len(self.calls)} times: {self.calls}"
        return self.calls[0]

    def error(self) -> DeliveryError:
        error = self.only
        assert isinstance(error, DeliveryError), f"expected a DeliveryError, got {error!r}"
        return error


class LineServer:
    """A TCP (optionally TLS) server standing in for Logstash: collects newline-ended lines."""

    def __init__(self, port: int = 0, ssl_context: ssl.SSLContext | None = None) -> None:
        self.listener = socket.create_server(("127.0.0.1", port))
        self.listener.settimeout(0.05)
        self.port: int = self.listener.getsockname()[1]
        self.ssl_context = ssl_context
        self.lines: queue.Queue[bytes] = queue.Queue()
        self.handshake_errors: queue.Queue[BaseException] = queue.Queue()
        self.accepted = 0
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
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

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.listener.close()
        for conn in self._conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
        self._conns = []

    def pause(self) -> None:
        """Go down: stop listening and drop every connection, but keep the port, bound and not
        listening, so that connecting is refused until :meth:`resume` and no other socket can
        take the port in between (closing and listening anew could lose it)."""
        self.close()
        holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", self.port))
        self.listener = holder

    def resume(self) -> None:
        """Come back on the same port after :meth:`pause`; lines keep arriving in ``lines``."""
        self.listener.listen()
        self.listener.settimeout(0.05)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()


def strict_loads(data: bytes | str) -> Any:
    """json.loads that refuses NaN and Infinity, which are not JSON."""

    def refuse(name: str) -> None:
        raise ValueError(f"not JSON: {name}")

    return json.loads(data, parse_constant=refuse)


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    raw_body: bytes
    body: Any
    client_port: int


@dataclass
class HttpSink:
    """An http.server receiver: answers from ``plan`` (status, headers) in turn, then 200."""

    plan: list[tuple[int, dict[str, str], bytes]] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    close_after_response: bool = False
    server: http.server.ThreadingHTTPServer | None = None
    thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.server_address[1])

    def start(self, ssl_context: ssl.SSLContext | None = None) -> HttpSink:
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

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
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                if sink.close_after_response:
                    # Close without announcing it, as an idle-timeout would.
                    self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if ssl_context is not None:
            self.server.socket = ssl_context.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()
        return self

    def stop(self) -> None:
        assert self.server is not None and self.thread is not None
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@dataclass
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    other_cert: Path
    other_key: Path

    def server_context(self, other: bool = False) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        if other:
            context.load_cert_chain(self.other_cert, self.other_key)
        else:
            context.load_cert_chain(self.server_cert, self.server_key)
        return context


def make_certs(directory: Path) -> Certs:
    """A throw-away CA, a server certificate for 127.0.0.1/localhost and one for another name."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory)

    run(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=tracer test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    for name, san in (("server", "IP:127.0.0.1,DNS:localhost"), ("other", "DNS:other.example")):
        run(
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
            "-out", f"{name}.csr", "-subj", f"/CN={name}",
        )  # fmt: skip
        (directory / f"{name}.ext").write_text(
            f"subjectAltName={san}\nbasicConstraints=CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
        )
        run(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", "-extfile", f"{name}.ext",
        )  # fmt: skip
    return Certs(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        other_cert=directory / "other.pem",
        other_key=directory / "other.key",
    )


def wait_child(pid: int, timeout: float = 10.0) -> int:
    """Wait for a forked child; kill it if it hangs. Returns its exit code."""
    import os
    import signal
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError("the forked child hung")


# A span record and a batch as the pipeline hands them to a reporter, for the reporter tests.
START_US = 1_714_564_800_123_456  # 2024-05-01T12:00:00.123456Z


def span(**fields: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "trace_id": "a" * 32,
        "span_id": "b" * 16,
        "parent_id": None,
        "kind": "server",
        "name": "GET /",
        "start_us": START_US,
        "duration_us": 1500,
    }
    record.update(fields)
    return record


def batch(*spans: dict[str, Any]) -> dict[str, Any]:
    return {
        "service": "checkout",
        "host": "web-1",
        "pid": 4242,
        "sent_at_us": START_US + 5_000_000,
        "spans": list(spans),
    }


def send(reporter: Any, data: dict[str, Any]) -> Outcomes:
    outcomes = Outcomes()
    reporter.send(data, outcomes)
    return outcomes
