"""Starting the services of tests/frameworks in child processes, and reading what they sent.

Each server runs as this checkout's Python (``python -m gunicorn``, ``python -m uvicorn``,
``python -m tests.frameworks.services aiohttp``) and is found by the port it prints.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.support.children import ROOT, Child
from tests.support.receivers import HttpSink

SERVICES = "tests.frameworks.services"


def _gunicorn_flags() -> list[str]:
    """No control socket where gunicorn has one: its default path is shared by every gunicorn
    of the user, and these are many at once."""
    from gunicorn.config import KNOWN_SETTINGS

    names = {setting.name for setting in KNOWN_SETTINGS}
    return ["--no-control-socket"] if "control_socket_disable" in names else []


def tracer_env(app_name: str, sink: HttpSink) -> dict[str, str]:
    """The ``TRACE_*`` variables of a traced service: every request sampled, spans sent soon to
    ``sink`` by the http reporter, no metrics endpoint, no spool."""
    return {
        "TRACE_APP_NAME": app_name,
        "TRACE_REPORTER_TYPE": "http",
        "TRACE_REPORTER_CONFIG": json.dumps(
            {"url": f"http://127.0.0.1:{sink.port}/v1/spans", "gzip": False}
        ),
        "TRACE_SAMPLE_RATE": "1",
        "TRACE_FLUSH_INTERVAL": "0.05",
        "TRACE_METRICS": "0",
        "TRACE_SPOOL": "0",
    }


class Service:
    """A server in a child process and the base URL it listens on."""

    def __init__(self, child: Child, url: str) -> None:
        self.child = child
        self.url = url


def _started(child: Child, marker: str, pattern: str) -> Service:
    line = child.wait_for(marker)
    match = re.search(pattern, line)
    assert match, line
    return Service(child, f"http://127.0.0.1:{match.group(1)}")


@contextmanager
def gunicorn(factory: str, **env: str) -> Iterator[Service]:
    """``gunicorn 'tests.frameworks.services:<factory>()'``: one sync worker."""
    child = Child(
        "--workers=1",
        "--bind=127.0.0.1:0",
        "--graceful-timeout=5",
        *_gunicorn_flags(),
        f"{SERVICES}:{factory}()",
        cwd=ROOT,
        command=(sys.executable, "-m", "gunicorn"),
        **env,
    )
    try:
        yield _started(child, "Listening at:", r"127\.0\.0\.1:(\d+)")
    finally:
        child.stop()


@contextmanager
def uvicorn(factory: str, **env: str) -> Iterator[Service]:
    """``uvicorn --factory tests.frameworks.services:<factory>``: one process."""
    child = Child(
        "--factory",
        f"{SERVICES}:{factory}",
        "--host=127.0.0.1",
        "--port=0",
        "--no-access-log",
        cwd=ROOT,
        command=(sys.executable, "-m", "uvicorn"),
        **env,
    )
    try:
        yield _started(child, "Uvicorn running on", r"127\.0\.0\.1:(\d+)")
    finally:
        child.stop()


@contextmanager
def aiohttp_service(**env: str) -> Iterator[Service]:
    """aiohttp's own server (``python -m tests.frameworks.services aiohttp``)."""
    child = Child("aiohttp", cwd=ROOT, command=(sys.executable, "-m", SERVICES), **env)
    try:
        yield _started(child, "PORT ", r"PORT (\d+)")
    finally:
        child.stop()


def received_spans(sink: HttpSink) -> list[dict[str, Any]]:
    """Every span record the sink has received, in the order of arrival."""
    return [span for batch in list(sink.received) for span in batch.body.get("spans", [])]


def otel_spans(service: Service) -> list[dict[str, Any]]:
    """The spans an OpenTelemetry service printed as ``OTEL {json}`` lines so far."""
    return [
        json.loads(line[len("OTEL ") :])
        for line in list(service.child.stdout)
        if line.startswith("OTEL ")
    ]
