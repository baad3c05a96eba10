"""uvicorn serving tests/asgi/service.py in child processes, which deliver their spans with the
http reporter to a receiver of the test's."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator

import pytest
import requests

from tests.support.children import ROOT, Child
from tests.support.spans import Sink, free_port, untraced_get
from tests.support.waiting import wait_until

APP = "tests.asgi.service:app"


class Served:
    """uvicorn (``args`` before the application) serving the service on a free port."""

    def __init__(self, sink: Sink, service: str, args: list[str], tracer_run: bool, **env: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = ["-m", "tracer", "run"] if tracer_run else ["-m"]
        self.child = Child(
            *command,
            "uvicorn",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--no-access-log",
            *args,
            APP,
            cwd=ROOT,
            command=(sys.executable,),
            TRACE_APP_NAME=service,
            TRACE_REPORTER_TYPE="http",
            TRACE_REPORTER_CONFIG=json.dumps({"url": sink.url}),
            TRACE_FLUSH_INTERVAL="0.05",
            TRACE_MEMORY_WATCH="false",
            TRACE_IGNORE_PATHS="/ready",
            **env,
        )
        if not wait_until(self._answers):
            self.child.stop()
            raise AssertionError(f"{service} did not answer; stderr:\n{''.join(self.child.stderr)}")

    def _answers(self) -> bool:
        if self.child.proc.poll() is not None:
            raise AssertionError(f"uvicorn exited; stderr:\n{''.join(self.child.stderr)}")
        try:
            # An ignored path, so that readiness checks make no span.
            untraced_get(f"{self.url}/ready")
        except requests.ConnectionError:
            return False
        return True

    def stop(self) -> None:
        self.child.stop()


@pytest.fixture(scope="module")
def sink() -> Iterator[Sink]:
    receiver = Sink()
    yield receiver
    receiver.stop()
