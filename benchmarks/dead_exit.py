"""How long exit takes with a dead reporter: ``python -m benchmarks.dead_exit [--runs 5]``.

Each run is a child process that installs tracer with the HTTP reporter pointed at a port that
refuses connections (``refused``) or at a listener that accepts and never answers (``silent``),
finishes some spans and returns from its main module. Timed: from the moment the child's own
``atexit`` hook runs (just before tracer's) to the moment the parent sees it end, on the
system-wide monotonic clock, so the interpreter's start and import are left out and its
shutdown is counted. Prints the median and the range per dead kind and ``exit_timeout``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager

CHILD = """
    import atexit, json, sys, time, tracer, reporters
    args = json.loads(sys.argv[1])
    tracer.install(
        app_name="dead-exit",
        reporter=reporters.create("http", url=args["url"]),
        spool_path=args["spool"],
        exit_timeout=args["exit_timeout"],
    )
    for i in range(args["spans"]):
        with tracer.span(f"s{i}"):
            pass
    # Registered after tracer's, so it runs first: the moment exit begins.
    atexit.register(lambda: print(time.monotonic(), flush=True))
"""


@contextmanager
def dead_port(kind: str) -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        if kind == "silent":
            sock.listen(64)
        yield int(sock.getsockname()[1])


def one_run(kind: str, exit_timeout: float, spans: int, folder: str) -> float:
    spool = os.path.join(folder, f"{kind}-{exit_timeout}-{time.monotonic_ns()}.sqlite")
    with dead_port(kind) as port:
        args = {
            "url": f"http://127.0.0.1:{port}/",
            "spool": spool,
            "exit_timeout": exit_timeout,
            "spans": spans,
        }
        env = dict(os.environ, PYTHONPATH=os.getcwd())
        proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(CHILD), json.dumps(args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        assert proc.stdout is not None
        began = float(proc.stdout.readline())
        proc.wait(timeout=exit_timeout + 60)
        return time.monotonic() - began


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dead_exit")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--spans", type=int, default=200)
    parser.add_argument("--exit-timeouts", type=float, nargs="+", default=[0.0, 1.0, 2.0, 5.0])
    opts = parser.parse_args(argv)
    print("| dead reporter | exit_timeout | exit took, median (min..max) |")
    print("| --- | --- | --- |")
    with tempfile.TemporaryDirectory() as folder:
        for kind in ("refused", "silent"):
            for exit_timeout in opts.exit_timeouts:
                took = [one_run(kind, exit_timeout, opts.spans, folder) for _ in range(opts.runs)]
                print(
                    f"| {kind} | {exit_timeout:g} s | {statistics.median(took):.2f} s"
                    f" ({min(took):.2f}..{max(took):.2f}) |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
