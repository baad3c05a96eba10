"""Request metrics from real servers and clients: every request counted, sampled or not."""

from __future__ import annotations

import gc
import http.server
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

import reporters
import tracer
import tracer.metrics
from reporters.memory import MemoryReporter
from tests.conftest import refused_port
from tests.metrics.helpers import (
    AioService,
    HttpServer,
    get,
    local_text,
    samples,
    scrape,
    settled,
    total,
    wait_until,
)

SERVER = "http_server_request_duration_seconds"
CLIENT = "http_client_request_duration_seconds"


@pytest.fixture
def traced() -> Iterator[MemoryReporter]:
    reporter = reporters.create("memory")
    tracer.install(
        app_name="metrics-test",
        reporter=reporter,
        flush_interval=0.02,
        memory_watch=False,
        metrics_interval=None,
    )
    yield reporter
    tracer.uninstall()


def test_http_server_every_request_counted_unsampled_too(http_service: HttpServer) -> None:
    tracer.install(reporter=reporters.create("memory"), sample_rate=0.0, memory_watch=False)
    for i in range(7):
        assert get(f"{http_service.url}/a/{i}") == 200
    for _ in range(3):
        assert get(f"{http_service.url}/status/503") == 503
    text = settled(f"{SERVER}_count", 10)
    assert total(text, f"{SERVER}_count", http_response_status_code="200") == 7
    assert total(text, f"{SERVER}_count", http_response_status_code="503") == 3
    assert tracer.stats()["created"] == 3  # only the failed ones were kept as traces


def test_http_server_route_bounded_whatever_the_paths(
    traced: MemoryReporter, http_service: HttpServer
) -> None:
    for i in range(40):
        get(f"{http_service.url}/random/{i}/x{i * 7}?q={i}")
    text = settled(f"{SERVER}_count", 40)
    routes = {labels["http_route"] for labels, _ in samples(text, f"{SERVER}_count")}
    assert routes == {"_OTHER"}
    assert total(text, f"{SERVER}_count") == 40


def test_http_server_route_set_by_the_application(traced: MemoryReporter) -> None:
    class Routed(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            span = tracer.current_span()
            assert span is not None
            span.route = "/items/{id}"
            self.send_response(204)
            self.end_headers()

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Routed)
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    try:
        for i in range(3):
            get(f"http://127.0.0.1:{httpd.server_address[1]}/items/{i}")
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert total(settled(f"{SERVER}_count", 3), f"{SERVER}_count", http_route="/items/{id}") == 3


def test_recorded_duration_is_the_span_duration(
    traced: MemoryReporter, http_service: HttpServer
) -> None:
    get(f"{http_service.url}/sleep/30")
    (span,) = [s for s in traced.wait_for(1) if s["kind"] == "server"]
    text = local_text()
    assert total(text, f"{SERVER}_sum") == span["duration_us"] / 1e6
    # 30 ms and more lands above the 0.025 bucket.
    assert total(text, f"{SERVER}_bucket", le="0.025") == 0
    assert total(text, f"{SERVER}_bucket", le="+Inf") == 1


def test_aiohttp_routes_and_unmatched(traced: MemoryReporter, aio_service: AioService) -> None:
    for i in range(4):
        assert get(f"{aio_service.url}/users/{i}") == 200
    assert get(f"{aio_service.url}/status/404") == 404
    for i in range(5):
        assert get(f"{aio_service.url}/no/such/{i}") == 404
    settled(f"{SERVER}_count", 10)
    text = scrape(f"{aio_service.url}/metrics")
    assert total(text, f"{SERVER}_count", http_route="/users/{id}") == 4
    assert total(text, f"{SERVER}_count", http_route="/status/{code}") == 1
    assert total(text, f"{SERVER}_count", http_route="_OTHER") == 5
    (labels, _), *_ = samples(text, f"{SERVER}_count")
    assert set(labels) == {
        "http_request_method",
        "http_route",
        "http_response_status_code",
        "url_scheme",
    }
    assert {labels["url_scheme"] for labels, _ in samples(text, f"{SERVER}_count")} == {"http"}


def test_active_requests_while_a_request_is_served(traced: MemoryReporter) -> None:
    entered = threading.Event()
    release = threading.Event()

    class Blocking(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            entered.set()
            release.wait(10)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Blocking)
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/"
    caller = threading.Thread(target=get, args=(url,))
    caller.start()
    try:
        assert entered.wait(10)
        assert total(local_text(), "http_server_active_requests") == 1
    finally:
        release.set()
        caller.join(10)
        httpd.shutdown()
        httpd.server_close()
    text = settled(f"{SERVER}_count", 1)
    assert total(text, "http_server_active_requests") == 0
    assert total(text, f"{SERVER}_count") == 1


def test_requests_client_metrics_and_network_error(
    traced: MemoryReporter, http_service: HttpServer
) -> None:
    with requests.Session() as session:
        for _ in range(3):
            assert session.get(f"{http_service.url}/x").status_code == 200
        with refused_port() as port:
            with pytest.raises(requests.ConnectionError):
                session.get(f"http://127.0.0.1:{port}/down")
    text = settled(f"{CLIENT}_count", 4)
    ok = total(
        text,
        f"{CLIENT}_count",
        server_address="127.0.0.1",
        server_port=str(http_service.port),
        http_response_status_code="200",
        http_request_method="GET",
    )
    assert ok == 3
    # A request that got its answer has no error_type label (OpenTelemetry's rule).
    answered = [
        labels for labels, _ in samples(text, f"{CLIENT}_count") if "error_type" not in labels
    ]
    assert sum(1 for labels in answered if labels.get("http_response_status_code") == "200") == 1
    failed = [labels for labels, _ in samples(text, f"{CLIENT}_count") if "error_type" in labels]
    assert len(failed) == 1
    assert failed[0]["error_type"] == "network-error"
    assert failed[0]["server_port"] == str(port)
    assert failed[0].get("http_response_status_code", "") == ""


def test_aiohttp_client_metrics(traced: MemoryReporter, aio_service: AioService) -> None:
    import asyncio

    import aiohttp

    async def calls() -> None:
        async with aiohttp.ClientSession() as session:
            for i in range(2):
                async with session.get(f"{aio_service.url}/users/{i}") as response:
                    await response.read()

    asyncio.run(calls())
    text = settled(f"{CLIENT}_count", 2)
    assert (
        total(
            text,
            f"{CLIENT}_count",
            server_port=str(aio_service.port),
            http_response_status_code="200",
        )
        == 2
    )


def lag_shows(service: AioService) -> bool:
    def lagging() -> bool:
        # Keep the loop busy: the probe due meanwhile runs late.
        service.loop.call_soon_threadsafe(time.sleep, 0.2)
        lags = samples(local_text(), "python_asyncio_event_loop_lag_seconds")
        return any(v >= 0.1 for _, v in lags)

    # One busy spell at a time: a step shorter than the sleep would queue them up.
    return bool(wait_until(lagging, timeout=10, step=0.3))


def test_loop_running_before_install_is_watched_from_its_requests(
    aio_service: AioService, traced: MemoryReporter
) -> None:
    assert not samples(local_text(), "python_asyncio_event_loop_lag_seconds")
    assert get(f"{aio_service.url}/users/1") == 200
    settled(f"{SERVER}_count", 1)
    assert lag_shows(aio_service)


def test_gc_pauses_threads_and_loop_lag(traced: MemoryReporter, aio_service: AioService) -> None:
    before = total(local_text(), "python_gc_pause_seconds_count", generation="2")
    gc.collect()
    assert total(local_text(), "python_gc_pause_seconds_count", generation="2") == before + 1
    assert total(local_text(), "python_threads") >= 2
    # The service's loop started after install: watched from its start, before any request.
    assert lag_shows(aio_service)


def test_health_metrics_follow_stats(traced: MemoryReporter, http_service: HttpServer) -> None:
    for _ in range(4):
        get(f"{http_service.url}/h")
    settled(f"{SERVER}_count", 4)
    assert tracer.flush(5)
    stats = tracer.stats()
    text = local_text()
    assert total(text, "tracer_spans_created_total") == stats["created"] == 4
    assert total(text, "tracer_spans_delivered_total") == stats["delivered"] == 4
    assert total(text, "tracer_spans_dropped_total") == 0
    assert total(text, "tracer_spans_pending") == 0


def test_uninstall_leaves_nothing(http_service: HttpServer) -> None:
    callbacks = list(gc.callbacks)
    threads = set(threading.enumerate())
    tracer.install(reporter=reporters.create("memory"), metrics_port=0, memory_watch=False)
    port = tracer.metrics.metrics_port()
    assert port is not None
    assert total(scrape(f"http://127.0.0.1:{port}/metrics"), "process_cpu_seconds_total") > 0
    get(f"{http_service.url}/x")
    tracer.uninstall()
    assert gc.callbacks == callbacks
    assert wait_until(
        lambda: not {t.name for t in set(threading.enumerate()) - threads} & {"tracer-metrics"},
        timeout=5,
    )
    with pytest.raises(OSError):
        scrape(f"http://127.0.0.1:{port}/metrics")
    assert list(tracer.metrics.registry().collect()) == []


def test_metrics_false_installs_nothing(http_service: HttpServer) -> None:
    callbacks = list(gc.callbacks)
    tracer.install(reporter=reporters.create("memory"), metrics=False, memory_watch=False)
    get(f"{http_service.url}/x")
    assert gc.callbacks == callbacks
    assert list(tracer.metrics.registry().collect()) == []
    assert not any(t.name == "tracer-metrics" for t in threading.enumerate())


def test_a_port_in_use_is_a_warning_not_a_failure(
    http_service: HttpServer, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        tracer.install(reporter=reporters.create("memory"), metrics_port=port, memory_watch=False)
        assert tracer.metrics.metrics_port() is None
        assert "cannot serve metrics" in caplog.text
        assert get(f"{http_service.url}/x") == 200
        assert total(settled(f"{SERVER}_count", 1), f"{SERVER}_count") == 1


def test_wsgi_app_and_added_collectors(traced: MemoryReporter) -> None:
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from prometheus_client.core import GaugeMetricFamily

    class Mine:
        def collect(self) -> Iterator[GaugeMetricFamily]:
            yield GaugeMetricFamily("my_queue_depth", "Items waiting.", value=3)

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    mine = Mine()
    tracer.metrics.add_collector(mine)
    httpd = make_server("127.0.0.1", 0, tracer.metrics.wsgi_app(), handler_class=Quiet)
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    try:
        text = scrape(f"http://127.0.0.1:{httpd.server_address[1]}/metrics")
        assert total(text, "my_queue_depth") == 3
        assert samples(text, "process_resident_memory_bytes")
        tracer.metrics.remove_collector(mine)
        tracer.metrics.remove_collector(mine)  # a second time is ignored
        assert not samples(local_text(), "my_queue_depth")
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_forked_child_counts_its_own_requests_only(
    traced: MemoryReporter, http_service: HttpServer
) -> None:
    for _ in range(3):
        get(f"{http_service.url}/parent")
    settled(f"{SERVER}_count", 3)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read)
            before = total(local_text(), f"{SERVER}_count")
            os.write(write, str(before).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child_saw = pipe.read()
    os.waitpid(pid, 0)
    assert float(child_saw) == 0
    assert total(local_text(), f"{SERVER}_count") == 3


def test_invented_methods_count_as_other_and_make_no_series(
    traced: MemoryReporter, http_service: HttpServer
) -> None:
    for i in range(30):
        with socket.create_connection(("127.0.0.1", http_service.port), timeout=10) as conn:
            conn.sendall(f"M{i}THOD /x HTTP/1.0\r\n\r\n".encode())
            while conn.recv(65536):
                pass
    text = settled(f"{SERVER}_count", 30)
    methods = {labels["http_request_method"] for labels, _ in samples(text, f"{SERVER}_count")}
    assert methods == {"_OTHER"}
    assert total(text, f"{SERVER}_count", http_response_status_code="501") == 30
    from tracer.metrics import _state

    assert _state is not None and len(_state.recorder.server) == 1
