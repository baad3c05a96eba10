"""Django's test project (tests/django/project) served in-process and by real servers in child
processes, which deliver their spans with the http reporter to a receiver of the test's."""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.children import Child
from tests.support.spans import Sink, untraced_get
from tests.support.waiting import wait_until

PROJECT = Path(__file__).parent / "project"
#: The settings module of in-process tests (children import the project as ``mysite``).
SETTINGS = "tests.django.project.mysite.settings"


def setup_django() -> None:
    """Configure Django in this process with the test project's settings (once)."""
    import django
    from django.conf import settings

    if not settings.configured:
        os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS
        django.setup()


@pytest.fixture(scope="module")
def sink() -> Iterator[Sink]:
    receiver = Sink()
    yield receiver
    receiver.stop()


class Served:
    """The test project served by a child process (``command``) on ``port``, with tracer
    installed in it, reporting to ``sink``."""

    def __init__(self, sink: Sink, service: str, command: list[str], port: int, **env: str):
        self.port = port
        self.metrics_port: int | None = None
        self.url = f"http://127.0.0.1:{port}"
        self.service = service
        self.child = Child(
            *command,
            cwd=PROJECT,
            command=(sys.executable,),
            DJANGO_SETTINGS_MODULE="mysite.settings",
            TRACE_APP_NAME=service,
            TRACE_REPORTER_TYPE="http",
            TRACE_REPORTER_CONFIG=json.dumps({"url": sink.url}),
            TRACE_FLUSH_INTERVAL="0.05",
            TRACE_MEMORY_WATCH="false",
            **env,
        )
        ready = wait_until(self._answers)
        if not ready:
            self.child.stop()
            raise AssertionError(f"{service} did not answer; stderr:\n{''.join(self.child.stderr)}")

    def _answers(self) -> bool:
        if self.child.proc.poll() is not None:
            raise AssertionError(f"the server exited; stderr:\n{''.join(self.child.stderr)}")
        try:
            # Not /hello/: its span would be counted by the tests; this one is a 404.
            untraced_get(f"{self.url}/ready/", headers={"x-ready": "1"})
        except requests.ConnectionError:
            return False
        return True

    def stop(self) -> None:
        self.child.stop()


def wsgi_environ(
    path: str, method: str = "GET", headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """A WSGI environ for ``path`` on 127.0.0.1, for calling a handler in-process."""
    target, _, query = path.partition("?")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": target,
        "QUERY_STRING": query,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": io.StringIO(),
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    return environ


def call_wsgi(app: Any, path: str, headers: dict[str, str] | None = None) -> tuple[str, bytes]:
    """Call the WSGI ``app`` in-process for ``path``: its status line and body."""
    seen: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        seen.append(status)
        return lambda data: None

    result = app(wsgi_environ(path, headers=headers), start_response)
    try:
        body = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return seen[0], body


async def call_asgi(app: Any, path: str) -> tuple[int, bytes]:
    """Call the ASGI ``app`` in-process for ``path``: its status and body."""
    target, _, query = path.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": target,
        "raw_path": target.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }
    messages = [{"type": "http.request", "body": b"", "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        # The request is over: Django listens for a disconnect until the response is sent.
        import asyncio

        await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, body
