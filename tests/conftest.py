"""Shared fixtures: tracer installed with the in-memory reporter, real servers on 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import ssl
import subprocess
import sys

# Swallowed internal errors fail the test that caused them (see tracer.safety).
os.environ.setdefault("TRACER_STRICT", "1")

import http.server
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import reporters
import tracer
from reporters.memory import MemoryReporter
from tests.delivery.helpers import Certs, make_certs
from tracer import safety

for name in ("TRACE_CONFIG_PATH", "TRACE_APP_NAME", "TRACE_REPORTER_TYPE", "TRACE_REPORTER_CONFIG"):
    os.environ.pop(name, None)


@pytest.fixture(autouse=True)
def _no_internal_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[None]:
    # No test may pick up a trace.config.py from the working directory by accident.
    monkeypatch.chdir(tmp_path)
    # Each test gets its own spool, so no test replays another's undelivered spans.
    monkeypatch.setenv("TRACE_SPOOL_DIR", str(tmp_path / "spool"))
    safety.take_strict_errors()
    yield
    tracer.uninstall()
    errors = safety.take_strict_errors()
    assert not errors, f"tracer swallowed internal errors: {errors!r}"


@pytest.fixture
def memory() -> Iterator[MemoryReporter]:
    """tracer installed with an in-memory reporter; uninstalled afterwards."""
    reporter = reporters.create("memory")
    tracer.install(app_name="test-service", reporter=reporter, flush_interval=0.02)
    yield reporter
    tracer.uninstall()


class EchoHandler(http.server.BaseHTTPRequestHandler):
    """Answers with the headers it received and the transaction id it saw, as JSON."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        import json

        path = self.path.split("?")[0]
        if path.startswith("/status/"):
            code = int(path.rsplit("/", 1)[1])
            self.send_error(code)
            return
        if path == "/raise":
            raise ValueError("handler failed")
        if path == "/digest" and "Authorization" not in self.headers:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Digest realm="t", nonce="n0", qop="auth"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/landed")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = json.dumps(
            {
                "headers": {k.lower(): v for k, v in self.headers.items()},
                # Every header line as it came, repeats included.
                "raw": [[k.lower(), v] for k, v in self.headers.items()],
                "transaction_id": tracer.get_transaction_id(),
                "path": self.path,
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET


class Server:
    """A ThreadingHTTPServer on an ephemeral 127.0.0.1 port, served from a thread."""

    def __init__(
        self,
        handler: type[http.server.BaseHTTPRequestHandler] = EchoHandler,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        if ssl_context is not None:
            self.httpd.socket = ssl_context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        scheme = "http" if ssl_context is None else "https"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    yield srv
    srv.close()


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A throw-away CA and server certificates (see tests.delivery.helpers.make_certs)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make test certificates")
    return make_certs(tmp_path_factory.mktemp("certs"))


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A 127.0.0.1 port that refuses connections for as long as the block runs.

    The socket stays bound without listening: connecting gets ECONNREFUSED, and no other socket
    can take the port in the meantime, as one could if it were only closed.
    """
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield int(held.getsockname()[1])


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a child Python that must import this checkout's tracer."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACE_")}
    if "TRACE_SPOOL_DIR" in os.environ:
        env["TRACE_SPOOL_DIR"] = os.environ["TRACE_SPOOL_DIR"]
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def assert_child_prints_ok(code: str) -> None:
    """Run ``code`` in a fresh interpreter (this checkout's tracer, nothing imported yet): it
    must exit 0 and print ``ok``."""
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=subprocess_env(),
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
