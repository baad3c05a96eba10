"""A request still in flight when its gunicorn worker gets SIGTERM (gunicorn's graceful stop):
its span, finished after the signal in the streaming body's ``close()``, is delivered before the
worker exits, and nothing is left pending (tests/wsgi/stop_app.py is the application)."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.children import ROOT, Child, assert_child_prints_ok
from tests.support.receivers import HttpSink
from tests.support.waiting import eventually
from tracer import context


@dataclass
class Server:
    child: Child
    url: str
    sink: HttpSink
    folder: Path

    def spans(self) -> list[dict[str, Any]]:
        return [
            span
            for batch in list(self.sink.received)
            for span in batch.body.get("spans", [])
            if span["kind"] == "server"
        ]


def _no_control_socket() -> list[str]:
    # gunicorn's control socket has one default path for every server of the user: off.
    from gunicorn.config import KNOWN_SETTINGS

    names = {setting.name for setting in KNOWN_SETTINGS}
    return ["--no-control-socket"] if "control_socket_disable" in names else []


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("gunicorn-stop")
    sink = HttpSink().start()
    child = Child(
        "--workers=1",
        "--worker-class=sync",
        "--bind=127.0.0.1:0",
        "--graceful-timeout=30",
        *_no_control_socket(),
        "tests.wsgi.stop_app:app",
        cwd=ROOT,
        command=(sys.executable, "-m", "gunicorn"),
        TRACE_APP_NAME="gunicorn-stop",
        TRACE_REPORTER_TYPE="http",
        TRACE_REPORTER_CONFIG=json.dumps(
            {"url": f"http://127.0.0.1:{sink.port}/v1/spans", "gzip": False}
        ),
        TRACE_SAMPLE_RATE="1",
        TRACE_SPOOL="0",
        TRACE_METRICS_INTERVAL="none",
        HOLD_DIR=str(folder),
    )
    try:
        line = child.wait_for("Listening at:")
        port = line.rsplit(":", 1)[1].strip().rstrip(")").split()[0]
        yield Server(child, f"http://127.0.0.1:{port}", sink, folder)
    finally:
        (folder / "go").touch()
        child.stop(signal.SIGTERM)
        sink.stop()


def test_a_span_finished_after_sigterm_is_delivered_before_the_worker_exits(
    server: Server,
) -> None:
    answers: list[requests.Response] = []

    def call() -> None:
        with context.suppressed():
            answers.append(requests.get(f"{server.url}/slow", timeout=60))

    caller = threading.Thread(target=call)
    caller.start()
    held = eventually(lambda: list(server.folder.glob("in-*")), what="the request held")
    pid = int(held[0].name.split("-")[1])
    # gunicorn's graceful stop of this worker: it sets the worker to end after this request.
    os.kill(pid, signal.SIGTERM)
    eventually(lambda: (server.folder / f"term-{pid}").exists(), what="the SIGTERM handled")
    (server.folder / "go").touch()
    caller.join(60)
    assert [a.status_code for a in answers] == [200]
    assert answers[0].text == f"held, {pid}"
    stats_file = server.folder / f"stats-{pid}.json"
    eventually(stats_file.exists, what="the worker's exit")
    stats = json.loads(stats_file.read_text())
    spans = server.spans()
    assert [(s["http"]["path"], s["pid"]) for s in spans] == [("/slow", pid)], (
        stats,
        server.child.stderr,
    )
    assert stats["created"] == stats["delivered"] == 1 and stats["pending"] == 0, stats


IGNORES_SIGTERM = """
import os, signal, tracer
from tracer.reporters.memory import MemoryReporter
signal.signal(signal.SIGTERM, signal.SIG_IGN)
reporter = MemoryReporter()
tracer.install(reporter=reporter, sample_rate=1.0, spool=False, flush_interval=5.0)
with tracer.span("before"):
    pass
signal.raise_signal(signal.SIGTERM)
# Flushed by the signal, and the process goes on: what it does next is still delivered.
assert [s["name"] for s in reporter.spans] == ["before"], reporter.spans
with tracer.span("after"):
    pass
assert tracer.flush(timeout=30), tracer.stats()
assert [s["name"] for s in reporter.spans] == ["before", "after"], reporter.spans
print("ok")
"""


def test_a_process_that_ignores_sigterm_is_flushed_by_it_and_delivers_what_follows() -> None:
    assert_child_prints_ok(IGNORES_SIGTERM)
