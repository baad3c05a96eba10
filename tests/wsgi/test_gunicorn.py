"""gunicorn in child processes, two workers each, in four ways of installing tracer: ``tracer run
gunicorn`` (sync workers), ``install()`` in the application module (gthread, ``--preload``), and
``install()`` in ``gunicorn.conf.py``, in ``post_fork`` (gthread) or at its top level (sync,
``--preload``). Each worker delivers its own spans to a real HTTP receiver exactly once."""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

import tracer
from tests.metrics.helpers import scrape, total
from tests.support.children import ROOT, Child
from tests.support.receivers import HttpSink
from tests.support.waiting import eventually
from tracer import context
from tracer.reporters.memory import MemoryReporter

APP = "tests.wsgi.gunicorn_app:app"
CONF = os.path.join(ROOT, "tests", "wsgi", "gunicorn_conf.py")
COUNT = "http_server_request_duration_seconds_count"
HELD = "/hold"
USERS = "/users/<int:user_id>"

MODES = {
    "tracer-run-sync": (("-m", "tracer", "run", "gunicorn", "--worker-class=sync"), {}),
    "app-install-gthread-preload": (
        (
            "-m",
            "gunicorn",
            "--worker-class=gthread",
            "--threads=1",
            "--worker-connections=1",
            "--preload",
        ),
        {"INSTALL_IN_APP": "1"},
    ),
    "conf-post-fork-gthread": (
        (
            "-m",
            "gunicorn",
            f"--config={CONF}",
            "--worker-class=gthread",
            "--threads=1",
            "--worker-connections=1",
        ),
        {},
    ),
    "conf-top-level-sync-preload": (
        ("-m", "gunicorn", f"--config={CONF}", "--worker-class=sync", "--preload"),
        {"INSTALL_AT": "top"},
    ),
}


@dataclass
class Gunicorn:
    child: Child
    url: str
    sink: HttpSink
    hold_dir: Path

    def spans(self, *routes: str) -> list[dict[str, Any]]:
        """The server spans received so far whose route is one of ``routes``."""
        return [
            span
            for batch in list(self.sink.received)
            for span in batch.body.get("spans", [])
            if span["kind"] == "server" and (span.get("http") or {}).get("route") in routes
        ]


@pytest.fixture(scope="module", params=list(MODES))
def gunicorn(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gunicorn]:
    args, env = MODES[request.param]
    folder = tmp_path_factory.mktemp("gunicorn")
    (folder / "metrics").mkdir()
    (folder / "hold").mkdir()
    sink = HttpSink().start()
    child = Child(
        *args[1:],
        "--workers=2",
        "--bind=127.0.0.1:0",
        "--graceful-timeout=10",
        APP,
        cwd=ROOT,
        command=(sys.executable, args[0]),
        TRACE_APP_NAME="gunicorn-service",
        TRACE_REPORTER_TYPE="http",
        TRACE_REPORTER_CONFIG=json.dumps(
            {"url": f"http://127.0.0.1:{sink.port}/v1/spans", "gzip": False}
        ),
        TRACE_SAMPLE_RATE="1",
        TRACE_FLUSH_INTERVAL="0.05",
        TRACE_SPOOL="0",
        TRACE_METRICS_DIR=str(folder / "metrics"),
        TRACE_METRICS_INTERVAL="none",
        HOLD_DIR=str(folder / "hold"),
        **env,
    )
    try:
        line = child.wait_for("Listening at:")
        port = line.rsplit(":", 1)[1].strip().rstrip(")").split()[0]
        eventually(
            lambda: sum("Booting worker" in line for line in child.stderr) >= 2,
            what="two workers booted",
        )
        yield Gunicorn(child, f"http://127.0.0.1:{port}", sink, folder / "hold")
    finally:
        child.stop()
        sink.stop()


def test_one_scrape_gives_the_total_of_both_workers(gunicorn: Gunicorn) -> None:
    with context.suppressed(), requests.Session() as session:
        for i in range(6):
            assert session.get(f"{gunicorn.url}/shop/items/m{i}", timeout=30).text == f"m{i}"
    # Whichever worker answers, it adds up both workers' files (written every second).
    route = "/shop/items/<name>"
    eventually(
        lambda: total(scrape(f"{gunicorn.url}/metrics"), COUNT, http_route=route) == 6,
        what="six requests in one scrape",
    )


def test_each_worker_delivers_its_own_spans_exactly_once(
    gunicorn: Gunicorn, memory: MemoryReporter
) -> None:
    # Two requests held at once: with one connection at a time a worker, each worker serves one.
    held: list[requests.Response] = []

    def hold() -> None:
        with context.suppressed():
            held.append(requests.get(f"{gunicorn.url}{HELD}", timeout=60))

    threads = [threading.Thread(target=hold) for _ in range(2)]
    for thread in threads:
        thread.start()
    eventually(lambda: len(list(gunicorn.hold_dir.glob("in-*"))) == 2, what="both held")
    (gunicorn.hold_dir / "go").touch()
    for thread in threads:
        thread.join(60)
    assert sorted(r.status_code for r in held) == [200, 200]
    workers = {r.json()["pid"] for r in held}
    assert len(workers) == 2
    # Eight more, from a traced client: tracer on both sides.
    with tracer.span("client"), requests.Session() as session:
        for i in range(8):
            assert session.get(f"{gunicorn.url}/users/{i}", timeout=30).json()["user"] == i
    eventually(lambda: len(gunicorn.spans(HELD, USERS)) >= 10, what="ten server spans")
    # Stopped gracefully, every worker flushes what it has: nothing arrives twice.
    assert gunicorn.child.stop(sig=15) == 0
    spans = gunicorn.spans(HELD, USERS)
    assert len(spans) == 10
    assert len({s["span_id"] for s in spans}) == 10
    assert {s["pid"] for s in spans if s["http"]["route"] == HELD} == workers
    clients = {s["span_id"] for s in memory.find(kind="client")}
    users = [s for s in spans if s["http"]["route"] == USERS]
    assert len(clients) == 8 and {s["parent_id"] for s in users} == clients
    assert {s["name"] for s in users} == {f"GET {USERS}"}
