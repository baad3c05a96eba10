"""One measurement of one variant, in its own process: ``python -m benchmarks.worker ROW VARIANT``.

Rows measured in-process live here (spans, the two clients, memory); servers under load live in
:mod:`benchmarks.servers`. The last line printed is ``RESULT {json}`` with the figure, the spans the
sink received and the spans the variant should have produced.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from benchmarks import db_calls, django_app, fastapi_app, flask_app
from benchmarks.common import (
    CountingReporter,
    OtelSetup,
    Setup,
    TracerSetup,
    emit,
    make_otel_exporter,
    make_setup,
    rss_bytes,
)

SPAN_NAME = "bench.op"


def span_factory(setup: Setup) -> Callable[[], AbstractContextManager[Any]]:
    """A zero-argument callable opening one span with one tag, the same work for each variant."""
    if isinstance(setup, TracerSetup):
        import tracer

        span = tracer.span
        return lambda: span(SPAN_NAME, component="bench")
    if isinstance(setup, OtelSetup):
        start = setup.provider.get_tracer("bench").start_as_current_span
        attributes = {"component": "bench"}
        return lambda: start(SPAN_NAME, attributes=attributes)
    raise ValueError("spans need a traced variant")


# Client calls timed together; a run's figure is the median of its chunks (see client_run).
CLIENT_CHUNK = 100
# Untimed calls before each chunk, so that no chunk pays for the switch before it (a fresh
# session's connection, first-call caches).
SWITCH_WARMUP = 10


def chunks(total: int, size: int) -> Iterator[int]:
    while total > 0:
        yield min(size, total)
        total -= size


def bench_span(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    """Span start + finish + enqueue, in chunks that fit the queue; flushing is not timed."""
    setup = make_setup(variant)
    new_span = span_factory(setup)
    for _ in range(args.warmup):
        with new_span():
            pass
    flushed = setup.flush()
    wall = 0.0
    cpu_start = time.process_time()
    for size in chunks(args.count, args.chunk):
        start = time.perf_counter()
        for _ in range(size):
            with new_span():
                pass
        wall += time.perf_counter() - start
        flushed = setup.flush() and flushed
    cpu = time.process_time() - cpu_start
    result = {
        "value": wall / args.count * 1e6,
        "cpu_us": cpu / args.count * 1e6,
        "spans": setup.delivered(),
        "expected": args.count + args.warmup,
        "flushed": flushed,
        "stats": setup.stats(),
        "notes": setup.notes,
    }
    setup.close()
    return result


# A client's calls: call(count, fresh) makes ``count`` calls to the upstream and returns how many
# answered 200 with the expected body; ``fresh`` asks for a new session first.
Calls = Callable[[int, bool], int]


@contextmanager
def requests_calls(url: str) -> Iterator[Calls]:
    import requests

    with requests.Session() as session:

        def call(count: int, fresh: bool) -> int:
            ok = 0
            for _ in range(count):
                response = session.get(url)
                ok += response.status_code == 200 and response.content == b"ok"
            return ok

        yield call


@contextmanager
def aiohttp_calls(url: str) -> Iterator[Calls]:
    import aiohttp

    sessions: list[aiohttp.ClientSession] = []

    async def calls(count: int, fresh: bool) -> int:
        # A new session after each switch: OpenTelemetry hooks a session as it is built.
        if fresh or not sessions:
            if sessions:
                await sessions.pop().close()
            sessions.append(aiohttp.ClientSession())
        session = sessions[0]
        ok = 0
        for _ in range(count):
            async with session.get(url) as response:
                ok += response.status == 200 and await response.read() == b"ok"
        return ok

    loop = asyncio.new_event_loop()
    try:
        yield lambda n, fresh: loop.run_until_complete(calls(n, fresh))
    finally:
        if sessions:
            loop.run_until_complete(sessions.pop().close())
        loop.close()


@contextmanager
def redis_calls(url: str) -> Iterator[Calls]:
    """One GET per call to the redis-server at ``url`` (``redis://host:port/db``)."""
    import socket
    import urllib.parse

    import redis

    client = redis.Redis.from_url(url)
    # The key is set over a socket of its own: through redis-py it would be one more span.
    where = urllib.parse.urlsplit(url)
    with socket.create_connection((where.hostname or "127.0.0.1", where.port or 6379)) as conn:
        conn.sendall(b"SET bench ok\r\n")
        assert conn.recv(16).startswith(b"+OK")

    def call(count: int, fresh: bool) -> int:
        ok = 0
        for _ in range(count):
            ok += client.get("bench") == b"ok"
        return ok

    try:
        yield call
    finally:
        client.close()


@contextmanager
def httpx_calls(url: str) -> Iterator[Calls]:
    import httpx

    clients: list[httpx.Client] = []

    def call(count: int, fresh: bool) -> int:
        # A new client after each switch: OpenTelemetry hooks a client's transport as it is built.
        if fresh or not clients:
            if clients:
                clients.pop().close()
            clients.append(httpx.Client())
        client = clients[0]
        ok = 0
        for _ in range(count):
            response = client.get(url)
            ok += response.status_code == 200 and response.content == b"ok"
        return ok

    try:
        yield call
    finally:
        if clients:
            clients.pop().close()


@contextmanager
def urllib3_calls(url: str) -> Iterator[Calls]:
    import urllib3

    with urllib3.PoolManager() as pool:

        def call(count: int, fresh: bool) -> int:
            ok = 0
            for _ in range(count):
                response = pool.request("GET", url)
                ok += response.status == 200 and response.data == b"ok"
            return ok

        yield call


@contextmanager
def urllib_calls(url: str) -> Iterator[Calls]:
    import urllib.request

    def call(count: int, fresh: bool) -> int:
        ok = 0
        for _ in range(count):
            # urlopen makes a connection per call, as an application using it does.
            with urllib.request.urlopen(url) as response:
                ok += response.status == 200 and response.read() == b"ok"
        return ok

    yield call


# The client rows' kinds -> their calls; each kind is also the name of its instrumentation.
CLIENT_CALLS: dict[str, Callable[[str], AbstractContextManager[Calls]]] = {
    "requests": requests_calls,
    "aiohttp-client": aiohttp_calls,
    "httpx": httpx_calls,
    "urllib3": urllib3_calls,
    "urllib": urllib_calls,
    "django": django_app.calls,
    "fastapi": fastapi_app.calls,
    "flask": flask_app.calls,
    "redis": redis_calls,
    "sqlite3": db_calls.sqlite3_calls,
    "psycopg": db_calls.psycopg_calls,
}


def bench_requests(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    setup = make_setup(variant, ["requests"])
    with requests_calls(args.url) as call:
        return client_run(setup, variant, args, call)


def bench_aiohttp_client(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    setup = make_setup(variant, ["aiohttp-client"])
    with aiohttp_calls(args.url) as call:
        return client_run(setup, variant, args, call)


def client_run(setup: Setup, variant: str, args: argparse.Namespace, call: Calls) -> dict[str, Any]:
    """Timed chunks of ``call(count, fresh)``; a run's figure is the median chunk's time per call.

    A burst of noise from the machine spoils a chunk, not the run. A traced variant also times,
    in the same process, an untraced chunk next to each traced one (its instrumentation switched
    off and on again, in A B B A order), and reports the median of the pairs' differences: the
    machine's speed drifts by tens of µs per call between separate processes, and within a pair
    it cancels. A traced chunk's time includes flushing its spans to the sink, so the export
    work of both tracers is inside the timed part. ``cpu_us`` is the process's CPU time per call
    (all threads) over the traced chunks, ``base_cpu_us`` over the untraced ones.
    """
    paired = variant != "untraced"
    ok = call(args.warmup, True)
    calls = args.warmup
    traced_calls = args.warmup if paired else 0
    on = paired
    times: dict[bool, list[float]] = {True: [], False: []}
    cpu: dict[bool, float] = {True: 0.0, False: 0.0}
    timed: dict[bool, int] = {True: 0, False: 0}
    diffs: list[float] = []
    for index, size in enumerate(chunks(args.count, CLIENT_CHUNK)):
        order = ((True, False) if index % 2 == 0 else (False, True)) if paired else (False,)
        pair: dict[bool, float] = {}
        for want in order:
            if paired and want != on:
                if want:
                    setup.resume()
                else:
                    setup.suspend()
                on = want
            ok += call(SWITCH_WARMUP, True)
            setup.flush()
            calls += SWITCH_WARMUP + size
            traced_calls += (SWITCH_WARMUP + size) if on else 0
            cpu_start = time.process_time()
            start = time.perf_counter()
            ok += call(size, False)
            if on:
                setup.flush()
            pair[on] = (time.perf_counter() - start) / size
            cpu[on] += time.process_time() - cpu_start
            timed[on] += size
            times[on].append(pair[on])
        if paired:
            diffs.append(pair[True] - pair[False])
    if paired and not on:
        setup.resume()
    flushed = setup.flush()
    result = {
        "value": statistics.median(times[paired]) * 1e6,
        "cpu_us": cpu[paired] / max(timed[paired], 1) * 1e6,
        "calls": calls,
        "ok": ok,
        "spans": setup.delivered(),
        "expected": traced_calls,
        "flushed": flushed,
        "stats": setup.stats(),
        "notes": setup.notes,
    }
    if paired:
        result["paired_us"] = statistics.median(diffs) * 1e6
        result["base_value"] = statistics.median(times[False]) * 1e6
        result["base_cpu_us"] = cpu[False] / max(timed[False], 1) * 1e6
    setup.close()
    return result


def bench_memory_queued(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    """Bytes held per span while the sink does not drain: every span stays in memory."""
    setup: TracerSetup | OtelSetup
    sink: Any
    if variant == "tracer":
        sink = CountingReporter(mode="block")
        setup = TracerSetup(sink)
    elif variant == "otel":
        sink = make_otel_exporter(mode="block")
        setup = OtelSetup(exporter=sink, max_queue=max(args.count + 10, 2048))
    else:
        raise ValueError("memory rows need a traced variant")
    new_span = span_factory(setup)
    with new_span():  # first allocations (ids, caches) are not per-span costs
        pass
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(args.count):
        with new_span():
            pass
    gc.collect()
    at_creation = tracemalloc.get_traced_memory()[0] - before
    held = settle(before, args.settle)
    tracemalloc.stop()
    stats = setup.stats()
    sink.release()
    flushed = setup.flush()
    result = {
        "value": held / args.count,
        "at_creation": at_creation / args.count,
        "spans": setup.delivered(),
        "expected": args.count + 1,
        "flushed": flushed,
        "stats": stats,
        "after": setup.stats(),
        "notes": setup.notes,
    }
    setup.close()
    return result


def settle(before: int, limit: float) -> int:
    """Traced bytes once the pipeline has done what it does with waiting spans (batching,
    compressing): stable over three polls, or whatever it is after ``limit`` seconds."""
    deadline = time.monotonic() + limit
    last, stable = -1, 0
    while time.monotonic() < deadline and stable < 3:
        time.sleep(0.1)
        gc.collect()
        now = tracemalloc.get_traced_memory()[0] - before
        stable = stable + 1 if last >= 0 and abs(now - last) <= max(1024, last // 100) else 0
        last = now
    return last if last >= 0 else tracemalloc.get_traced_memory()[0] - before


def bench_memory_down(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    """RSS growth while every delivery fails, spans made at a steady rate for a bounded time."""
    if variant != "tracer":
        raise ValueError("the reporter-down row is measured for tracer only")
    reporter = CountingReporter(mode="fail")
    # Batches are cut at least every 0.2 s, so deliveries are attempted (and fail) during the
    # outage even in a short run that makes fewer spans than one full batch.
    setup = TracerSetup(reporter, flush_interval=0.2)
    new_span = span_factory(setup)
    with new_span():
        pass
    gc.collect()
    rss_before = rss_bytes()
    peak = rss_before
    created = 1
    per_tick = max(1, int(args.rate * 0.01))
    deadline = time.monotonic() + args.seconds
    next_tick = time.monotonic()
    while time.monotonic() < deadline and created < args.rate * args.seconds + 1:
        for _ in range(per_tick):
            with new_span():
                pass
        created += per_tick
        next_tick += 0.01
        peak = max(peak, rss_bytes())
        pause = next_tick - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    rss_down = rss_bytes()
    down_stats = setup.stats()
    # At least one delivery must have failed, however slowly the pipeline got to its first send.
    reporter.failed.wait(10)
    failed = reporter.failed_spans
    reporter.release()
    flushed = setup.flush(timeout=args.recover)
    after = setup.stats()
    # Spans the tracer gave up on (dropped) or set aside (spooled) while the reporter was down
    # are accounted for by its own counters; every other span must reach the reporter.
    lost = int(after.get("dropped", 0)) + int(after.get("spooled", 0))
    result = {
        "value": (max(peak, rss_down) - rss_before) / 1e6,
        "rss_before_mb": rss_before / 1e6,
        "created": created,
        "counted_created": after.get("created", created),
        "failed_deliveries": failed,
        "spans": reporter.spans,
        "expected": created - lost,
        "flushed": flushed,
        "stats": down_stats,
        "after": after,
        "notes": setup.notes,
    }
    setup.close()
    return result


ROWS: dict[str, Callable[[str, argparse.Namespace], dict[str, Any]]] = {
    "span": bench_span,
    "requests-client": bench_requests,
    "aiohttp-client": bench_aiohttp_client,
    "memory-queued": bench_memory_queued,
    "memory-down": bench_memory_down,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("row", choices=sorted(ROWS))
    parser.add_argument("variant", choices=["untraced", "tracer", "otel"])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--chunk", type=int, default=1000)
    parser.add_argument("--url", default="")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rate", type=float, default=5000.0)
    parser.add_argument("--recover", type=float, default=20.0)
    parser.add_argument("--settle", type=float, default=3.0)
    args = parser.parse_args(argv)
    emit(ROWS[args.row](args.variant, args))


if __name__ == "__main__":
    main()
