"""Shared fixtures: tracer installed with the in-memory reporter, real servers on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import ssl

# Swallowed internal errors fail the test that caused them (see tracer.safety).
os.environ.setdefault("TRACER_STRICT", "1")

import http.server
from collections.abc import Iterator
from typing import Any

import pytest

import reporters
import tracer
from reporters.memory import MemoryReporter

# ROOT, assert_child_prints_ok, refused_port and subprocess_env are imported from here by tests.
from tests.support.children import ROOT as ROOT
from tests.support.children import assert_child_prints_ok as assert_child_prints_ok
from tests.support.children import subprocess_env as subprocess_env
from tests.support.servers import HttpServer, QuietHandler
from tests.support.servers import refused_port as refused_port
from tests.support.tls import Certs, make_certs
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


class EchoHandler(QuietHandler):
    """Answers with the headers it received and the transaction id it saw, as JSON."""

    disable_nagle_algorithm = True

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


class Server(HttpServer):
    """A ThreadingHTTPServer (of :class:`EchoHandler` by default) on an ephemeral 127.0.0.1
    port, served from a thread."""

    def __init__(
        self,
        handler: type[http.server.BaseHTTPRequestHandler] = EchoHandler,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(handler, ssl_context)


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    yield srv
    srv.close()


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A throw-away CA and server certificates (see tests.support.tls.make_certs)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make test certificates")
    return make_certs(tmp_path_factory.mktemp("certs"))
