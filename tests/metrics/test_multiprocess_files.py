"""The files of a pre-forking server's processes: what a process that exited still adds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import reporters
import tracer
from tests.metrics.helpers import HttpServer, get, local_text, settled, total
from tracer.config import Config

COUNT = "http_server_request_duration_seconds_count"


def exited_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(30)
    return child.pid


def write_other(directory: Path, pid: int, requests: int, active: int, exited: bool) -> None:
    width = 16  # 14 buckets, +Inf, the sum
    series = [0] * width
    series[0] = requests
    series[-1] = requests * 1000
    state = {
        "pid": pid,
        "exited": exited,
        "buckets": list(Config.metrics_buckets),
        "series": {
            "http_server_request_duration_seconds": [[["GET", "_OTHER", "200", "http"], series]],
            "http_server_active_requests": [[[], [active]]],
        },
        "samples": [
            {
                "name": "tracer_spans_pending",
                "type": "gauge",
                "doc": "Spans queued or being sent now.",
                "unit": "",
                "samples": [["tracer_spans_pending", {}, 7.0]],
            },
            {
                "name": "tracer_spans_created",
                "type": "counter",
                "doc": "Spans that entered the delivery pipeline.",
                "unit": "",
                "samples": [["tracer_spans_created_total", {}, 9.0]],
            },
        ],
    }
    (directory / f"tracer-metrics-{pid}.json").write_text(json.dumps(state))


def test_counters_of_exited_processes_stay_gauges_go(tmp_path: Path) -> None:
    directory = tmp_path / "shared"
    directory.mkdir()
    dead, alive = exited_pid(), os.getppid()
    write_other(directory, dead, requests=4, active=2, exited=False)  # killed: no final write
    write_other(directory, alive, requests=5, active=1, exited=False)
    srv = HttpServer()
    try:
        tracer.install(
            reporter=reporters.create("memory"),
            memory_watch=False,
            metrics_interval=None,
            metrics_dir=str(directory),
        )
        assert get(f"{srv.url}/mine") == 200
        text = settled(COUNT, 10)
    finally:
        srv.close()
    assert total(text, COUNT) == 4 + 5 + 1
    # Only the live process's requests in flight, and its pending spans; every created span.
    assert total(text, "http_server_active_requests") == 1
    assert total(text, "tracer_spans_pending") >= 7
    assert total(text, "tracer_spans_created_total") >= 18
    mine = json.loads((directory / f"tracer-metrics-{os.getpid()}.json").read_text())
    assert mine["pid"] == os.getpid() and not mine["exited"]
    tracer.uninstall()
    # Uninstalled, the process's last word: its counts, marked as exited.
    mine = json.loads((directory / f"tracer-metrics-{os.getpid()}.json").read_text())
    assert mine["exited"]
    assert total(local_text(), COUNT) == 0
