"""The memory watcher's costs and its false positives.

``python -m benchmarks.memory_watch instructions`` counts, under valgrind's callgrind, the
machine instructions tracer's ``gc.callbacks`` hook adds to one collection (generation 0, the
frequent kind, and generation 2, which also wakes the watcher's thread): a process makes N and
then 2N collections with and without the hook, and the difference of the differences, divided
by N, leaves start-up and exit out. Only the collecting (main) thread is counted: that is the
application's thread; the watcher's own work after a full collection runs on its thread.

``python -m benchmarks.memory_watch false-positives --seconds 600`` runs the test suite's aiohttp
service without a leak (tests/memory/leak_service.py) under a steady load from this process and
counts its leak events; with ``--leak heap`` the same for the leaking one (how soon it is found),
with ``--leak bursts`` for one that holds at most three bursts of 60,000 objects and collects
after each. Every observation is kept too, and replayed through memwatch's plain rule (five
growths in a row, no warm-up, no margin) and through tracer's rule without ``leak_window`` (the
count of observations only) to show what each addition takes away.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

from benchmarks.instructions import thread_totals
from tracer.memory.watch import Base

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_CHILD = """
import gc, queue, sys
from tracer.gchook import GcHook
mode, generation, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
hook = GcHook()
other = GcHook()
hook.wake = queue.SimpleQueue()
other.wake = queue.SimpleQueue()
if mode == "hook":
    gc.callbacks.append(hook.entry)
gc.disable()
for _ in range(n):
    gc.collect(generation)
    # The watcher's thread clears this after each wake-up; both modes pay for the store.
    hook.pending = other.pending = False
"""


def _count(mode: str, generation: int, n: int, workdir: str) -> int:
    prefix = os.path.join(workdir, f"cg-{mode}-{generation}-{n}")
    env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": ROOT}
    subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--separate-threads=yes",
            f"--callgrind-out-file={prefix}",
            sys.executable,
            "-c",
            _CHILD,
            mode,
            str(generation),
            str(n),
        ],
        check=True,
        env=env,
        capture_output=True,
        timeout=600,
    )
    return thread_totals(prefix)[1]


def instructions(n: int) -> None:
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    with tempfile.TemporaryDirectory() as workdir:
        # A full collection walks the whole heap: far fewer of them keep the run short.
        for generation, k in ((0, n), (2, max(n // 50, 10))):
            counts = {
                (mode, m): _count(mode, generation, m, workdir)
                for mode in ("plain", "hook")
                for m in (k, 2 * k)
            }
            plain = (counts["plain", 2 * k] - counts["plain", k]) / k
            hooked = (counts["hook", 2 * k] - counts["hook", k]) / k
            print(
                f"generation {generation}: {plain:,.0f} instructions per collection without the"
                f" hook, {hooked:,.0f} with it: +{hooked - plain:,.0f}"
                f" (Python {sys.version.split()[0]}, {k:,} and {2 * k:,} collections)",
                flush=True,
            )


def replay_plain(values: list[int], window: int) -> int:
    """memwatch's rule as it is: ``window`` growths in a row, counting starts again after one."""
    leaks = streak = 0
    for previous, value in itertools.pairwise(values):
        if value > previous:
            streak += 1
            if streak >= window:
                leaks += 1
                streak = 0
        else:
            streak = 0
    return leaks


def replay_count_only(observations: list[dict[str, Any]], interval: float) -> dict[str, int]:
    """tracer's rule without the time it needs: warm-up and margin, five growths in a row."""
    if not observations:
        return {"heap": 0, "rss": 0}
    first = _epoch(observations[0]["time"])
    heap = Base("heap", 5, 1000, 0.01, first + interval)
    rss = Base("rss", 5, 1 << 20, 0.01, first + interval)
    for o in observations:
        now = _epoch(o["time"])
        full = o["trigger"] != "timer"
        heap.observe(o["current_base"], now, full)
        if o["rss_bytes"] is not None:
            rss.observe(o["rss_bytes"], now, full)
    return {"heap": heap.leaks, "rss": rss.leaks}


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def false_positives(
    seconds: float, interval: float, leak: str, rate: float, full_gc: float, window: float
) -> None:
    out = tempfile.mkdtemp(prefix="memory-watch-")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TRACE_")},
        "PYTHONPATH": ROOT,
        "LEAK": leak,
        "MEMORY_INTERVAL": str(interval),
        "LEAK_OBSERVATIONS": "5",
        "LEAK_WINDOW": str(window),
        "OBSERVATIONS": "1",
        "FULL_GC": str(full_gc),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.memory.leak_service", out],
        stdout=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        started = time.monotonic()
        requests = 0
        # Bounded in time and in count.
        while time.monotonic() - started < seconds and requests < 100_000_000:
            conn.request("GET", f"/orders/{requests}")
            conn.getresponse().read()
            requests += 1
            if rate:
                # A steady pace: sleep until this request's slot.
                ahead = started + requests / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
        elapsed = time.monotonic() - started
    finally:
        proc.terminate()
        proc.wait(30)
    batches = _lines(os.path.join(out, "memory.jsonl"))
    leaks = [b["memory"] for b in batches if b["memory"]["event"] == "leak"]
    observations = _lines(os.path.join(out, "observations.jsonl"))
    heap = [o["current_base"] for o in observations]
    rss = [o["rss_bytes"] for o in observations if o["rss_bytes"] is not None]
    by_measure = {m: sum(1 for e in leaks if e["measure"] == m) for m in ("heap", "rss")}
    full = sum(1 for o in observations if o["trigger"] != "timer")
    print(
        f"LEAK={leak}: {requests:,} requests in {elapsed:.0f} s ({requests / elapsed:,.0f}/s),"
        f" {len(observations):,} observations ({full:,} after full collections),"
        f" memory_interval {interval} s, leak_observations 5, leak_window {window:g} s"
        + (f", gc.collect() every {full_gc} s" if full_gc else "")
    )
    if observations:
        younger = observations[-1]["num_inc_gc"]
        print(
            f"  younger collections: {younger:,} ({younger / max(requests, 1):.4f} per request),"
            f" full: {observations[-1]['num_full_gc']:,}"
        )
    print(f"  leak events: heap {by_measure['heap']}, rss {by_measure['rss']}")
    if leaks:
        print(f"  first: {leaks[0]['measure']}: {leaks[0]['reason']} (ended {leaks[0]['end']})")
    print(
        f"  memwatch's plain rule on the same observations: heap {replay_plain(heap, 5)},"
        f" rss {replay_plain(rss, 5)}"
    )
    counted = replay_count_only(observations, interval)
    print(
        f"  tracer's rule without leak_window (five in a row, warm-up, margin): heap"
        f" {counted['heap']}, rss {counted['rss']}"
    )
    shutil.rmtree(out, ignore_errors=True)


def _lines(path: str) -> list[Any]:
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory_watch")
    sub = parser.add_subparsers(dest="command", required=True)
    ins = sub.add_parser("instructions", help="the gc hook's instructions per collection")
    ins.add_argument("-n", type=int, default=20_000, help="collections (default 20,000)")
    fp = sub.add_parser("false-positives", help="leak events of a service under load")
    fp.add_argument("--seconds", type=float, default=600.0)
    fp.add_argument("--interval", type=float, default=1.0, help="memory_interval")
    fp.add_argument("--leak", choices=("none", "heap", "rss", "bursts"), default="none")
    fp.add_argument(
        "--leak-window", type=float, default=300.0, help="leak_window, seconds (default 300)"
    )
    fp.add_argument("--rate", type=float, default=0.0, help="requests per second (0: no limit)")
    fp.add_argument(
        "--full-gc", type=float, default=0.0, help="seconds between the service's gc.collect()"
    )
    args = parser.parse_args(argv)
    if args.command == "instructions":
        instructions(args.n)
    else:
        false_positives(
            args.seconds, args.interval, args.leak, args.rate, args.full_gc, args.leak_window
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
