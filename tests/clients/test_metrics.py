"""``http_client_request_duration_seconds`` counts the calls of every HTTP client library."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable, Iterator

import httpx
import pytest
import urllib3

import reporters
import tracer
from tests.conftest import Server
from tests.metrics.helpers import settled, total

CLIENT = "http_client_request_duration_seconds"


def with_httpx(url: str) -> int:
    return httpx.get(url).status_code


def with_urllib3(url: str) -> int:
    return int(urllib3.PoolManager().request("GET", url).status)


def with_urllib(url: str) -> int:
    with urllib.request.urlopen(url, timeout=10) as answer:
        answer.read()
        return int(answer.status)


@pytest.fixture
def metered() -> Iterator[None]:
    tracer.install(
        app_name="metrics-test",
        reporter=reporters.create("memory"),
        flush_interval=0.02,
        memory_watch=False,
        metrics_interval=None,
    )
    yield
    tracer.uninstall()


@pytest.mark.parametrize("call", [with_httpx, with_urllib3, with_urllib])
def test_every_client_is_counted_with_the_same_labels(
    metered: None, call: Callable[[str], int]
) -> None:
    # A server of its own per library: its port tells the series apart.
    srv = Server()
    try:
        for _ in range(3):
            assert call(f"{srv.url}/m") == 200
    finally:
        srv.close()
    labels = {
        "server_address": "127.0.0.1",
        "server_port": str(srv.port),
        "http_request_method": "GET",
        "http_response_status_code": "200",
    }
    text = settled(f"{CLIENT}_count", 3, **labels)
    assert total(text, f"{CLIENT}_count", **labels) == 3
