"""promtool (Prometheus's own checker) on tracer's exposition and on the example rules."""

from __future__ import annotations

import glob
import os
import subprocess

import requests

import reporters
import tracer
from tests.conftest import ROOT
from tests.metrics.conftest import need
from tests.metrics.helpers import AioService, get, scrape, settled

EXAMPLES = os.path.join(ROOT, "examples", "prometheus")


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [need("promtool"), *args], input=stdin, capture_output=True, text=True, timeout=60
    )


def test_exposition_passes_promtool_check_metrics(aio_service: AioService) -> None:
    tracer.install(reporter=reporters.create("memory"), memory_watch=False)
    with requests.Session() as session:
        for i in range(3):
            session.get(f"{aio_service.url}/users/{i}")
        session.get(f"{aio_service.url}/status/500")
    assert get(f"{aio_service.url}/nowhere") == 404
    settled("http_server_request_duration_seconds_count", 5)
    text = scrape(f"{aio_service.url}/metrics")
    # Every family tracer adds is there, with samples (a lint of empty families checks little).
    for name in (
        "http_server_request_duration_seconds_bucket",
        "http_client_request_duration_seconds_bucket",
        "http_server_active_requests",
        "python_gc_pause_seconds_count",
        "python_asyncio_event_loop_lag_seconds",
        "python_threads",
        "tracer_spans_created_total",
        "process_cpu_seconds_total",
        "python_info",
    ):
        assert f"\n{name}" in text, name
    out = promtool("check", "metrics", stdin=text)
    assert out.returncode == 0 and not out.stdout.strip() and not out.stderr.strip(), (
        out.stdout + out.stderr
    )


def test_promtool_flags_a_bad_exposition() -> None:
    # The check is not a formality: a counter without _total fails it.
    bad = "# HELP requests Requests.\n# TYPE requests counter\nrequests 1\n"
    assert promtool("check", "metrics", stdin=bad).returncode != 0


def test_example_rules_and_config_pass_promtool() -> None:
    rules = sorted(glob.glob(os.path.join(EXAMPLES, "*.yml")))
    assert rules
    out = promtool("check", "rules", *rules)
    assert out.returncode == 0, out.stdout + out.stderr
    out = promtool("check", "config", os.path.join(EXAMPLES, "prometheus.yaml"))
    assert out.returncode == 0, out.stdout + out.stderr
