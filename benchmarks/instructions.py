"""Instructions per request, a figure that does not drift.

``python -m benchmarks.instructions {aiohttp,http-server,requests,aiohttp-client,django,redis,...}``

The server rows measure time, and on a shared machine time drifts by tens of percent between runs.
This counts the machine instructions a server executes per request instead, under valgrind's
callgrind, which gives the same count for the same work whatever else the machine is doing
(repeat runs agree to about 0.5%). For each variant (``--variants``: untraced, patched, spans,
tracer, as in rows 7a/7b; metrics, tracer with request and runtime metrics; memory, tracer with
the memory watch; defaults, tracer with both, as ``install()`` has them) it starts the
benchmark's hello-world server under callgrind, sends
``--warmup`` requests and then ``--requests`` more over one keep-alive connection, one at a time,
and stops it; a second process gets the warm-up only. The difference of the two processes'
totals, divided by ``--requests``, is the cost of one request with start-up, warm-up, exit and
the final flush of spans left out, and the pipeline's per-span work (records, delivery) left in.

The two clients (``requests``, ``aiohttp-client``; variants untraced, tracer, otel, and
tracer-inject and tracer-public, described at CLIENT_VARIANTS) are counted
the same way: the client process runs under callgrind and makes its calls, one at a time, to the
client rows' upstream server in a process of its own, then flushes its spans to the discarding
sink, so each tracer's export work is counted too.

Each process must report the requests its handler answered (or the calls that succeeded), and the
traced variants the spans their sink received, as the benchmark's rows do.

Instructions are not time: Python code executes fewer instructions per cycle than the C parts of
a server, and the kernel's work is not counted at all, so a ratio of instructions does not
predict the ratio of throughputs (for aiohttp the throughput ratio came out below it, for
http.server above it). What this shows well is where added work is, and whether a change to
tracer removed any.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from benchmarks.common import emit, make_setup
from benchmarks.run import FULL, Context, Sizes, child_env, parse_result, service
from benchmarks.worker import CLIENT_CALLS

VARIANTS = ("untraced", "patched", "spans", "tracer", "metrics", "memory", "defaults")
# Asked for by name only (not in the default run): spanmap, tracer with the profiler's
# thread->span map in the processor list and no sampler; profiled, tracer with a profile
# running (the map and the sampling thread).
PROFILER_VARIANTS = ("spanmap", "profiled")
# tracer-inject: tracer with the requests propagation headers put in request.headers (the
# header block of tracer.instrumentation.requests_headers switched off); tracer-public: tracer
# with TRACER_PUBLIC_HOOKS=1, the public hooks every instrumentation falls back to.
CLIENT_VARIANTS = ("untraced", "tracer", "otel", "tracer-inject", "tracer-public")
_TOTAL = re.compile(r"^(?:summary|totals):\s+(\d+)", re.MULTILINE)
_BODY = b"Hello, world"


def read_total(text: str) -> int:
    """The instruction total of one callgrind output file."""
    match = _TOTAL.search(text)
    if match is None:
        raise ValueError("no 'summary:' or 'totals:' line in callgrind output")
    return int(match.group(1))


def thread_totals(prefix: str) -> dict[int, int]:
    """Instructions by thread number (1 is the main thread), from ``--separate-threads`` files."""
    out: dict[int, int] = {}
    for path in glob.glob(glob.escape(prefix) + "-*"):
        number = path.rsplit("-", 1)[1]
        if number.isdigit():
            with open(path, encoding="utf-8", errors="replace") as f:
                out[int(number)] = read_total(f.read())
    return out


def send_requests(port: int, count: int, timeout: float) -> None:
    """``count`` GETs over one keep-alive connection, each answered before the next is sent."""
    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buffer = b""
        for _ in range(count):
            sock.sendall(request)
            # Every response of the benchmark's servers ends with this body.
            while _BODY not in buffer:
                chunk = sock.recv(65536)
                if not chunk:
                    raise RuntimeError("the server closed the connection")
                buffer += chunk
            buffer = buffer[buffer.index(_BODY) + len(_BODY) :]


# Per request or call, on top of a fixed allowance: callgrind runs a program 50 to 100 times slower.
SERVER_SECONDS_PER_REQUEST = 0.1
CLIENT_SECONDS_PER_CALL = 0.25
START_SECONDS = 120.0


@dataclass
class Counted:
    total: int
    main_thread: int
    handled: int
    spans: int
    expected: int


def _callgrind(prefix: str) -> list[str]:
    """What goes before the interpreter: callgrind, one output file per thread."""
    return [
        "valgrind",
        "--tool=callgrind",
        "--separate-threads=yes",
        f"--callgrind-out-file={prefix}",
    ]


def _context(workdir: str, timeout: float) -> Context:
    # A fixed hash seed: the same dict layouts, so the same instructions, in every process. The
    # same variables for every variant, too: requests reads the whole environment on every call.
    sizes = Sizes(**{**FULL.__dict__, "timeout": timeout})
    return Context(sizes, {**child_env(), "PYTHONHASHSEED": "0"}, workdir, None, set())


def _totals(prefix: str) -> tuple[int, int]:
    threads = thread_totals(prefix)
    if not threads:
        raise RuntimeError("callgrind wrote no output")
    return sum(threads.values()), threads.get(1, 0)


def count(kind: str, variant: str, requests: int, workdir: str) -> Counted:
    """One server process under callgrind, ``requests`` answered; its instruction totals."""
    timeout = START_SECONDS + SERVER_SECONDS_PER_REQUEST * requests
    prefix = os.path.join(workdir, f"{kind}-{variant}-{requests}")
    ctx = _context(workdir, timeout)
    with service(
        ctx,
        "benchmarks.servers",
        kind,
        variant,
        f"--lifetime={timeout:.0f}",
        prefix=_callgrind(prefix),
        start_timeout=START_SECONDS,
    ) as server:
        send_requests(server.port, requests, timeout)
        result = server.stop()
    total, main_thread = _totals(prefix)
    return Counted(
        total,
        main_thread,
        int(result["handled"]),
        int(result["spans"]),
        int(result["expected"]),
    )


def count_client(kind: str, variant: str, calls: int, url: str, workdir: str) -> Counted:
    """One client process under callgrind making ``calls`` calls to ``url``; its totals."""
    prefix = os.path.join(workdir, f"{kind}-{variant}-{calls}")
    command = [
        *_callgrind(prefix),
        sys.executable,
        "-m",
        "benchmarks.instructions",
        "--client",
        kind,
        variant,
        url,
        str(calls),
    ]
    timeout = START_SECONDS + CLIENT_SECONDS_PER_CALL * calls
    ctx = _context(workdir, timeout)
    out = subprocess.run(
        command, capture_output=True, text=True, env=ctx.env, cwd=ctx.cwd, timeout=timeout
    )
    result = parse_result(out.stdout.splitlines())
    if out.returncode != 0 or result is None:
        raise RuntimeError(f"client exit {out.returncode}: {out.stderr.strip()[-500:]}")
    total, main_thread = _totals(prefix)
    return Counted(
        total, main_thread, int(result["ok"]), int(result["spans"]), int(result["expected"])
    )


# Spans a variant makes per call where it is not one: OpenTelemetry's ASGI middleware adds an
# "http send" span for each message the application sends (the response's start and body).
SPANS_PER_CALL = {("fastapi", "otel"): 3}


@contextmanager
def redis_server(workdir: str) -> Iterator[str]:
    """A redis-server (Debian's) on 127.0.0.1 for the redis rows, no persistence; its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (Debian: apt-get install redis-server)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", workdir, "--save", "",
         "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("redis-server did not start") from None
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


def client_calls(kind: str, variant: str, url: str, calls: int) -> dict[str, int]:
    """In the process under callgrind: the calls, then a flush; what succeeded and was exported."""
    if variant == "tracer-public":
        os.environ["TRACER_PUBLIC_HOOKS"] = "1"
    if kind == "django":
        # Settings first: OpenTelemetry's instrumentor reads MIDDLEWARE when it is installed.
        from benchmarks import django_app

        django_app.configure()
    setup = make_setup(variant if variant in ("untraced", "otel") else "tracer", [kind])
    if variant == "tracer-inject":
        from tracer.instrumentation import requests_headers

        requests_headers.direct = False
    with CLIENT_CALLS[kind](url) as call:
        ok = call(calls, True)
    setup.flush()
    result = {
        "ok": ok,
        "spans": setup.delivered(),
        "expected": 0 if variant == "untraced" else calls * SPANS_PER_CALL.get((kind, variant), 1),
    }
    setup.close()
    return result


@dataclass
class PerRequest:
    variant: str
    total: float
    outside_main: float
    problems: list[str]


def measure(
    kind: str, variant: str, warmup: int, requests: int, workdir: str, url: str | None
) -> PerRequest:
    if url is None:
        base = count(kind, variant, warmup, workdir)
        full = count(kind, variant, warmup + requests, workdir)
    else:
        base = count_client(kind, variant, warmup, url, workdir)
        full = count_client(kind, variant, warmup + requests, url, workdir)
    problems = []
    for counted, want in ((base, warmup), (full, warmup + requests)):
        if counted.handled != want:
            problems.append(f"{counted.handled} of {want} requests answered")
        if counted.spans != counted.expected:
            problems.append(f"{counted.spans} spans for {counted.expected} expected")
    total = (full.total - base.total) / requests
    main = (full.main_thread - base.main_thread) / requests
    return PerRequest(variant, total, total - main, problems)


def report(kind: str, runs: list[PerRequest], warmup: int, requests: int) -> str:
    first = runs[0]
    what = {
        "requests": "requests client",
        "aiohttp-client": "aiohttp client",
        "httpx": "httpx client",
        "urllib3": "urllib3 client",
        "urllib": "urllib.request client",
        "django": "Django WSGI handler called in-process",
        "sqlite3": "sqlite3 cursor.execute('SELECT 1') and its row, in memory",
        "psycopg": "psycopg cursor.execute('SELECT 1') and its row, against $TRACER_BENCH_POSTGRES",
        "fastapi": "FastAPI application called in-process through its ASGI entry point",
        "flask": "Flask application called in-process through its WSGI entry point",
        "redis": "redis client (GET) against a real redis-server",
    }.get(kind, f"{kind} server")
    lines = [
        f"instructions per request: {what} under callgrind, {requests:,} requests after"
        f" {warmup:,} of warm-up, one keep-alive connection (difference of two processes)",
        "",
        f"{'variant':10}{'per request':>14}{'added':>12}{'ratio':>8}{'outside main thread':>22}",
    ]
    for run in runs:
        added = run.total - first.total
        ratio = first.total / run.total if run.total else float("nan")
        lines.append(
            f"{run.variant:10}{run.total:>14,.0f}{added:>+12,.0f}{ratio:>8.3f}"
            f"{run.outside_main:>22,.0f}"
            + ("  FAILED: " + "; ".join(run.problems) if run.problems else "")
        )
    lines += [
        "",
        f"ratio: {first.variant}'s instructions / the variant's (instructions, not time)",
    ]
    if kind == "http-server":
        lines.append("outside main thread: the connection's handler thread and tracer's pipeline")
    elif kind == "aiohttp":
        lines.append("outside main thread: tracer's pipeline (the event loop runs on the main one)")
    else:
        lines.append(
            "outside main thread: the tracers' export threads (the calls run on the main one)"
        )
    by_name = {run.variant: run for run in runs}
    if kind in CLIENT_CALLS and {"untraced", "tracer", "otel"} <= by_name.keys():
        base = by_name["untraced"].total
        ours, theirs = by_name["tracer"].total - base, by_name["otel"].total - base
        if theirs > 0:
            lines.append(
                f"tracer adds {ours:,.0f} instructions per call, OpenTelemetry {theirs:,.0f}:"
                f" tracer's is {ours / theirs:.2f} of OpenTelemetry's"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--client"]:
        # The process under callgrind (see count_client).
        kind, variant, target, calls = argv[1:5]
        emit(client_calls(kind, variant, target, int(calls)))
        return 0
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions", description=__doc__)
    parser.add_argument("kind", choices=("aiohttp", "http-server", *CLIENT_CALLS))
    parser.add_argument("--variants", help="comma-separated (default: all of the kind's)")
    parser.add_argument(
        "--requests", type=int, help="counted requests or calls (default 2000; clients 1000)"
    )
    parser.add_argument("--warmup", type=int, help="default 500; clients 300")
    parser.add_argument(
        "--keep",
        metavar="DIR",
        help="write the callgrind files to DIR and keep them (for callgrind_annotate)",
    )
    args = parser.parse_args(argv)
    client = args.kind in CLIENT_CALLS
    default = CLIENT_VARIANTS if client else VARIANTS
    known = default if client else VARIANTS + PROFILER_VARIANTS
    # In the order given, each once: a variant's files are named after it.
    variants = list(
        dict.fromkeys(
            v.strip() for v in (args.variants or ",".join(default)).split(",") if v.strip()
        )
    )
    if not variants or any(v not in known for v in variants):
        raise SystemExit(f"--variants takes some of: {', '.join(known)}")
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    requests = min(max(args.requests or (1000 if client else 2000), 100), 20_000)
    warmup = args.warmup if args.warmup is not None else (300 if client else 500)
    warmup = min(max(warmup, 1), 5_000)
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
    workdir = args.keep or tempfile.mkdtemp(prefix="tracer-instructions-")
    try:
        if args.kind == "redis":
            with redis_server(workdir) as url:
                runs = [measure(args.kind, v, warmup, requests, workdir, url) for v in variants]
        elif client:
            ctx = _context(workdir, 60.0)
            with service(ctx, "benchmarks.target", "--lifetime=7200") as upstream:
                runs = [
                    measure(args.kind, v, warmup, requests, workdir, upstream.url) for v in variants
                ]
                upstream.stop()
        else:
            runs = [measure(args.kind, v, warmup, requests, workdir, None) for v in variants]
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(report(args.kind, runs, warmup, requests))
    return 1 if any(run.problems for run in runs) else 0


if __name__ == "__main__":
    raise SystemExit(main())
