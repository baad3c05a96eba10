"""A real Prometheus scrapes a traced aiohttp service and a traced http.server service."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.metrics.conftest import Prometheus, need
from tests.metrics.helpers import get, wait_until

COUNT = "http_server_request_duration_seconds_count"
BUCKET = "http_server_request_duration_seconds_bucket"


def test_prometheus_reads_both_services(
    tmp_path: Path, service_factory: Callable[..., Any]
) -> None:
    need("prometheus")
    aio = service_factory("aiohttp")
    plain = service_factory("http-server")
    prometheus = Prometheus(
        tmp_path, {"aiohttp": f"127.0.0.1:{aio.port}", "http_server": f"127.0.0.1:{plain.port}"}
    )
    try:
        sent = {
            "aiohttp": {"200": 0, "404": 0, "500": 0},
            "http_server": {"200": 0, "404": 0, "500": 0},
        }
        for job, service, ok_path in (
            ("aiohttp", aio, "/users/7"),
            ("http_server", plain, "/plain"),
        ):
            for _ in range(6):
                assert get(service.url + ok_path) == 200
                sent[job]["200"] += 1
            for _ in range(3):
                assert get(service.url + "/status/404") == 404
                sent[job]["404"] += 1
            for _ in range(2):
                assert get(service.url + "/status/500") == 500
                sent[job]["500"] += 1
            # A handler that sleeps 300 ms: its 95th percentile lies in the (0.25, 0.5] bucket.
            # rate() counts increases between scrapes: one request makes the series, which
            # Prometheus must have seen before the others come.
            assert get(service.url + "/sleep/300") == 200
            sent[job]["200"] += 1
        for job, service in (("aiohttp", aio), ("http_server", plain)):
            assert wait_until(
                lambda job=job: prometheus.query(  # type: ignore[misc]
                    f'{COUNT}{{job="{job}", http_route="/sleep/{{ms}}"}}'
                ),
                timeout=30,
            )
            for _ in range(4):
                assert get(service.url + "/sleep/300") == 200
                sent[job]["200"] += 1
        # The scrapes of /metrics are requests too, told apart by their route.
        expected = {job: sum(codes.values()) for job, codes in sent.items()}

        def counted(job: str) -> bool:
            value = prometheus.value(f'sum({COUNT}{{job="{job}", http_route!="/metrics"}})')
            return value is not None and value >= expected[job]

        for job in ("aiohttp", "http_server"):
            assert wait_until(lambda job=job: counted(job), timeout=30), prometheus.query(COUNT)
            by_status = prometheus.by(
                f"sum by (http_response_status_code)"
                f' ({COUNT}{{job="{job}", http_route!="/metrics"}})',
                "http_response_status_code",
            )
            assert by_status == {code: float(n) for code, n in sent[job].items()}, job
        # http.server has no router: what its handler does not name counts under the
        # bounded fallback route.
        assert prometheus.value(f'sum({COUNT}{{job="http_server", http_route="_OTHER"}})') == 6

        for job in ("aiohttp", "http_server"):
            expr = (
                f'histogram_quantile(0.95, sum by (le) (rate({BUCKET}{{job="{job}",'
                f' http_route="/sleep/{{ms}}"}}[1m])))'
            )

            def quantile(expr: str = expr) -> float | None:
                value = prometheus.value(expr)
                return value if value is not None and value == value else None  # not NaN

            q = wait_until(quantile, timeout=30)
            assert q is not None and 0.25 < q <= 0.5, (job, q)
            for name in (
                "process_cpu_seconds_total",
                "process_resident_memory_bytes",
                "process_open_fds",
                "python_gc_collections_total",
                "python_gc_pause_seconds_count",
                "tracer_spans_created_total",
            ):
                assert prometheus.query(f'{name}{{job="{job}"}}'), (job, name)
    finally:
        prometheus.close()
