"""What one metrics batch costs tracer's thread: reading the registry, building the body, and
encoding it for OTLP (protobuf and JSON) and as the JSON line of the stdout/HTTP reporters.

``python -m benchmarks.metrics_reports [--routes N] [--repeat N]``

The registry holds what a busy service's has: the request histograms with ``--routes`` routes x
2 methods x 3 status codes on the server side, 10 client targets, and prometheus-client's
process, platform and GC collectors. Each figure is the median over ``--repeat`` runs, with its
min..max, in milliseconds of CPU time on this thread; the body's size is its compact JSON. None
of it runs on the request path: it is paid once per ``metrics_interval`` (60 s by default).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from tracer.metrics import report
from tracer.reporters import otlp_metrics
from tracer.reporters.encoding import encode_json

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


def registry(routes: int) -> CollectorRegistry:
    r = CollectorRegistry()
    ProcessCollector(registry=r)
    PlatformCollector(registry=r)
    GCCollector(registry=r)
    server = Histogram(
        "http_server_request_duration_seconds",
        "Duration of HTTP server requests.",
        ["http_request_method", "http_route", "http_response_status_code", "url_scheme"],
        buckets=BUCKETS,
        registry=r,
    )
    client = Histogram(
        "http_client_request_duration_seconds",
        "Duration of HTTP client requests.",
        ["http_request_method", "server_address", "server_port", "http_response_status_code",
         "error_type"],
        buckets=BUCKETS,
        registry=r,
    )  # fmt: skip
    Gauge("http_server_active_requests", "Active requests.", registry=r).set(3)
    for n in range(routes):
        for method in ("GET", "POST"):
            for status in ("200", "404", "500"):
                server.labels(method, f"/r{n}/{{id}}", status, "http").observe(0.001 * (n + 1))
    for n in range(10):
        client.labels("GET", f"svc{n}", "8080", "200", "").observe(0.01)
    return r


def cpu_ms(work: Callable[[], Any], repeat: int) -> tuple[float, float, float]:
    times = []
    for _ in range(repeat):
        began = time.thread_time()
        work()
        times.append((time.thread_time() - began) * 1000.0)
    return statistics.median(times), min(times), max(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routes", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    r = registry(args.routes)
    snap = report.snapshot(r)
    # An empty reading a minute before: every observation is the interval's, every route a row.
    base = report.Snapshot(snap.time - 60.0)
    body = report.build_body(snap, base, base.time)
    batch = {"service": "bench", "host": "h", "pid": 1, "sent_at_us": 1, "metrics": body}
    series = sum(len(f["series"]) for f in body["cumulative"]["families"])
    rows = [
        ("read the registry", lambda: report.snapshot(r)),
        ("build the body", lambda: report.build_body(snap, base, base.time)),
        ("JSON line (stdout, http, logstash)", lambda: encode_json(batch)),
        ("OTLP protobuf", lambda: otlp_metrics.to_protobuf(batch, {})),
        ("OTLP JSON", lambda: otlp_metrics.to_json(batch, {})),
    ]
    print(
        f"{args.routes} routes, {series} series in the registry;"
        f" body {len(encode_json(body)):,} bytes of JSON"
        f" ({len(encode_json({k: v for k, v in body.items() if k != 'cumulative'})):,}"
        " without `cumulative`)"
    )
    for name, work in rows:
        median, low, high = cpu_ms(work, args.repeat)
        print(f"  {name:<36} {median:8.2f} ms  ({low:.2f}..{high:.2f})")


if __name__ == "__main__":
    main()
