"""Where a traced server's time goes: ``python -m benchmarks.profile {aiohttp,http-server}``.

Starts the benchmark's hello-world server once per variant (``--variants``, by default untraced
then tracer; the stage variants ``patched`` and ``spans`` of rows 7a/7b work too), puts each
under the same load as the server rows, and samples it with py-spy (the ``bench`` extra installs
it; it needs the right to ptrace the server, which root or ``kernel.yama.ptrace_scope=0``
gives). Side by side, per request, it prints:

- the time the GIL was held, in all and by the package of the innermost Python frame (tracer,
  the server library, asyncio, the rest of the standard library, the benchmark's handler);
- the time with any tracer frame on the stack (tracer's wrapper encloses the whole request, so
  this is the request, not tracer's share);
- the functions by their own time, those the last variant adds most to first.

The figures are samples / rate / requests answered while sampled. Treat them as a ranking, not
as exact microseconds: a calibration run, a pure-Python loop that costs about 7 µs in a timed
loop added to the untraced handler, showed as about 2 µs here, while the server's CPU per
request (the stage rows read it from ``/proc``) rose by about the 7 µs it costs.

Only samples of the thread that holds the GIL count (``--gil``): the server's Python work, which
is what bounds its throughput; time spent waiting in ``epoll`` or for the GIL is left out. Samples
of C code are charged to the Python function that called it (py-spy without ``--native``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from benchmarks import loadgen
from benchmarks.run import FULL, Context, Sizes, child_env, load, service

# Where a frame's file lives -> the name it is counted under; first match wins.
PACKAGES = (
    ("/tracer/", "tracer"),
    ("/reporters/", "tracer"),
    ("/benchmarks/", "handler (benchmark)"),
    ("/aiohttp/", "aiohttp"),
    ("/multidict/", "aiohttp"),
    ("/yarl/", "aiohttp"),
    ("/asyncio/", "asyncio"),
    ("/wrapt/", "wrapt"),
)


@dataclass
class Frame:
    function: str
    path: str

    @property
    def package(self) -> str:
        # The marker nearest the file wins: a checkout named tracer/ with its virtualenv inside
        # holds aiohttp at .../tracer/.venv/.../aiohttp/, which is aiohttp's.
        best, where = "stdlib and other", -1
        for marker, name in PACKAGES:
            at = self.path.rfind(marker)
            if at > where:
                best, where = name, at
        return best

    @property
    def label(self) -> str:
        # A closure is named by its innermost two functions: make_handle_request:_handle_request.
        function = ":".join(self.function.split(".<locals>.")[-2:])
        return f"{function} ({os.path.basename(self.path)})"


@dataclass
class Profile:
    samples: int = 0
    own: Counter[str] = field(default_factory=Counter)
    by_package: Counter[str] = field(default_factory=Counter)
    with_tracer: int = 0


def parse_frame(text: str) -> Frame:
    # py-spy's collapsed frames read "function (path:line)"; with --function the line is the
    # function's first. It may also write "process N:..." and "thread (N)" labels: no path.
    if text.startswith(("process ", "thread (")):
        return Frame(text, "")
    name, _, rest = text.rpartition(" (")
    if not name:
        return Frame(text, "")
    path = rest.rstrip(")")
    head, sep, tail = path.rpartition(":")
    if sep and tail.isdigit():
        path = head
    return Frame(name, path)


def read_collapsed(lines: Iterable[str]) -> Profile:
    """Sum py-spy's raw (collapsed) output: ``frame;frame;...;innermost count`` per line."""
    profile = Profile()
    for line in lines:
        stack, _, count_text = line.rstrip("\n").rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [parse_frame(f) for f in stack.split(";")]
        frames = [f for f in frames if f.path]  # drop process and thread labels
        if not frames:
            continue
        profile.samples += count
        innermost = frames[-1]
        profile.own[innermost.label] += count
        profile.by_package[innermost.package] += count
        if any(f.package == "tracer" for f in frames):
            profile.with_tracer += count
    return profile


@dataclass
class Sampled:
    """One variant's profile, and how many requests the server answered while it was sampled."""

    variant: str
    profile: Profile
    requests: float
    rate: int

    def us_per_request(self, samples: int) -> float:
        # A sample stands for 1/rate s of the GIL held; spread over the requests of the window.
        return samples / self.rate / self.requests * 1e6 if self.requests else float("nan")


def sample(ctx: Context, kind: str, variant: str, seconds: float, rate: int) -> Sampled:
    spy = shutil.which("py-spy")
    if spy is None:
        raise SystemExit("py-spy is not installed (pip install py-spy)")
    out_path = os.path.join(ctx.cwd, f"profile-{variant}.txt")
    loaded: dict[str, Any] = {}
    with service(
        ctx, "benchmarks.servers", kind, variant, f"--lifetime={ctx.sizes.timeout}"
    ) as srv:
        # The load runs a second longer on each side than py-spy samples.
        loader = threading.Thread(
            target=lambda: loaded.update(load(ctx, srv.url, ctx.sizes.load_seconds))
        )
        loader.start()
        time.sleep(1.0)
        spied = subprocess.run(
            [
                spy,
                "record",
                "--pid",
                str(srv.proc.pid),
                "--duration",
                str(int(seconds)),
                "--rate",
                str(rate),
                "--format",
                "raw",
                "--function",
                "--full-filenames",
                "--gil",
                "--output",
                out_path,
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
        )
        loader.join(timeout=ctx.sizes.load_seconds + 60)
        srv.stop()
    if spied.returncode != 0 or not os.path.exists(out_path):
        print(spied.stderr.strip() or spied.stdout.strip(), file=sys.stderr)
        raise SystemExit("py-spy could not sample the server (see above)")
    with open(out_path, encoding="utf-8", errors="replace") as f:
        profile = read_collapsed(f)
    total = float(loaded.get("requests", 0))
    window = total * int(seconds) / loaded["seconds"] if loaded.get("seconds") else 0.0
    return Sampled(variant, profile, window, rate)


def report(runs: list[Sampled], top: int) -> str:
    """Per-request figures side by side; functions ordered by how much the last variant adds."""
    names = [r.variant for r in runs]
    width = max(10, *(len(n) for n in names))
    head = "".join(f"{n:>{width}}" for n in names)
    lines = [
        "GIL-held time per request, µs (samples / rate / requests answered while sampled)",
        "",
        f"{'':58}{head}",
        f"{'requests while sampled':58}" + "".join(f"{r.requests:>{width},.0f}" for r in runs),
        f"{'samples':58}" + "".join(f"{r.profile.samples:>{width}}" for r in runs),
        f"{'all':58}" + "".join(f"{r.us_per_request(r.profile.samples):>{width}.1f}" for r in runs),
    ]
    packages = sorted({p for r in runs for p in r.profile.by_package})
    lines.append("innermost Python frame by package:")
    for package in packages:
        row = "".join(
            f"{r.us_per_request(r.profile.by_package[package]):>{width}.1f}" for r in runs
        )
        lines.append(f"  {package:56}{row}")
    lines.append(
        f"  {'(any tracer frame on the stack)':56}"
        + "".join(f"{r.us_per_request(r.profile.with_tracer):>{width}.1f}" for r in runs)
    )
    last, first = runs[-1], runs[0]
    labels = {label for r in runs for label in r.profile.own}

    def added(label: str) -> float:
        gained = last.us_per_request(last.profile.own[label])
        return gained - (first.us_per_request(first.profile.own[label]) if len(runs) > 1 else 0)

    ordered = sorted(labels, key=added, reverse=True)[:top]
    title = "functions by own time"
    if len(runs) > 1:
        title += f", most added by {last.variant} first"
    lines += ["", title + ":"]
    for label in ordered:
        row = "".join(f"{r.us_per_request(r.profile.own[label]):>{width}.2f}" for r in runs)
        lines.append(f"  {label if len(label) <= 56 else '...' + label[-53:]:56}{row}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__)
    parser.add_argument("kind", choices=("aiohttp", "http-server"))
    parser.add_argument(
        "--variants",
        default="untraced,tracer",
        help="comma-separated, sampled in this order (untraced, patched, spans, tracer, otel)",
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="sampled time under load")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--loadgen", choices=("auto", "python"), default="auto")
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    known = ("untraced", "patched", "spans", "tracer", "otel")
    if not variants or any(v not in known for v in variants):
        raise SystemExit(f"--variants takes some of: {', '.join(known)}")
    wrk = None if args.loadgen == "python" else loadgen.wrk_path()
    seconds = float(min(max(int(args.seconds), 1), 120))
    sizes = Sizes(**{**FULL.__dict__, "load_seconds": seconds + 2.0})
    workdir = tempfile.mkdtemp(prefix="tracer-profile-")
    try:
        ctx = Context(sizes, child_env(), workdir, wrk, set())
        runs = [sample(ctx, args.kind, v, seconds, args.rate) for v in variants]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    load_tool = "wrk" if wrk else "aiohttp load client"
    print(
        f"profile: {args.kind} server, {seconds:g} s per variant under {load_tool},"
        f" py-spy at {args.rate} Hz, samples of the thread holding the GIL"
    )
    print(report(runs, args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
