"""``tracer run uvicorn --workers 2``: uvicorn's spawned workers each install tracer through
``tracer run``'s bootstrap, deliver their own spans exactly once, and one scrape of
``metrics_dir`` totals them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.asgi.conftest import Served
from tests.support.spans import Sink, untraced_get
from tests.support.waiting import eventually

TRACE = "5cf92f3577b34da6a3ce929d0e0e"
REQUESTS = 20


@pytest.fixture(scope="module")
def workers(sink: Sink, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    metrics_dir = tmp_path_factory.mktemp("metrics")
    metrics_dir.chmod(0o700)
    server = Served(
        sink,
        "fastapi-workers",
        ["--workers", "2"],
        tracer_run=True,
        TRACE_METRICS_DIR=str(metrics_dir),
    )
    yield server
    server.stop()


def hello_total(text: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith("http_server_request_duration_seconds_count") and (
            'http_route="/hello/{n}"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_each_worker_delivers_its_spans_once_and_a_scrape_totals_them(
    workers: Served, sink: Sink
) -> None:
    served_by: dict[str, int] = {}
    for n in range(REQUESTS):
        trace = f"{TRACE}{n:04x}"
        answer = untraced_get(
            f"{workers.url}/hello/{n}",
            headers={"traceparent": f"00-{trace}-00f067aa0ba902b7-01"},
        )
        assert answer.status_code == 200
        assert answer.json()["trace_id"] == trace
        served_by[trace] = answer.json()["pid"]
    # The supervisor serves nothing: every request was a worker's.
    assert workers.child.proc.pid not in served_by.values()

    # One scrape, whichever worker answers it, counts every worker's requests, each once.
    def scraped() -> bool:
        total = hello_total(untraced_get(f"{workers.url}/metrics").text)
        assert total <= REQUESTS
        return total == REQUESTS

    eventually(scraped, what=f"a scrape totalling {REQUESTS} requests")

    def arrived() -> list[dict[str, object]]:
        spans = [s for s in sink.spans() if str(s["trace_id"]).startswith(TRACE)]
        return spans if len(spans) >= REQUESTS else []

    eventually(arrived, what=f"{REQUESTS} server spans")
    # Stopped, every worker flushed what it held: a span delivered twice would be here now.
    workers.stop()
    spans = [s for s in sink.spans() if str(s["trace_id"]).startswith(TRACE)]
    assert sorted(str(s["trace_id"]) for s in spans) == sorted(served_by)
    for span in spans:
        assert span["kind"] == "server"
        assert span["name"] == "GET /hello/{n}"
        # Delivered by the worker that served it.
        assert span["pid"] == served_by[str(span["trace_id"])]
