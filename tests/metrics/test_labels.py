"""Label conventions of the request histograms, as OpenTelemetry's HTTP metrics have them: a
label with no value is left out (``error_type`` of a request that got its answer, the status
code of one that got none), and a request no route matched counts under ``http_route="_OTHER"``
in Prometheus. Scraped for real, and queried through a real Prometheus."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

import reporters
import tracer
import tracer.metrics
from tests.conftest import refused_port
from tests.metrics.conftest import Prometheus, need
from tests.metrics.helpers import AioService, get, samples, scrape, settled, wait_until

SERVER = "http_server_request_duration_seconds_count"
CLIENT = "http_client_request_duration_seconds_count"


def install() -> str:
    tracer.install(
        app_name="metrics-labels",
        reporter=reporters.create("memory"),
        flush_interval=0.02,
        memory_watch=False,
        metrics_interval=None,
        metrics_port=0,
    )
    return f"127.0.0.1:{tracer.metrics.metrics_port()}"


def calls(aio_service: AioService) -> None:
    """Three answered client calls, one refused; a matched and an unmatched server request."""
    with requests.Session() as session:
        for i in range(3):
            assert session.get(f"{aio_service.url}/users/{i}").status_code == 200
        with refused_port() as port:
            with pytest.raises(requests.ConnectionError):
                session.get(f"http://127.0.0.1:{port}/down")
    assert get(f"{aio_service.url}/nowhere") == 404


def test_a_label_without_a_value_is_left_out(aio_service: AioService) -> None:
    target = install()
    calls(aio_service)
    text = settled(SERVER, 4, read=lambda: scrape(f"http://{target}/metrics"))
    assert 'error_type=""' not in text
    assert 'http_response_status_code=""' not in text
    client = [labels for labels, _ in samples(text, CLIENT)]
    answered = [labels for labels in client if "http_response_status_code" in labels]
    assert answered and all("error_type" not in labels for labels in answered)
    (failed,) = [labels for labels in client if "http_response_status_code" not in labels]
    assert failed["error_type"] == "network-error"
    # The server side: every series has all four labels, an unmatched request's route _OTHER.
    server = {labels["http_route"]: labels for labels, _ in samples(text, SERVER)}
    assert server["_OTHER"]["http_response_status_code"] == "404"
    assert server["/users/{id}"]["url_scheme"] == "http"
    assert all(len(labels) == 4 for labels in server.values())


def test_prometheus_matches_an_absent_label_as_empty(
    tmp_path: Path, aio_service: AioService
) -> None:
    """Queries that select ``error_type=""`` (or group by it) keep working."""
    need("prometheus")
    target = install()
    prometheus = Prometheus(tmp_path, {"app": target})
    try:
        calls(aio_service)
        settled(CLIENT, 4, read=lambda: scrape(f"http://{target}/metrics"))

        def seen() -> bool:
            value = prometheus.value(f'sum({CLIENT}{{job="app"}})')
            return value is not None and value >= 4

        assert wait_until(seen, timeout=30), prometheus.query(CLIENT)
        assert prometheus.value(f'sum({CLIENT}{{job="app", error_type=""}})') == 3
        assert prometheus.by(f'sum by (error_type) ({CLIENT}{{job="app"}})', "error_type") == {
            "": 3.0,
            "network-error": 1.0,
        }
        assert prometheus.value(f'sum({SERVER}{{job="app", http_route="_OTHER"}})') == 1
    finally:
        prometheus.close()
