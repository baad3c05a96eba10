"""The viewer's store under load: ``python -m benchmarks.serve_store [--spans N] [--queries N]``.

Generates realistic traces (a web front end calling three of five services over HTTP, each
answering with database calls; 5 to 30 spans a trace, one trace in thirty failing) as tracer
records them, and measures, on a fresh file:

* ingest: spans/s through ``Store.add`` of one batch per service and trace group (a trace
  reaches the store in several batches, as it does from several processes), and, when
  ``tracer.serve.ingest`` is there, through ``decode_otlp_traces`` of the same batches encoded
  as OTLP protobuf by tracer's own encoder;
* size: the file's pages in use against the summed OTLP protobuf size of the same spans;
* search: p50/p95 over a mix of queries (service, service and operation, minimum duration,
  errors, a tag, a time range, each with ``limit=20``) over everything stored, while a thread
  keeps adding spans.

Prints one line per figure and the whole as JSON on the last line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

from tracer.serve.model import Decoded
from tracer.serve.store import Store

SERVICES = ("orders", "users", "payments", "inventory", "search")
ROUTES = {
    "web": ("/", "/orders/<int:id>", "/cart", "/checkout", "/search"),
    "orders": ("/api/orders/<id>", "/api/orders"),
    "users": ("/api/users/<id>",),
    "payments": ("/api/charge", "/api/refund"),
    "inventory": ("/api/stock/<sku>",),
    "search": ("/api/q",),
}
TABLES = ("orders", "users", "items", "payments", "stock", "sessions")
HOSTS = {s: f"{s}-{i}" for i, s in enumerate(("web", *SERVICES))}
PIDS = {s: 4000 + 17 * i for i, s in enumerate(("web", *SERVICES))}


def _hex(rng: random.Random, size: int) -> str:
    return rng.getrandbits(size * 8).to_bytes(size, "big").hex()


def _span(
    rng: random.Random,
    trace_id: str,
    parent: str | None,
    kind: str,
    service: str,
    name: str,
    start: int,
    duration: int,
) -> dict[str, Any]:
    events = (
        [{"type": "sr", "time_us": start}, {"type": "ss", "time_us": start + duration}]
        if kind == "server"
        else [{"type": "cs", "time_us": start}, {"type": "cr", "time_us": start + duration}]
    )
    return {
        "trace_id": trace_id,
        "request_id": trace_id,
        "span_id": _hex(rng, 8),
        "parent_id": parent,
        "kind": kind,
        "name": name,
        "service": service,
        "host": HOSTS[service],
        "pid": PIDS[service],
        "start_us": start,
        "duration_us": duration,
        "events": events,
        "http": None,
        "error": None,
        "annotations": [],
        "tags": {},
        "sampled": True,
        "must_collect": False,
        "tracestate": None,
    }


def make_trace(rng: random.Random, start: int) -> list[dict[str, Any]]:
    """One trace: the web front end's server span, calls to services, their database calls."""
    trace_id = _hex(rng, 16)
    failing = rng.random() < 1 / 30
    route = rng.choice(ROUTES["web"])
    path = route.replace("<int:id>", str(rng.randrange(1, 10**6)))
    total = rng.randrange(20_000, 400_000)
    root = _span(rng, trace_id, None, "server", "web", f"GET {path}", start, total)
    root["http"] = {
        "method": "GET",
        "url": f"http://web:8000{path}?ref={rng.randrange(1000)}",
        "path": path,
        "status_code": 500 if failing else 200,
        "route": route,
    }
    root["tags"] = {"customer": str(rng.randrange(10_000))}
    spans = [root]
    budget = rng.randrange(5, 31) - 1
    at = start + 200
    callees = rng.sample(SERVICES, k=rng.randrange(1, 4))
    for i, callee in enumerate(callees):
        if budget < 2:
            break
        croute = rng.choice(ROUTES[callee])
        cpath = croute.replace("<id>", str(rng.randrange(10**6))).replace(
            "<sku>", f"SKU{rng.randrange(10**5)}"
        )
        cdur = rng.randrange(2_000, max(2_001, total // (len(callees) + 1)))
        url = f"http://{callee}:8080{cpath}"
        client = _span(
            rng, trace_id, root["span_id"], "client", "web", f"GET {callee}:8080{cpath}", at, cdur
        )
        status = 500 if failing and i == len(callees) - 1 else 200
        client["http"] = {
            "method": "GET",
            "url": url,
            "path": cpath,
            "status_code": status,
            "route": None,
        }
        server = _span(
            rng, trace_id, client["span_id"], "server", callee, f"GET {cpath}", at + 300, cdur - 600
        )
        server["http"] = {
            "method": "GET",
            "url": url,
            "path": cpath,
            "status_code": status,
            "route": croute,
        }
        server["tags"] = {"parent_service": "web"}
        budget -= 2
        spans += [client, server]
        queries = rng.randrange(1, 6) if i < len(callees) - 1 else budget
        qat = at + 500
        for _ in range(min(queries, budget)):
            table = rng.choice(TABLES)
            qdur = rng.randrange(100, 5_000)
            db = _span(
                rng, trace_id, server["span_id"], "client", callee, f"SELECT {table}", qat, qdur
            )
            db["db"] = {
                "db.system.name": "postgresql",
                "db.namespace": "shop",
                "db.operation.name": "SELECT",
                "db.collection.name": table,
                "db.query.text": f"SELECT id, name, total FROM {table} WHERE id = ? AND state = ?",
                "server.address": "db",
                "server.port": 5432,
            }
            qat += qdur + 50
            budget -= 1
            spans.append(db)
        if status == 500:
            server["error"] = {
                "type": "RuntimeError",
                "message": "payment gateway timed out",
                "stack": 'Traceback (most recent call last):\n  File "app.py", line 41, in charge\n'
                "    raise RuntimeError('payment gateway timed out')\nRuntimeError: payment"
                " gateway timed out\n",
            }
            client["error"] = {
                "type": "HTTPError",
                "message": "500 Internal Server Error",
                "stack": "",
            }
            root["error"] = {"type": "HTTPError", "message": "500 from " + callee, "stack": ""}
        at += cdur + 100
    return spans


def batches(count: int, seed: int = 7, start: int | None = None) -> Iterator[list[dict[str, Any]]]:
    """Batches of about 200 spans, as the services send them: each batch holds the spans of one
    service for a group of traces, so every trace arrives in several batches."""
    rng = random.Random(seed)
    at = start if start is not None else int(time.time() * 1e6) - 3_600_000_000
    made = 0
    while made < count:
        group: dict[str, list[dict[str, Any]]] = {}
        in_group = 0
        while in_group < 200 * len(SERVICES) // 2 and made + in_group < count:
            at += rng.randrange(1_000, 60_000)
            for span in make_trace(rng, at):
                group.setdefault(span["service"], []).append(span)
                in_group += 1
        made += in_group
        yield from group.values()


def _otlp(spans: list[dict[str, Any]]) -> bytes:
    from tracer.reporters import otlp_encode

    groups, _ = otlp_encode.prepare({"spans": spans}, {})
    return otlp_encode.to_protobuf(groups)


def _ingest(store: Store, all_batches: list[list[dict[str, Any]]]) -> tuple[float, float]:
    """Wall and CPU seconds (this thread's) of adding every batch."""
    begin, cpu = time.perf_counter(), time.thread_time()
    for batch in all_batches:
        store.add(Decoded(spans=batch))
    return time.perf_counter() - begin, time.thread_time() - cpu


def _p95(ordered: list[float]) -> float:
    """The 95th percentile of sorted figures (nearest rank)."""
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


def _queries(rng: random.Random, low: int, high: int) -> Iterator[tuple[str, dict[str, Any]]]:
    while True:
        callee = rng.choice(SERVICES)
        yield "service", {"service": callee}
        yield "service+operation", {"service": "web", "operation": "GET /cart"}
        yield "min duration", {"min_duration_us": 350_000}
        yield "errors", {"errors": True}
        yield "tag", {"tags": [("customer", str(rng.randrange(10_000)))]}
        yield "tag http", {"tags": [("http.status_code", "500")], "service": callee}
        begin = rng.randrange(low, high)
        yield "time range", {"start_us": begin, "end_us": begin + 60_000_000}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=200_000)
    parser.add_argument("--queries", type=int, default=140)
    parser.add_argument("--db", help="the file to fill (default: a temporary one)")
    args = parser.parse_args(argv)

    folder = tempfile.mkdtemp(prefix="serve-store-")
    path = args.db or os.path.join(folder, "serve.db")
    print(f"generating {args.spans:,} spans ...", flush=True)
    all_batches = list(batches(args.spans))
    spans = sum(len(b) for b in all_batches)
    otlp_bytes = [_otlp(b) for b in all_batches]
    otlp_size = sum(len(b) for b in otlp_bytes)
    results: dict[str, Any] = {"spans": spans, "otlp_bytes": otlp_size}

    store = Store(path, max_size=1 << 40)
    seconds, cpu = _ingest(store, all_batches)
    results["ingest_spans_per_s"] = round(spans / seconds)
    results["ingest_spans_per_cpu_s"] = round(spans / cpu)
    print(
        f"ingest through Store.add: {spans / seconds:,.0f} spans/s ({seconds:.1f} s),"
        f" {spans / cpu:,.0f} spans per CPU second",
        flush=True,
    )
    stats = store.stats()
    results["store_bytes"] = stats["bytes"]
    results["size_ratio"] = round(stats["bytes"] / otlp_size, 3)
    print(
        f"size: {stats['bytes']:,} bytes in use for {stats['traces']:,} traces, OTLP protobuf"
        f" {otlp_size:,} bytes: {stats['bytes'] / otlp_size:.2f}x",
        flush=True,
    )

    try:
        from tracer.serve.ingest import decode_otlp_traces
    except ImportError:
        decode_otlp_traces = None  # type: ignore[assignment]
    if decode_otlp_traces is not None:
        otlp_store = Store(os.path.join(folder, "otlp.db"), max_size=1 << 40)
        # The first 200,000 spans are enough for a rate.
        bodies, taken = [], 0
        for body, batch in zip(otlp_bytes, all_batches, strict=True):
            if taken >= 200_000:
                break
            bodies.append(body)
            taken += len(batch)
        begin, cpu = time.perf_counter(), time.thread_time()
        for body in bodies:
            otlp_store.add(decode_otlp_traces(body, "application/x-protobuf"))
        seconds, cpu = time.perf_counter() - begin, time.thread_time() - cpu
        otlp_store.close()
        results["ingest_otlp_spans_per_s"] = round(taken / seconds)
        results["ingest_otlp_spans_per_cpu_s"] = round(taken / cpu)
        print(
            f"ingest through decode_otlp_traces + Store.add: {taken / seconds:,.0f} spans/s,"
            f" {taken / cpu:,.0f} spans per CPU second",
            flush=True,
        )
    # Search while a writer keeps adding (fresh traces, after the stored ones).
    stop = threading.Event()
    extra = list(batches(min(spans, 200_000), seed=11))
    added = [0, 0.0]

    def writer() -> None:
        begin = time.perf_counter()
        for batch in extra:
            if stop.is_set():
                break
            if decode_otlp_traces is not None:
                decoded = decode_otlp_traces(_otlp(batch), "application/x-protobuf")
            else:
                decoded = Decoded(spans=batch)
            store.add(decoded)
            added[0] += len(batch)
        added[1] = time.perf_counter() - begin

    with store._read() as conn:  # the stored range of time, for the time-range queries
        low, high = conn.execute("SELECT min(start_us), max(start_us) FROM traces").fetchone()
    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    rng = random.Random(3)
    times: dict[str, list[float]] = {}
    gen = _queries(rng, low, high)
    for _ in range(args.queries):
        label, query = next(gen)
        begin = time.perf_counter()
        store.search(limit=20, **query)
        times.setdefault(label, []).append((time.perf_counter() - begin) * 1000)
    stop.set()
    thread.join()
    every = sorted(t for ts in times.values() for t in ts)
    p95_all = _p95(every)
    results["search_p50_ms"] = round(statistics.median(every), 1)
    results["search_p95_ms"] = round(p95_all, 1)
    results["search_by_query"] = {}
    for label, ts in times.items():
        ts.sort()
        p95 = _p95(ts)
        results["search_by_query"][label] = {
            "p50_ms": round(statistics.median(ts), 1),
            "p95_ms": round(p95, 1),
        }
        print(f"search {label:18} p50 {statistics.median(ts):7.1f} ms  p95 {p95:7.1f} ms")
    print(f"search (all)             p50 {statistics.median(every):7.1f} ms  p95 {p95_all:7.1f} ms")
    rate = added[0] / added[1] if added[1] else 0.0
    via = "decode_otlp_traces + Store.add" if decode_otlp_traces is not None else "Store.add"
    results["ingest_during_search"] = {"via": via, "spans_per_s": round(rate)}
    print(f"ingest during the searches ({via}): {rate:,.0f} spans/s", flush=True)
    store.close()
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
