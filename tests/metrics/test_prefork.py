"""A pre-forked server, 3 workers: one scrape's totals are the requests sent to all of them."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.metrics.helpers import get, scrape, settled, total
from tests.support.children import assert_child_prints_ok

COUNT = "http_server_request_duration_seconds_count"


def served(path: Path) -> int:
    """The server requests counted in one process's file."""
    state = json.loads(path.read_text())
    rows = state["series"]["http_server_request_duration_seconds"]
    return sum(sum(values[:-1]) for _, values in rows)


def test_one_scrape_totals_every_worker(
    tmp_path: Path, service_factory: Callable[..., Any]
) -> None:
    directory = tmp_path / "metrics"
    service = service_factory(
        "prefork",
        "--workers",
        "3",
        env={"TRACE_METRICS_DIR": str(directory), "TRACE_METRICS_PORT": "0"},
    )
    metrics_url = f"http://127.0.0.1:{service.read_all('metrics', 1)[0]}/metrics"
    # The parent serves a few requests before it forks: its workers must not count them again.
    for i in range(5):
        assert get(f"{service.url}/before/{i}") == 200
    settled(COUNT, 5, read=lambda: scrape(metrics_url))
    service.process.stdin.write("fork\n")
    service.process.stdin.flush()
    workers = [int(pid) for pid in service.read_all("worker", 3)]
    sent = 5
    for i in range(60):
        # A new connection each time: whichever worker accepts it first serves it.
        assert get(f"{service.url}/w/{i}") == 200
        sent += 1
    for _ in range(6):
        assert get(f"{service.url}/status/500") == 500
        sent += 1
    text = settled(COUNT, sent, read=lambda: scrape(metrics_url))
    assert total(text, COUNT) == sent
    assert total(text, COUNT, http_response_status_code="500") == 6
    assert total(text, "http_server_active_requests") == 0
    # Scraped again, nothing is counted twice.
    assert total(scrape(metrics_url), COUNT) == sent
    # Each worker's file holds its own requests only; with the parent's they make the total.
    by_worker = [served(directory / f"tracer-metrics-{pid}.json") for pid in workers]
    assert sum(by_worker) == sent - 5, by_worker


# Installs tracer with a metrics port and metrics_dir, then forks while another thread holds the
# locks a scrape of the parent takes (the port's table of open connections, the directory's
# reader): the forked child must start, and collect, without waiting for either.
FORK_WHILE_LOCKED = """
import os, tempfile, threading
from prometheus_client import generate_latest
import reporters, tracer, tracer.metrics
from tests.support.children import wait_child

tracer.install(
    app_name="fork-locked",
    reporter=reporters.create("memory"),
    metrics_port=0,
    metrics_dir=tempfile.mkdtemp(),
    memory_watch=False,
    metrics_interval=None,
)
state = tracer.metrics._state
held, release = threading.Event(), threading.Event()

def hold():
    with state.thread.server._open_lock, state.files._lock:
        held.set()
        release.wait(60)

threading.Thread(target=hold, daemon=True).start()
assert held.wait(30)
pid = os.fork()
if pid == 0:
    generate_latest(tracer.metrics._registry)
    os._exit(0)
release.set()
print("ok" if wait_child(pid) == 0 else "the forked child failed")
"""


def test_a_fork_while_a_scrape_holds_its_locks_starts_the_child() -> None:
    assert_child_prints_ok(FORK_WHILE_LOCKED)
