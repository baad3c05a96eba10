"""Instructions per span of the profiler's span map, on a loop of spans under callgrind.

``python -m benchmarks.spanmap_cost [--spans N]``

For each variant (``none``: tracer alone; ``empty``: tracer with a span processor whose
``on_start`` does nothing; ``bare``: the same, declared unable to raise (``can_raise = False``),
so the runtime calls it without its guard; ``map``: tracer with the profiler's ``SpanMap``) two
processes run under callgrind (``--separate-threads``, ``PYTHONHASHSEED=0``), making N and 2N
server spans with ``runtime.server_span()`` and ``finish()``; the difference of their main
threads' totals, divided by N, is one span's cost with start-up, exit and the final flush left
out.

Every trace is sampled (``sample_rate=1.0``), and the delivery worker is kept asleep during the
loop (a batch larger than 2N spans, a flush interval longer than the run) and wakes at the final
flush. Left to their defaults, the adaptive sampler's probability changes once a slow run under
callgrind passes its interval (unsampled spans take another path), and the main thread's total
also holds how often the two threads handed the GIL over and which of them ran the garbage
collector: together these differ from run to run by more than the map costs. ``--busy-worker``
measures with those settings left as they are by default.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any

from benchmarks.instructions import read_total

VARIANTS = ("none", "empty", "bare", "map")


class _Sink:
    def send(self, data: object, callback: object) -> None:
        callback(None)  # type: ignore[operator]


class _Empty:
    def on_start(self, span: object) -> None:
        pass


class _Bare(_Empty):
    can_raise = False


def spans(variant: str, count: int, busy_worker: bool = False) -> None:
    """In the process under callgrind: ``count`` server spans, then a flush."""
    import tracer
    from tracer import installer
    from tracer.profiler.sampler import SpanMap

    quiet: dict[str, Any] = (
        {} if busy_worker else {"sample_rate": 1.0, "batch_size": 100_000, "flush_interval": 3600}
    )
    tracer.install(
        app_name="spanmap-cost",
        reporter=_Sink(),
        metrics=False,
        memory_watch=False,
        heap_snapshot_signal=None,
        handle_sigterm=False,
        **quiet,
    )
    rt = installer.runtime
    assert rt is not None
    if variant == "map":
        rt.add_processor(SpanMap())
    elif variant == "empty":
        rt.add_processor(_Empty())  # type: ignore[arg-type]
    elif variant == "bare":
        rt.add_processor(_Bare())  # type: ignore[arg-type]
    headers = {"host": "127.0.0.1"}
    for _ in range(count):
        span = rt.server_span("GET", "/x", headers)
        assert span is not None
        span.status_code = 200
        span.finish()
    tracer.flush(30)
    tracer.uninstall()


def _main_thread(variant: str, count: int, workdir: str, busy_worker: bool) -> int:
    prefix = os.path.join(workdir, f"{variant}-{count}")
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--separate-threads=yes",
            f"--callgrind-out-file={prefix}",
            sys.executable,
            "-m",
            "benchmarks.spanmap_cost",
            "--child",
            variant,
            str(count),
            *(["--busy-worker"] if busy_worker else []),
        ],
        check=True,
        capture_output=True,
        env=env,
        timeout=1800,
    )
    with open(f"{prefix}-01", encoding="utf-8", errors="replace") as f:
        return read_total(f.read())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        spans(argv[1], int(argv[2]), "--busy-worker" in argv[3:])
        return 0
    parser = argparse.ArgumentParser(prog="python -m benchmarks.spanmap_cost", description=__doc__)
    parser.add_argument("--spans", type=int, default=3000)
    parser.add_argument(
        "--busy-worker",
        action="store_true",
        help="leave sampling and delivery to their defaults (noisier counts)",
    )
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated, of {', '.join(VARIANTS)} (none is always counted)",
    )
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    workdir = tempfile.mkdtemp(prefix="tracer-spanmap-")
    try:
        wanted = [v for v in VARIANTS if v == "none" or v in args.variants.split(",")]
        per = {}
        for variant in wanted:
            base = _main_thread(variant, args.spans, workdir, args.busy_worker)
            full = _main_thread(variant, 2 * args.spans, workdir, args.busy_worker)
            per[variant] = (full - base) / args.spans
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"instructions per span on the main thread, {args.spans:,} spans (difference of two)")
    for variant in wanted:
        print(f"{variant:8}{per[variant]:>12,.0f}{per[variant] - per['none']:>+10,.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
