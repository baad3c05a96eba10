"""The series cap is exact: a scrape of ``/metrics`` never shows more label sets per request
histogram than ``MAX_SERIES``, overflow series included, whatever labels overflow (client
hosts and ports, methods, routes, status codes, other processes' files), and every request is
still counted once."""

from __future__ import annotations

import http.server
import itertools
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

import reporters
import tracer
import tracer.metrics
from tests.conftest import ROOT, refused_port, subprocess_env
from tests.metrics.cap_child import RouteHandler
from tests.metrics.helpers import get, samples, scrape, wait_until
from tracer.metrics import recording

SERVER = "http_server_request_duration_seconds"
CLIENT = "http_client_request_duration_seconds"
METHODS = ("GET", "POST", "PUT", "DELETE", "BREW")
STATUSES = (200, 201, 202, 203, 206, 299, 400, 401, 403, 404, 409, 410, 418, 422, 429)
STATUSES += (500, 501, 502, 503, 504)
# A cap small enough for a test to pass it many times over with real requests.
CAP = 60
RESERVE = 10


@pytest.fixture
def small_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recording, "MAX_SERIES", CAP)
    monkeypatch.setattr(recording, "OVERFLOW_SERIES", RESERVE, raising=False)


def install(**options: object) -> str:
    """tracer installed with its own metrics port; the URL of its ``/metrics``."""
    tracer.install(
        app_name="metrics-cap",
        reporter=reporters.create("memory"),
        flush_interval=0.02,
        memory_watch=False,
        metrics_interval=None,
        metrics_port=0,
        **options,
    )
    return f"http://127.0.0.1:{tracer.metrics.metrics_port()}/metrics"


def label_sets(text: str, name: str) -> set[tuple[tuple[str, str], ...]]:
    """The label sets of histogram ``name`` in a scrape, checked to agree between its samples."""
    counts = [tuple(sorted(labels.items())) for labels, _ in samples(text, f"{name}_count")]
    assert len(set(counts)) == len(counts), "a label set twice in one scrape"
    buckets = {
        tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
        for labels, _ in samples(text, f"{name}_bucket")
    }
    assert buckets == set(counts)
    return set(counts)


def counted(text: str, name: str) -> float:
    count = sum(value for _, value in samples(text, f"{name}_count"))
    inf = sum(value for labels, value in samples(text, f"{name}_bucket") if labels["le"] == "+Inf")
    assert count == inf
    return count


def scraped(url: str, check: Callable[[str], bool]) -> str:
    """A scrape of ``url`` for which ``check`` holds (a server counts a request just after its
    client got the answer); bounded wait, the last scrape otherwise."""
    text = ""

    def ready() -> bool:
        nonlocal text
        text = scrape(url)
        return check(text)

    wait_until(ready, timeout=20, step=0.05)
    return text


class Servers:
    """RouteHandler servers on distinct loopback addresses (Linux routes all of 127/8 here)."""

    def __init__(self, count: int) -> None:
        self.httpds = []
        for n in range(count):
            httpd = http.server.ThreadingHTTPServer((f"127.0.0.{n + 1}", 0), RouteHandler)
            httpd.daemon_threads = True
            threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
            self.httpds.append(httpd)
        self.urls = [
            f"http://127.0.0.{n + 1}:{h.server_address[1]}" for n, h in enumerate(self.httpds)
        ]

    def close(self) -> None:
        for httpd in self.httpds:
            httpd.shutdown()
            httpd.server_close()


@pytest.fixture
def servers() -> Iterator[Servers]:
    made = Servers(4)
    yield made
    made.close()


def test_one_process_never_shows_more_than_the_cap(small_cap: None, servers: Servers) -> None:
    url = install()
    calls = [
        (method, f"{base}/r/{n % 7}/{status}", status)
        for n, (base, method, status) in enumerate(
            itertools.product(servers.urls, METHODS, STATUSES)
        )
    ]
    local = threading.local()

    def call(job: tuple[str, str, int]) -> int:
        method, target, _ = job
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        return int(session.request(method, target, timeout=10).status_code)

    # Four threads at once: label sets are made concurrently, as in a threaded server.
    with ThreadPoolExecutor(4) as pool:
        answered = list(pool.map(call, calls))
    assert answered == [status for _, _, status in calls]
    refused = 30
    with refused_port() as port, requests.Session() as session:
        for n in range(refused):
            with pytest.raises(requests.ConnectionError):
                session.get(f"http://127.0.9.{n + 1}:{port}/down", timeout=10)

    text = scraped(url, lambda t: counted(t, SERVER) >= len(calls))
    server, client = label_sets(text, SERVER), label_sets(text, CLIENT)
    assert len(server) <= CAP, len(server)
    assert len(client) <= CAP, len(client)
    # Every request counted once, in its own series or an overflow one.
    assert counted(text, SERVER) == len(calls)
    assert counted(text, CLIENT) == len(calls) + refused
    # Well past the cap: overflow series are there, and some still keep their status code.
    overflow = [dict(labels) for labels in server if dict(labels)["http_route"] == "_OTHER"]
    assert any(labels["http_response_status_code"].isdigit() for labels in overflow)


def test_thousands_of_client_hosts_stay_within_the_real_cap() -> None:
    """More distinct hosts than the cap, each a real (refused) connection, with the default cap."""
    url = install()
    hosts = recording.MAX_SERIES + 100
    with refused_port() as port, requests.Session() as session:
        for n in range(hosts):
            with pytest.raises(requests.ConnectionError):
                session.get(f"http://127.1.{n // 250}.{n % 250 + 1}:{port}/", timeout=10)
    text = scraped(url, lambda t: counted(t, CLIENT) >= hosts)
    client = label_sets(text, CLIENT)
    assert len(client) <= recording.MAX_SERIES, len(client)
    assert counted(text, CLIENT) == hosts


def start_child(directory: Path) -> tuple[subprocess.Popen[str], str]:
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.metrics.cap_child",
            "--max-series",
            str(CAP),
            "--overflow-series",
            str(RESERVE),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=subprocess_env(TRACE_METRICS_DIR=str(directory)),
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line.startswith("port "), line
    return child, f"http://127.0.0.1:{int(line.split()[1])}"


def test_the_sum_of_processes_stays_within_the_cap(small_cap: None, tmp_path: Path) -> None:
    """Each process holds fewer label sets than the cap, all of them together more."""
    directory = tmp_path / "metrics"
    url = install(metrics_dir=str(directory))
    children = [start_child(directory) for _ in range(3)]
    try:
        sent = 0
        per_child = CAP // 2
        for c, (_, base) in enumerate(children):
            for k in range(per_child):
                status = STATUSES[k % len(STATUSES)]
                assert get(f"{base}/r/{c * 100 + k}/{status}") == status
                sent += 1
        assert sent > CAP
        text = scraped(url, lambda t: counted(t, SERVER) >= sent)
        assert counted(text, SERVER) == sent
        server = label_sets(text, SERVER)
        assert len(server) <= CAP, len(server)
    finally:
        for child, _ in children:
            assert child.stdin is not None and child.stdout is not None
            child.stdin.close()
            try:
                child.wait(20)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(10)
            child.stdout.close()
