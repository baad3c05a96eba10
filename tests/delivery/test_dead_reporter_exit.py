"""A dead reporter, in real child processes: what flush() answers, what stats() says right after,
and the one line exit writes about the spool.

The reporter is tracer's HTTP reporter pointed at a port that refuses connections, or at a
listener that accepts and never answers. Each child prints flush()'s answer and stats() as one
JSON line, then exits; the parent reads stderr and the spool file.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import refused_port, subprocess_env
from tracer.delivery.spool import Spool

SPANS = 20

CHILD = """
    import json, sys, tracer, reporters
    args = json.loads(sys.argv[1])
    tracer.install(
        app_name="dead",
        reporter=reporters.create("http", url=args["url"], timeout=args["send_timeout"]),
        spool_path=args["spool"],
        flush_interval=0.05,
        send_timeout=args["send_timeout"],
        exit_timeout=args["exit_timeout"],
    )
    for i in range(args["spans"]):
        with tracer.span(f"s{i}"):
            pass
    if args["flush"] is not None:
        ok = tracer.flush(args["flush"])
        print(json.dumps({"flush": ok, "stats": tracer.stats()}), flush=True)
"""

EXIT_LINE = re.compile(r"tracer: exit: (\d+) spans spooled to (.+?) \(")


@pytest.fixture
def silent() -> Iterator[int]:
    """A port that accepts connections and never answers on them."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield int(listener.getsockname()[1])


def run_child(
    tmp_path: Path,
    port: int,
    *,
    flush: float | None,
    send_timeout: float = 10.0,
    exit_timeout: float = 2.0,
    spans: int = SPANS,
) -> tuple[dict[str, Any] | None, str, Path]:
    spool = tmp_path / "dead.sqlite"
    args = {
        "url": f"http://127.0.0.1:{port}/spans",
        "spool": str(spool),
        "send_timeout": send_timeout,
        "exit_timeout": exit_timeout,
        "flush": flush,
        "spans": spans,
    }
    # Generous: the outcome is asserted, not the time; this only keeps a hang from hanging CI.
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHILD), json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=60,
        env=subprocess_env(),
    )
    assert out.returncode == 0, out.stderr
    printed = json.loads(out.stdout) if out.stdout.strip() else None
    return printed, out.stderr, spool


def exit_lines(stderr: str) -> list[tuple[int, str]]:
    return [(int(m[1]), m[2]) for m in EXIT_LINE.finditer(stderr)]


def spool_spans(spool: Path) -> int:
    with Spool(spool) as stored:
        return stored.pending()[1]


def assert_spooled_when_flush_returns(printed: dict[str, Any] | None) -> None:
    assert printed is not None
    stats = printed["stats"]
    assert printed["flush"] is False
    # What flush gave up on is in the spool by the time it returns, not a moment later.
    assert (stats["spooled"], stats["pending"], stats["delivered"]) == (SPANS, 0, 0), stats


def test_flush_with_refused_port_returns_with_the_spans_spooled(tmp_path: Path) -> None:
    with refused_port() as port:
        printed, stderr, spool = run_child(tmp_path, port, flush=2.0)
    assert_spooled_when_flush_returns(printed)
    # Nothing was left for exit to spool, so it says nothing more.
    assert exit_lines(stderr) == [], stderr
    assert spool_spans(spool) == SPANS


def test_flush_with_silent_server_returns_with_the_spans_spooled(
    tmp_path: Path, silent: int
) -> None:
    # send_timeout shorter than the flush: the reporter has failed by the time flush gives up.
    printed, stderr, spool = run_child(tmp_path, silent, flush=3.0, send_timeout=0.5)
    assert_spooled_when_flush_returns(printed)
    # Nothing was left for exit to spool, so it says nothing more.
    assert exit_lines(stderr) == [], stderr
    assert spool_spans(spool) == SPANS


def test_flush_during_first_unanswered_send_leaves_them_pending(
    tmp_path: Path, silent: int
) -> None:
    # The first send is still under way when flush gives up (send_timeout is longer): not a
    # failure yet, so the spans are pending, as documented, and exit spools them.
    printed, stderr, spool = run_child(tmp_path, silent, flush=1.0, send_timeout=30.0)
    assert printed is not None
    stats = printed["stats"]
    assert printed["flush"] is False
    assert (stats["spooled"], stats["pending"]) == (0, SPANS), stats
    assert exit_lines(stderr) == [(SPANS, str(spool))], stderr
    assert spool_spans(spool) == SPANS


@pytest.mark.parametrize("dead", ["refused", "silent"])
def test_exit_with_dead_reporter_says_once_what_it_spooled(
    tmp_path: Path, silent: int, dead: str
) -> None:
    if dead == "refused":
        with refused_port() as port:
            printed, stderr, spool = run_child(tmp_path, port, flush=None, exit_timeout=1.0)
    else:
        printed, stderr, spool = run_child(tmp_path, silent, flush=None, exit_timeout=1.0)
    assert printed is None
    assert exit_lines(stderr) == [(SPANS, str(spool))], stderr
    assert spool_spans(spool) == SPANS


def test_exit_after_a_flush_that_spooled_everything_neither_waits_nor_repeats(
    tmp_path: Path,
) -> None:
    with refused_port() as port:
        printed, stderr, spool = run_child(tmp_path, port, flush=1.0, exit_timeout=300.0)
    assert printed is not None and printed["stats"]["spooled"] == SPANS
    # flush() already said where they are; exit spooled nothing more, so it says nothing. Nor
    # did it wait exit_timeout for a replay a dead reporter cannot take: then the child would
    # have outlived subprocess.run's timeout and failed the test.
    assert exit_lines(stderr) == [] and "tracer: exit:" not in stderr, stderr
    assert spool_spans(spool) == SPANS


def test_nothing_said_at_exit_when_everything_was_delivered(tmp_path: Path) -> None:
    received: list[bytes] = []

    import http.server
    import threading

    class Sink(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            received.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        printed, stderr, spool = run_child(tmp_path, httpd.server_address[1], flush=10.0)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert printed is not None and printed["flush"] is True, printed
    assert printed["stats"]["delivered"] == SPANS
    assert exit_lines(stderr) == [] and "spooled" not in stderr, stderr
    assert received
    # A reporter that delivers never makes tracer create the spool file.
    assert not spool.exists()
