"""Pipeline CPU per span by reporter: OTLP (protobuf and JSON) and Zipkin against the HTTP reporter.

``python -m benchmarks.exporters [--spans N] [--rate R] [--repeat N] [--quick]`` (or ``python
benchmarks/exporters.py``).

Each measurement is a fresh process with one reporter, all of them sending to one local receiver
in this process, which answers as a collector does and counts the spans it decodes. The child
makes client spans on its main thread (``tracer.client_call`` with a recorded response: a client
span with its URL, status and request id, and no network call) at ``--rate`` spans per second (a
service's traffic arrives over time; ``--rate 0`` makes them as fast as it can, a burst that keeps
batches waiting for the reporter, which the pipeline then holds serialised and compressed, at a
cost of its own), then flushes, and reports:

* pipeline CPU per span: the process's CPU time (all threads) minus its main thread's, over the
  measured spans and the flush: building the records, encoding, compressing and sending, all on
  tracer's threads;
* encode CPU per span: the reporter's encoder alone, run on the main thread over the same kind of
  batch (1,000 records), no compression, no network;
* request path CPU per span: the main thread's CPU per span made. The reporter never runs there,
  so this should be the same for every reporter, within noise.

Variants take turns (A, B, C, A, B, C, ...) so a slow minute of the machine hits all of them; each
figure is the median of the repetitions with its min..max. A run whose receiver did not get every
span, or whose flush timed out, is FAILED and the command exits 1.
"""

from __future__ import annotations

import argparse
import gzip
import http.server
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):  # run as a script: make the package importable
    sys.path.insert(0, str(ROOT))

RESULT = "RESULT "
VARIANTS = ("http", "otlp-protobuf", "otlp-json", "zipkin")


# -- the child -----------------------------------------------------------------------------


def _reporter(variant: str, base: str) -> Any:
    from tracer import reporters

    if variant == "http":
        return reporters.create("http", url=f"{base}/http")
    if variant == "otlp-protobuf":
        return reporters.create("otlp", endpoint=base, protocol="http/protobuf", env={})
    if variant == "otlp-json":
        return reporters.create("otlp", endpoint=base, protocol="http/json", env={})
    return reporters.create("zipkin", url=f"{base}/api/v2/spans", env={})


def _make_spans(count: int, port: int, rate: float = 0.0) -> None:
    """``count`` client spans; with ``rate``, at most that many per second (in chunks of 100)."""
    import tracer

    start = time.monotonic()
    for n in range(count):
        with tracer.client_call("GET", f"http://10.0.0.7:{port}/users/{n % 100}?page=2") as call:
            call.response(200, {})
        if rate and n % 100 == 99:
            pause = start + (n + 1) / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)


def _encoder(reporter: Any, variant: str) -> Any:
    if variant.startswith("otlp"):
        return reporter.encode
    return reporter._encode


def child(variant: str, base: str, spans: int, warmup: int, rate: float) -> None:
    """One measurement (see the module); prints one RESULT line."""
    import tracer

    reporter = _reporter(variant, base)
    tracer.install(app_name="bench", reporter=reporter, sample_rate=1, instrument=[], spool=False)
    _make_spans(warmup, 8080)
    warm = tracer.flush(30)

    cpu0, main0 = time.process_time(), time.thread_time()
    _make_spans(spans, 8080, rate)
    made = time.thread_time() - main0
    flushed = tracer.flush(60)
    cpu = time.process_time() - cpu0
    main = time.thread_time() - main0
    stats = tracer.stats()

    # The encoder alone, on records the pipeline itself built (the reporter's own input).
    from tracer.reporters import memory

    sample = memory.create()
    tracer.uninstall()
    tracer.install(app_name="bench", reporter=sample, sample_rate=1, instrument=[], spool=False)
    _make_spans(1000, 8080)
    tracer.flush(30)
    tracer.uninstall()
    records = list(sample.spans)
    batch = {"service": "bench", "host": "h", "pid": os.getpid(), "spans": records}
    encode = _encoder(reporter, variant)
    rounds = 5
    start = time.thread_time()
    for _ in range(rounds):
        encode(batch)
    encode_cpu = time.thread_time() - start

    result = {
        "variant": variant,
        "rate": rate,
        "spans": spans,
        "warmup": warmup,
        "flushed": bool(warm and flushed),
        "pipeline_us": (cpu - main) / spans * 1e6,
        "request_path_us": made / spans * 1e6,
        "encode_us": encode_cpu / (rounds * len(records)) * 1e6,
        "delivered": stats.get("delivered"),
    }
    print(RESULT + json.dumps(result), flush=True)


# -- the receiver --------------------------------------------------------------------------


class Receiver:
    """Counts the spans each path receives, decoding every body as its receiver would."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                body = gzip.decompress(raw) if self.headers.get("Content-Encoding") else raw
                kind = self.headers.get("Content-Type", "")
                reply = b""
                if kind == "application/x-protobuf":
                    count = _protobuf_spans(body)
                elif self.path.endswith("/v1/traces"):
                    document = json.loads(body)
                    count = sum(
                        len(ss["spans"])
                        for rs in document["resourceSpans"]
                        for ss in rs["scopeSpans"]
                    )
                    reply = b"{}"
                else:
                    document = json.loads(body)
                    count = len(document["spans"] if isinstance(document, dict) else document)
                run = self.path.split("/")[1]
                with receiver.lock:
                    receiver.counts[run] = receiver.counts.get(run, 0) + count
                self.send_response(200)
                self.send_header("Content-Type", kind or "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.port = int(self.server.server_address[1])

    def count(self, run: str) -> int:
        with self.lock:
            return self.counts.get(run, 0)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _protobuf_spans(body: bytes) -> int:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    message = ExportTraceServiceRequest.FromString(body)
    return sum(len(ss.spans) for rs in message.resource_spans for ss in rs.scope_spans)


# -- the orchestrator ----------------------------------------------------------------------


def available(variant: str) -> bool:
    if variant != "otlp-protobuf":
        return True
    try:
        import opentelemetry.proto.collector.trace.v1.trace_service_pb2  # noqa: F401
    except ImportError:
        return False
    return True


def run_one(
    receiver: Receiver, run: str, variant: str, spans: int, warmup: int, rate: float
) -> dict[str, Any]:
    base = f"http://127.0.0.1:{receiver.port}/{run}"
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONHASHSEED"] = "0"
    for name in [n for n in env if n.startswith(("TRACE_", "OTEL_"))]:
        del env[name]
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.exporters", "--child", variant, base,
         str(spans), str(warmup), str(rate)],
        capture_output=True, text=True, timeout=300, env=env, cwd=ROOT,
    )  # fmt: skip
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT)]
    if done.returncode != 0 or not lines:
        return {"variant": variant, "problems": [f"exit {done.returncode}: {done.stderr[-400:]}"]}
    result: dict[str, Any] = json.loads(lines[-1][len(RESULT) :])
    problems = []
    received = receiver.count(run)
    if received != spans + warmup:
        problems.append(f"receiver got {received} spans of {spans + warmup}")
    if not result["flushed"]:
        problems.append("flush timed out")
    result["problems"] = problems
    return result


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}..{max(values):.2f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spans", type=int, default=20_000, help="measured spans per process")
    parser.add_argument("--warmup", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=5, help="processes per variant")
    parser.add_argument(
        "--rate",
        type=float,
        default=5_000.0,
        help="spans per second while measuring (0: as fast as possible, a burst)",
    )
    parser.add_argument("--quick", action="store_true", help="2,000 spans, 1 repetition")
    parser.add_argument("--child", nargs=5, metavar=("VARIANT", "BASE", "SPANS", "WARMUP", "RATE"))
    args = parser.parse_args(argv)
    if args.child:
        variant, base, spans, warmup, rate = args.child
        child(variant, base, int(spans), int(warmup), float(rate))
        return 0
    if args.quick:
        args.spans, args.warmup, args.repeat = 2_000, 500, 1

    variants = [v for v in VARIANTS if available(v)]
    receiver = Receiver()
    results: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    try:
        for repetition in range(args.repeat):
            for variant in variants:
                run = f"r{repetition}-{variant}"
                print(f"  {run} ...", file=sys.stderr, flush=True)
                results[variant].append(
                    run_one(receiver, run, variant, args.spans, args.warmup, args.rate)
                )
    finally:
        receiver.close()

    failed = False
    pace = f"{args.rate:,.0f} spans/s" if args.rate else "as fast as possible"
    print(
        f"pipeline CPU per span by reporter ({args.spans:,} client spans per process, {pace},"
        f" {args.repeat} processes per variant; median (min..max), µs)"
    )
    header = f"{'reporter':<15} {'pipeline':>22} {'encode only':>22} {'request path':>22}  vs http"
    print(header)
    base = None
    if results.get("http") and not any(r["problems"] for r in results["http"]):
        base = statistics.median(r["pipeline_us"] for r in results["http"])
    for variant in VARIANTS:
        if variant not in results:
            print(f"{variant:<15} skipped (opentelemetry-proto is not installed)")
            continue
        runs = results[variant]
        problems = [p for r in runs for p in r["problems"]]
        if problems:
            failed = True
            print(f"{variant:<15} FAILED: {'; '.join(problems)}")
            continue
        pipeline = [r["pipeline_us"] for r in runs]
        versus = f"{statistics.median(pipeline) / base:.2f}x" if base else ""
        print(
            f"{variant:<15} {spread(pipeline):>22} {spread([r['encode_us'] for r in runs]):>22}"
            f" {spread([r['request_path_us'] for r in runs]):>22}  {versus}"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
