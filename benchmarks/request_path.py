"""Instructions per request of each step of a traced server request, under callgrind.

``python -m benchmarks.request_path [--requests N] [--keep DIR]``

One process runs under callgrind with tracer installed as by default (metrics and the memory
watch on) and every trace sampled, as in the server rows, and takes the steps a traced aiohttp
or http.server request takes, each step ``N`` times in a loop of its own: ids, the sampling
decision, the server span (aiohttp's multidict headers; http.server's header map), the context
variable, the response headers, the route name, the span's end (the metrics histogram, the
collector, the queue), and on the pipeline's side the record built from the queued tuple and its
freeing. Before each loop the process calls ``os.getppid()``, on which callgrind (``--dump-
before``) starts a new output file, so each loop's instructions are in a file of their own; an
empty loop is counted too and taken off every step. The garbage collector is off during the
loops (the server rows count its share), and the delivery worker is asleep (a batch larger than
the run).

The server rows (``python -m benchmarks.instructions``) give what a request costs in all; this
shows where inside tracer it goes. The steps overlap (the server span includes the ids and the
decision; the end includes the histogram and the queue), as the table says.
"""

from __future__ import annotations

import argparse
import gc
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from benchmarks.instructions import read_total


class _Sink:
    def send(self, data: object, callback: Any) -> None:
        callback(None)


class _Route:
    """What aiohttp's match_info gives _route_name: a route with a resource."""

    class resource:
        canonical = "/"

    def __init__(self) -> None:
        self.route = self


Step = tuple[str, str, Callable[[int], None]]

# The steps in the order they run, with what each covers (the table's lines).
STEPS = [
    ("empty", "the loop alone (taken off every step below)"),
    ("ids", "ids.new_ids(): a trace id and a span id"),
    ("decide", "Sampler.decide(trace id)"),
    ("server_span aiohttp", "Runtime.server_span, multidict (ids, decision, Span, on_start)"),
    ("context set", "current.set(span)"),
    ("context reset", "current.reset(token)"),
    ("headers aiohttp", "Runtime.response_headers into a CIMultiDict, and SS taken"),
    ("route name", "aiohttp's _route_name (a known route)"),
    ("finish aiohttp", "Span.finish: processors (histogram, collector, queue)"),
    ("take", "the queue's tuples taken (pipeline side)"),
    ("record", "span.record() from the tuple (pipeline side)"),
    ("free", "the tuples and records freed (pipeline side)"),
    ("header_map", "header_map of http.server's three headers"),
    ("server_span http", "Runtime.server_span, a header map"),
    ("headers http", "Runtime.response_headers as bytes, and SS taken"),
    ("finish http", "Span.finish, as above"),
]


def steps(count: int) -> list[Step]:
    """The steps (name, what it covers, the loop of ``count``) on an installed tracer."""
    from multidict import CIMultiDict

    import tracer
    from tracer import ids, installer
    from tracer.context import current
    from tracer.delivery.batcher import RECORD_SLICE
    from tracer.instrumentation.aiohttp_server import _route_name
    from tracer.propagation import header_map
    from tracer.span import fast_records, record, record_template

    tracer.install(
        app_name="request-path",
        reporter=_Sink(),
        heap_snapshot_signal=None,
        handle_sigterm=False,
        batch_size=100_000,
        flush_interval=3600,
        metrics_interval=None,
        sample_rate=1,
    )
    rt = installer.runtime
    assert rt is not None
    sampler, pipeline = rt.sampler, rt.pipeline
    raw = [("Host", "127.0.0.1:8080"), ("User-Agent", "wrk"), ("Accept", "*/*")]
    multi = CIMultiDict(raw)
    spans: list[Any] = []
    tokens: list[Any] = []
    response = CIMultiDict({"Content-Type": "text/plain; charset=utf-8"})
    names: dict[Any, str] = {}
    match = _Route()
    frozen: list[Any] = []
    records: list[Any] = []
    service, host, pid = rt.service, rt.host, os.getpid()
    rng = range(count)
    time_ns = time.time_ns

    def empty(n: int) -> None:
        for _ in rng:
            pass

    def new_ids(n: int) -> None:
        take = ids.new_ids
        for _ in rng:
            take()

    def decide(n: int) -> None:
        tid = ids.new_trace_id()
        d = sampler.decide
        for _ in rng:
            d(tid)

    def server_span_aiohttp(n: int) -> None:
        start, add = rt.server_span, spans.append
        for _ in rng:
            add(start("GET", "/", multi, "http", True))

    def set_context(n: int) -> None:
        add = tokens.append
        for span in spans:
            add(current.set(span))

    def reset_context(n: int) -> None:
        for token in reversed(tokens):
            current.reset(token)
        tokens.clear()

    def headers_aiohttp(n: int) -> None:
        put = rt.response_headers
        for span in spans:
            span.status_code = 200
            put(span, response)
            # A plain web.Response's SS, as aiohttp's patched _prepare_headers takes it.
            span.sent_us = time_ns() // 1000

    def route_name(n: int) -> None:
        for span in spans:
            _route_name(span, match, names)

    def finish(n: int) -> None:
        for span in spans:
            span.finish()
        spans.clear()

    def header_map_http(n: int) -> None:
        for _ in rng:
            header_map(raw)

    def server_span_http(n: int) -> None:
        start, add, hmap = rt.server_span, spans.append, header_map(raw)
        for _ in rng:
            add(start("GET", "/", hmap))

    def headers_http(n: int) -> None:
        put = rt.response_headers
        for span in spans:
            span.status_code = 200
            put(span)
            # The response's write (http.server's _TimedWriter takes SS there).
            span.sent_us = time_ns() // 1000

    def take_queue(n: int) -> None:
        queue = pipeline._queue
        frozen.extend(queue)
        queue.clear()

    def build_records(n: int) -> None:
        template = record_template(service, host, pid)
        # As the delivery worker builds them: a slice at a time, the accelerator's records
        # first, when it is built.
        fast = fast_records
        for i in range(0, len(frozen), RECORD_SLICE):
            chunk = frozen[i : i + RECORD_SLICE]
            made = [None] * len(chunk) if fast is None else fast(chunk, template)
            if None in made:
                for j, f in enumerate(chunk):
                    if made[j] is None:
                        made[j] = record(f, service, host, pid, template)
            records.extend(made)

    def free_records(n: int) -> None:
        frozen.clear()
        records.clear()

    loops = {
        "empty": empty,
        "ids": new_ids,
        "decide": decide,
        "server_span aiohttp": server_span_aiohttp,
        "context set": set_context,
        "context reset": reset_context,
        "headers aiohttp": headers_aiohttp,
        "route name": route_name,
        "finish aiohttp": finish,
        "take": take_queue,
        "record": build_records,
        "free": free_records,
        "header_map": header_map_http,
        "server_span http": server_span_http,
        "headers http": headers_http,
        "finish http": finish,
    }
    return [(name, what, loops[name]) for name, what in STEPS]


def child(count: int) -> None:
    """In the process under callgrind: each step's loop after an ``os.getppid()``."""
    todo = steps(count)
    gc.collect()
    gc.disable()
    for _, _, loop in todo:
        os.getppid()
        loop(count)
    os.getppid()
    gc.enable()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child(int(argv[1]))
        return 0
    parser = argparse.ArgumentParser(prog="python -m benchmarks.request_path", description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--keep", metavar="DIR", help="keep the callgrind files in DIR")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    count = max(100, args.requests)
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
    workdir = args.keep or tempfile.mkdtemp(prefix="tracer-request-path-")
    prefix = os.path.join(workdir, "request-path")
    try:
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--dump-before=os_getppid",
                f"--callgrind-out-file={prefix}",
                sys.executable,
                "-m",
                "benchmarks.request_path",
                "--child",
                str(count),
            ],
            check=True,
            capture_output=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},
            timeout=1800,
        )
        totals = {}
        for path in glob.glob(glob.escape(prefix) + ".*"):
            number = path.rsplit(".", 1)[1]
            if number.isdigit():
                with open(path, encoding="utf-8", errors="replace") as f:
                    totals[int(number)] = read_total(f.read())
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    rows = _rows(totals, count)
    print(f"instructions per request by step, {count:,} of each, under callgrind")
    print()
    for name, what, per in rows:
        print(f"{name:22}{per:>10,.0f}  {what}")
    return 0


def _rows(totals: dict[int, int], count: int) -> list[tuple[str, str, float]]:
    # prefix.1 is start-up up to the first loop; prefix.2 ... one per step, in STEPS' order.
    loops = [totals.get(i + 2, 0) / count for i in range(len(STEPS))]
    empty = loops[0]
    return [
        (name, what, per if name == "empty" else per - empty)
        for (name, what), per in zip(STEPS, loops, strict=True)
    ]


if __name__ == "__main__":
    raise SystemExit(main())
