"""A pre-forked server, 3 workers: one scrape's totals are the requests sent to all of them."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.metrics.helpers import get, scrape, settled, total

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
