"""Instructions of tracer.metrics' request recording alone, under callgrind:
``python -m benchmarks.record_cost``.

The server variants of ``benchmarks.instructions`` (``metrics`` against ``tracer``) include the
pipeline's threads, whose count moves by a few thousand instructions per request from run to run
(batches form differently). This counts only what metrics add to one finished span: one process
calls the metrics span processor's recording function ``--calls`` times with a server span (or a
client span), another the same loop with a function that does nothing; the difference of their
totals, divided by the calls, is the cost of the recording call. The same in every run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

from benchmarks.instructions import read_total

CHILD = """
import sys
import tracer
from tracer import installer, reporters
from tracer.span import CLIENT, SERVER, LocalTrace, Span

tracer.install(
    app_name="bench", reporter=reporters.create("memory"), memory_watch=False,
    metrics_interval=None, sample_rate=1,
)
kind, calls = sys.argv[1], int(sys.argv[2])
recorder = next(p for p in installer.runtime.processors if hasattr(p, "record"))
record = recorder.record if kind != "none" else (lambda span: None)
span = Span(SERVER if kind != "client" else CLIENT, "GET /", "a" * 32, "a" * 32, None,
            LocalTrace(True), True)
span.method, span.status_code, span.duration_us = "GET", 200, 1234
span.route = "/users/{id}" if kind == "server" else None
span.url = "http://127.0.0.1:8080/users/1"


def run(calls, record, span):
    for _ in range(calls):
        record(span)


run(calls, record, span)
tracer.uninstall()
"""


def total(workdir: str, kind: str, calls: int) -> int:
    out = os.path.join(workdir, f"{kind}-{calls}")
    subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-c",
            CHILD,
            kind,
            str(calls),
        ],
        check=True,
        capture_output=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    with open(out, encoding="utf-8", errors="replace") as f:
        return read_total(f.read())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.record_cost", description=__doc__)
    parser.add_argument("--calls", type=int, default=100_000)
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    workdir = tempfile.mkdtemp(prefix="tracer-record-")
    try:
        per: dict[str, float] = {}
        for kind in ("none", "server", "client"):
            # Two process sizes: start-up and exit cancel out.
            small, large = total(workdir, kind, 1000), total(workdir, kind, 1000 + args.calls)
            per[kind] = (large - small) / args.calls
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"instructions per recorded span, {args.calls:,} calls (difference of two processes)")
    print(f"{'span':10}{'per call':>12}{'recording':>12}")
    for kind in ("none", "server", "client"):
        print(f"{kind:10}{per[kind]:>12,.0f}{per[kind] - per['none']:>+12,.0f}")
    print("none: the loop calling a function that does nothing (the call is counted in both)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
