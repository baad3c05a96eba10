"""The metrics body, built from a prometheus-client registry filled by hand with the request
metrics' names: deltas per interval, status classes, percentiles estimated as Prometheus'
histogram_quantile does, counter resets, a forked child's baseline, the cumulative part, its
stable shape; and the stdout reporter's readable form of a batch."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from reporters.stdout import StdoutReporter
from tests.delivery.helpers import Outcomes
from tracer.metrics import report
from tracer.reporters import metrics_text

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
SERVER_LABELS = ["http_request_method", "http_route", "http_response_status_code", "url_scheme"]
CLIENT_LABELS = [
    "http_request_method",
    "server_address",
    "server_port",
    "http_response_status_code",
    "error_type",
]


class Registry:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.server = Histogram(
            "http_server_request_duration_seconds", "s", SERVER_LABELS, buckets=BUCKETS, registry=r
        )
        self.client = Histogram(
            "http_client_request_duration_seconds", "c", CLIENT_LABELS, buckets=BUCKETS, registry=r
        )
        self.active = Gauge("http_server_active_requests", "a", registry=r)
        self.cpu = Counter("process_cpu_seconds", "cpu", registry=r)
        self.rss = Gauge("process_resident_memory_bytes", "rss", registry=r)
        self.gc = Counter("python_gc_collections", "gc", ["generation"], registry=r)
        self.pause = Histogram(
            "python_gc_pause_seconds", "p", ["generation"], buckets=(0.001, 0.01), registry=r
        )
        self.lag = Gauge("python_asyncio_event_loop_lag_seconds", "lag", ["thread"], registry=r)
        self.threads = Gauge("python_threads", "t", registry=r)

    def snap(self, at: float) -> report.Snapshot:
        return report.snapshot(self.registry, at)


def test_quantiles_as_histogram_quantile_estimates_them() -> None:
    bounds = [0.1, 0.5, 1.0]
    counts = [10.0, 20.0, 30.0, 30.0]
    assert report.quantile(0.5, bounds, counts) == pytest.approx(0.3)
    assert report.quantile(0.99, bounds, counts) == pytest.approx(0.985)
    assert report.quantile(0.05, bounds, counts) == pytest.approx(0.015)
    # A rank in the +Inf bucket gives the highest finite bound.
    assert report.quantile(0.9, bounds, [10.0, 20.0, 30.0, 40.0]) == 1.0
    assert report.quantile(0.5, bounds, [0.0, 0.0, 0.0, 0.0]) is None


def test_one_interval_counted_by_status_class_and_route() -> None:
    r = Registry()
    r.server.labels("GET", "/old", "200", "http").observe(0.02)  # before the interval
    r.cpu.inc(2.0)
    r.gc.labels("0").inc(10)
    base = r.snap(1000.0)
    for _ in range(8):
        r.server.labels("GET", "/users/{id}", "200", "http").observe(0.02)
    r.server.labels("GET", "/users/{id}", "404", "http").observe(0.003)
    r.server.labels("POST", "/orders", "503", "https").observe(0.4)
    r.server.labels("GET", "/old", "301", "http").observe(0.001)
    r.client.labels("GET", "db", "5432", "", "ConnectionRefusedError").observe(0.001)
    r.client.labels("GET", "db", "5432", "200", "").observe(0.002)
    r.active.set(3)
    r.cpu.inc(0.5)
    r.rss.set(50 * 2**20)
    r.gc.labels("0").inc(4)
    r.gc.labels("2").inc(1)
    r.pause.labels("0").observe(0.0005)
    r.pause.labels("2").observe(0.02)
    r.lag.labels("MainThread").set(0.004)
    r.lag.labels("worker").set(0.012)
    r.threads.set(5)
    body = report.build_body(r.snap(1030.0), base, 1000.0)
    assert body["schema"] == report.SCHEMA_VERSION
    assert body["interval"] == {
        "start_us": 1_000_000_000,
        "end_us": 1_030_000_000,
        "seconds": 30.0,
    }
    server = body["server"]
    assert server["requests"] == 11
    assert server["requests_by_class"] == {"2xx": 8, "3xx": 1, "4xx": 1, "5xx": 1, "other": 0}
    # Per minute: the interval is half a minute.
    assert server["rpm"] == 22.0
    assert server["rpm_by_class"]["2xx"] == 16.0
    assert server["active_requests"] == 3
    rows = {(row["method"], row["route"]): row for row in server["routes"]}
    users = rows[("GET", "/users/{id}")]
    assert users["requests"] == 9
    # 8 of 9 in (10 ms, 25 ms]: the median is interpolated inside that bucket.
    assert 10.0 < users["p50_ms"] <= 25.0
    assert users["mean_ms"] == pytest.approx((8 * 20 + 3) / 9, abs=1e-3)
    assert rows[("POST", "/orders")]["p99_ms"] == pytest.approx(250 + 250 * 0.99, abs=1e-6)
    assert server["routes"][0]["route"] == "/users/{id}"  # the busiest first
    client = body["client"]
    assert client["requests"] == 2
    assert client["requests_by_class"]["error"] == 1
    assert client["errors_by_type"] == {"ConnectionRefusedError": 1}
    assert client["targets"][0]["server_address"] == "db"
    assert body["cpu"] == {"seconds": 0.5, "percent": pytest.approx(100 * 0.5 / 30, abs=0.01)}
    assert body["memory"] == {"rss_bytes": 50 * 2**20}
    assert body["gc"]["collections"] == {"0": 4, "1": 0, "2": 1}
    assert body["gc"]["pause_ms"]["2"] == pytest.approx(20.0)
    assert body["gc"]["pause_ms_total"] == pytest.approx(20.5)
    assert body["event_loop_lag"] == {
        "loops": 2,
        "max_ms": 12.0,
        "by_thread": {"MainThread": 4.0, "worker": 12.0},
    }
    assert body["threads"] == 5
    json.dumps(body, allow_nan=False)  # plain JSON, nothing else


def test_the_body_shape_is_stable() -> None:
    r = Registry()
    body = report.build_body(r.snap(2.0), r.snap(1.0), 1.0)
    assert set(body) == {
        "schema",
        "interval",
        "server",
        "client",
        "cpu",
        "memory",
        "gc",
        "event_loop_lag",
        "threads",
        "cumulative",
    }
    assert set(body["server"]) == {
        "requests",
        "rpm",
        "requests_by_class",
        "rpm_by_class",
        "omitted",
        "routes",
        "active_requests",
    }
    assert set(body["client"]) == {
        "requests",
        "rpm",
        "requests_by_class",
        "rpm_by_class",
        "omitted",
        "targets",
    }
    assert set(body["cumulative"]) == {"start_us", "time_us", "families"}


def test_the_cumulative_part_is_the_registry_as_it_is() -> None:
    r = Registry()
    r.server.labels("GET", "/", "200", "http").observe(0.02)
    r.server.labels("GET", "/", "200", "http").observe(20.0)  # past the last bound: +Inf
    base = r.snap(1.0)
    r.server.labels("GET", "/", "200", "http").observe(0.3)
    body = report.build_body(r.snap(2.0), base, 0.5)
    assert body["server"]["requests"] == 1
    families = {f["name"]: f for f in body["cumulative"]["families"]}
    hist = families["http_server_request_duration_seconds"]
    assert hist["type"] == "histogram"
    (series,) = hist["series"]
    assert series["labels"] == {
        "http_request_method": "GET",
        "http_route": "/",
        "http_response_status_code": "200",
        "url_scheme": "http",
    }
    assert series["bounds"] == list(BUCKETS)
    assert series["count"] == 3
    assert series["sum"] == pytest.approx(20.32)
    counts = series["bucket_counts"]
    assert len(counts) == len(BUCKETS) + 1 and sum(counts) == 3
    assert counts[2] == counts[7] == counts[-1] == 1
    assert families["process_cpu_seconds"]["type"] == "counter"
    assert families["http_server_active_requests"]["type"] == "gauge"


def test_a_counter_that_went_down_was_reset_and_counts_from_zero() -> None:
    r = Registry()
    for _ in range(5):
        r.server.labels("GET", "/", "200", "http").observe(0.02)
    r.cpu.inc(5)
    before = r.snap(1.0)
    fresh = Registry()  # a new process: its own counts, from zero
    fresh.server.labels("GET", "/", "200", "http").observe(0.02)
    fresh.cpu.inc(1)
    body = report.build_body(fresh.snap(2.0), before, 1.0)
    assert body["server"]["requests"] == 1
    assert body["cpu"]["seconds"] == 1.0


def test_a_forked_childs_baseline() -> None:
    parent = Registry()
    for _ in range(5):
        parent.server.labels("GET", "/", "200", "http").observe(0.02)
    parent.gc.labels("0").inc(100)
    parent.cpu.inc(10)
    last = parent.snap(1.0)
    # What the child reads first: its recorder started afresh and already counted one request,
    # its CPU time restarted, its garbage-collector counts are the parent's.
    child = Registry()
    child.server.labels("GET", "/", "404", "http").observe(0.02)
    child.gc.labels("0").inc(103)
    child.cpu.inc(0.1)
    base = report._rebased(child.snap(2.0), last)
    child.server.labels("GET", "/", "404", "http").observe(0.02)
    child.gc.labels("0").inc(2)
    child.cpu.inc(0.2)
    body = report.build_body(child.snap(3.0), base, 2.0)
    assert body["server"]["requests"] == 2
    assert body["gc"]["collections"]["0"] == 2
    assert body["cpu"]["seconds"] == pytest.approx(0.3)


def test_the_busiest_routes_are_kept() -> None:
    r = Registry()
    base = r.snap(1.0)
    for n in range(report.MAX_ROUTES + 5):
        r.server.labels("GET", f"/r{n}", "200", "http").observe(0.01)
    r.server.labels("GET", "/r0", "200", "http").observe(0.01)
    body = report.build_body(r.snap(2.0), base, 1.0)
    assert len(body["server"]["routes"]) == report.MAX_ROUTES
    assert body["server"]["omitted"] == 5
    assert body["server"]["routes"][0]["route"] == "/r0"
    assert body["server"]["requests"] == report.MAX_ROUTES + 6


def batch() -> dict[str, Any]:
    r = Registry()
    base = r.snap(1_700_000_000.0)
    for _ in range(30):
        r.server.labels("GET", "/users/{id}", "200", "http").observe(0.02)
    r.server.labels("POST", "/orders", "500", "http").observe(0.3)
    r.client.labels("GET", "db", "5432", "200", "").observe(0.002)
    r.cpu.inc(1.2)
    r.rss.set(48 * 2**20)
    r.gc.labels("0").inc(7)
    r.pause.labels("0").observe(0.0004)
    r.lag.labels("MainThread").set(0.0031)
    body = report.build_body(r.snap(1_700_000_060.0), base, 1_700_000_000.0)
    return {"service": "shop", "host": "web-1", "pid": 4242, "sent_at_us": 1, "metrics": body}


def test_the_readable_form() -> None:
    text = metrics_text.render(batch())
    lines = text.splitlines()
    assert lines[0] == "metrics shop pid 4242  22:13:20-22:14:20 UTC (60.0 s)"
    assert lines[1].split() == [
        "server", "31.0", "rpm", "2xx", "30.0", "3xx", "0.0", "4xx", "0.0", "5xx", "1.0",
    ]  # fmt: skip
    assert lines[2].split()[:3] == ["client", "1.0", "rpm"]
    assert "server routes" in lines[3]
    users = next(line for line in lines if "/users/{id}" in line)
    assert users.split()[:4] == ["GET", "/users/{id}", "30", "req"]
    assert "p50" in users and "p95" in users and "p99" in users
    orders = next(line for line in lines if "/orders" in line)
    # The columns line up: p50 starts at the same place on each route's line.
    assert users.index("p50") == orders.index("p50")
    assert any(line.split()[:3] == ["cpu", "2.0", "%"] for line in lines)
    assert any(line.split() == ["rss", "48.0", "MiB"] for line in lines)
    assert any(line.split()[:2] == ["gc", "gen0"] for line in lines)
    assert lines[-1].split() == ["loop", "lag", "3.1", "ms"]
    # An odd body prints what it can, never raises.
    assert metrics_text.render({"metrics": {"server": "?", "cpu": None}}).startswith("metrics ?")


def test_the_stdout_reporter_prints_a_batch() -> None:
    pretty = io.StringIO()
    outcomes = Outcomes()
    StdoutReporter(format="pretty", stream=pretty).send(batch(), outcomes)
    assert outcomes.only is None
    assert pretty.getvalue() == metrics_text.render(batch()) + "\n"
    plain = io.StringIO()
    StdoutReporter(format="json", stream=plain).send(batch(), Outcomes())
    (line,) = plain.getvalue().splitlines()
    assert json.loads(line)["metrics"]["server"]["requests"] == 31
