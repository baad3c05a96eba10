"""Run the benchmarks and print one table: ``python -m benchmarks [--quick] [--only ROW]``.

Every measurement runs in a fresh process (one variant, one repetition), and the variants of a row
take turns (A, B, C, A, B, C, ...), so a slow minute of the machine hits every variant alike. Each
figure is the median of the repetitions with its min..max spread; the ratios come from the same
medians. Each variant also proves its spans: the counting sink's total must equal what the variant
should have produced, or the line says FAILED and the command exits 1.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):  # run as a script: make the package importable
    sys.path.insert(0, str(ROOT))

from benchmarks import loadgen  # noqa: E402
from benchmarks.common import PORT_PREFIX, RESULT_PREFIX  # noqa: E402

NOT_INSTALLED = "skipped (not installed)"


@dataclass(frozen=True)
class Sizes:
    """How much work one measurement does."""

    repeat: int
    span_count: int
    span_chunk: int
    span_warmup: int
    client_calls: int
    client_warmup: int
    load_seconds: float
    load_warmup: float
    concurrency: int
    memory_spans: int
    settle_seconds: float
    down_seconds: float
    down_rate: float
    timeout: float


FULL = Sizes(
    repeat=5,
    span_count=20_000,
    span_chunk=1_000,
    span_warmup=500,
    client_calls=4_000,
    client_warmup=200,
    load_seconds=3.0,
    load_warmup=1.0,
    concurrency=10,
    memory_spans=20_000,
    settle_seconds=3.0,
    down_seconds=3.0,
    down_rate=5_000.0,
    timeout=180.0,
)
QUICK = Sizes(
    repeat=1,
    span_count=1_000,
    span_chunk=500,
    span_warmup=50,
    client_calls=50,
    client_warmup=10,
    load_seconds=0.5,
    load_warmup=0.0,
    concurrency=4,
    memory_spans=200,
    settle_seconds=0.5,
    down_seconds=0.3,
    down_rate=2_000.0,
    timeout=60.0,
)


@dataclass
class Sample:
    value: float
    spans: int
    expected: int
    problems: list[str]
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    """All repetitions of one variant of one row."""

    variant: str
    samples: list[Sample] = field(default_factory=list)
    skipped: str | None = None

    @property
    def values(self) -> list[float]:
        return [s.value for s in self.samples]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def problems(self) -> list[str]:
        return [p for s in self.samples for p in s.problems]

    def extra_values(self, key: str) -> list[float]:
        return [float(s.extra[key]) for s in self.samples if key in s.extra]

    def extra_median(self, key: str) -> float | None:
        found = self.extra_values(key)
        return statistics.median(found) if found else None


@dataclass
class Context:
    sizes: Sizes
    base_env: dict[str, str]
    cwd: str
    wrk: str | None
    without: set[str]

    @property
    def env(self) -> dict[str, str]:
        """The environment of one child: its own cache folder, so it starts with an empty spool
        and never replays spans another benchmark process left behind."""
        cache = tempfile.mkdtemp(prefix="cache-", dir=self.cwd)
        return {**self.base_env, "XDG_CACHE_HOME": cache}


# ---------------------------------------------------------------------------------------------
# Processes


def parse_result(lines: list[str]) -> dict[str, Any] | None:
    for line in reversed(lines):
        if line.startswith(RESULT_PREFIX):
            result: dict[str, Any] = json.loads(line[len(RESULT_PREFIX) :])
            return result
    return None


def run_worker(ctx: Context, *args: str) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.worker", *args]
    try:
        out = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=ctx.sizes.timeout,
            env=ctx.env,
            cwd=ctx.cwd,
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"timed out after {ctx.sizes.timeout:.0f}s") from None
    result = parse_result(out.stdout.splitlines())
    if out.returncode != 0 or result is None:
        raise RuntimeError(f"exit {out.returncode}: {last_line(out.stderr)}")
    return result


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else "(no output)"


class Service:
    """A server process: started, asked for its port, stopped by a line on stdin."""

    def __init__(
        self,
        ctx: Context,
        module: str,
        *args: str,
        prefix: Sequence[str] = (),
        start_timeout: float = 30.0,
    ) -> None:
        """``prefix`` goes before the interpreter on the command line (a profiler, say)."""
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._all: list[str] = []
        self._ctx = ctx
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", module, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=ctx.env,
            cwd=ctx.cwd,
        )
        assert self.proc.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self._reader.start()
        self.port = self._wait_for_port(timeout=start_timeout)

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _wait_for_port(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                self.kill()
                raise RuntimeError("server did not start in time") from None
            if line is None:
                self.proc.wait()
                raise RuntimeError(f"server exited {self.proc.returncode}: {self.stderr()}")
            self._all.append(line)
            if line.startswith(PORT_PREFIX):
                return int(line[len(PORT_PREFIX) :])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def stderr(self) -> str:
        self._stderr.seek(0)
        return last_line(self._stderr.read())

    def stop(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write("stop\n")
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=self._ctx.sizes.timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError("server did not stop in time") from None
        self._reader.join(timeout=5)
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self._all.append(line)
        result = parse_result(self._all)
        if self.proc.returncode != 0 or result is None:
            raise RuntimeError(f"server exit {self.proc.returncode}: {self.stderr()}")
        return result

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def close(self) -> None:
        self.kill()
        self._stderr.close()


@contextmanager
def service(ctx: Context, module: str, *args: str, **options: Any) -> Iterator[Service]:
    svc = Service(ctx, module, *args, **options)
    try:
        yield svc
    finally:
        svc.close()


# ---------------------------------------------------------------------------------------------
# Measurements: one variant, one repetition -> Sample


def span_checks(result: dict[str, Any]) -> list[str]:
    problems = []
    if result["spans"] != result["expected"]:
        problems.append(f"spans {result['spans']} != {result['expected']}")
    if result.get("flushed") is False:
        problems.append("flush timed out")
    return problems


def measure_span(ctx: Context, variant: str) -> Sample:
    s = ctx.sizes
    result = run_worker(
        ctx,
        "span",
        variant,
        f"--count={s.span_count}",
        f"--chunk={s.span_chunk}",
        f"--warmup={s.span_warmup}",
    )
    return Sample(
        result["value"],
        result["spans"],
        result["expected"],
        span_checks(result),
        {"cpu_us": result["cpu_us"], "stats": result.get("stats", {})},
    )


def measure_client(row: str) -> Callable[[Context, str], Sample]:
    def measure(ctx: Context, variant: str) -> Sample:
        s = ctx.sizes
        with service(ctx, "benchmarks.target", f"--lifetime={s.timeout}") as target:
            result = run_worker(
                ctx,
                row,
                variant,
                f"--url={target.url}",
                f"--count={s.client_calls}",
                f"--warmup={s.client_warmup}",
            )
            served = target.stop()["requests"]
        problems = span_checks(result)
        if result["ok"] != result["calls"]:
            problems.append(f"{result['calls'] - result['ok']} calls not answered 200")
        if served != result["calls"]:
            problems.append(f"server saw {served} of {result['calls']} calls")
        extra: dict[str, Any] = {
            key: result[key]
            for key in ("cpu_us", "paired_us", "base_value", "base_cpu_us")
            if key in result
        }
        return Sample(result["value"], result["spans"], result["expected"], problems, extra)

    return measure


def process_cpu(pid: int, main_thread: bool = False) -> float | None:
    """CPU seconds (user + system) a process has used so far, all its threads or only its main
    thread (``main_thread``); None off Linux."""
    path = f"/proc/{pid}/task/{pid}/stat" if main_thread else f"/proc/{pid}/stat"
    try:
        with open(path) as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def measure_server(kind: str) -> Callable[[Context, str], Sample]:
    def measure(ctx: Context, variant: str) -> Sample:
        s = ctx.sizes
        runs = []
        with service(ctx, "benchmarks.servers", kind, variant, f"--lifetime={s.timeout}") as srv:
            if s.load_warmup > 0:
                runs.append(load(ctx, srv.url, s.load_warmup))
            cpu_before = process_cpu(srv.proc.pid)
            main_before = process_cpu(srv.proc.pid, main_thread=True)
            measured = load(ctx, srv.url, s.load_seconds)
            cpu_after = process_cpu(srv.proc.pid)
            main_after = process_cpu(srv.proc.pid, main_thread=True)
            runs.append(measured)
            result = srv.stop()
        problems = span_checks(result)
        sent = sum(r["requests"] for r in runs)
        errors = sum(r["errors"] for r in runs)
        non_2xx = sum(r["non_2xx"] for r in runs)
        if errors or non_2xx:
            problems.append(f"{errors} errors, {non_2xx} non-2xx")
        # wrk stops mid-request; the server may answer one more request per connection per run.
        slack = 0 if ctx.wrk is None else s.concurrency * len(runs)
        if not sent <= result["handled"] <= sent + slack:
            problems.append(f"server handled {result['handled']}, load client saw {sent}")
        if measured["requests"] == 0:
            problems.append("no requests completed")
        rate = measured["requests"] / measured["seconds"] if measured["seconds"] else 0.0
        extra = {}
        if cpu_before is not None and cpu_after is not None and measured["requests"]:
            extra["cpu_us"] = (cpu_after - cpu_before) * 1e6 / measured["requests"]
            if main_before is not None and main_after is not None:
                # The rest is other threads': tracer's pipeline in the aiohttp server; in
                # http.server also the connection threads, which run the requests.
                main_us = (main_after - main_before) * 1e6 / measured["requests"]
                # Both are counted in clock ticks: never show a tick's rounding as negative.
                extra["other_threads_us"] = max(0.0, extra["cpu_us"] - main_us)
        return Sample(rate, result["spans"], result["expected"], problems, extra)

    return measure


def load(ctx: Context, url: str, seconds: float) -> dict[str, Any]:
    if ctx.wrk is not None:
        return loadgen.run_wrk(ctx.wrk, url, ctx.sizes.concurrency, seconds)
    return loadgen.run_python(url, ctx.sizes.concurrency, seconds, ctx.env, ctx.cwd)


def measure_memory_queued(ctx: Context, variant: str) -> Sample:
    s = ctx.sizes
    result = run_worker(
        ctx, "memory-queued", variant, f"--count={s.memory_spans}", f"--settle={s.settle_seconds}"
    )
    problems = span_checks(result)
    extra = {"at_creation": result["at_creation"]}
    return Sample(result["value"], result["spans"], result["expected"], problems, extra)


def measure_memory_down(ctx: Context, variant: str) -> Sample:
    s = ctx.sizes
    result = run_worker(
        ctx,
        "memory-down",
        variant,
        f"--seconds={s.down_seconds}",
        f"--rate={s.down_rate}",
    )
    problems = span_checks(result)
    if result["failed_deliveries"] == 0:
        problems.append("no delivery was attempted while the reporter was down")
    if result["counted_created"] != result["created"]:
        problems.append(f"stats count {result['counted_created']} created of {result['created']}")
    extra = {
        "created": result["created"],
        "failed": result["failed_deliveries"],
        "stats": result.get("stats", {}),
        "after": result.get("after", {}),
    }
    return Sample(result["value"], result["spans"], result["expected"], problems, extra)


# ---------------------------------------------------------------------------------------------
# Rows


@dataclass(frozen=True)
class Row:
    number: str
    key: str
    title: str
    unit: str
    variants: tuple[str, ...]
    measure: Callable[[Context, str], Sample]
    needs: tuple[str, ...] = ()  # modules every variant needs
    otel_needs: tuple[str, ...] = ("opentelemetry.sdk",)
    tracer_needs: tuple[str, ...] = ()  # tracer modules the row drives
    higher_is_better: bool = False
    default: bool = True  # run without --only; the stage rows run only when asked for


OTEL_CLIENT = "opentelemetry.instrumentation"
ROWS: tuple[Row, ...] = (
    Row("1", "span", "span start+finish+enqueue", "µs/span", ("tracer", "otel"), measure_span),
    Row(
        "2",
        "requests-client",
        "requests call, keep-alive",
        "µs/call",
        ("untraced", "tracer", "otel"),
        measure_client("requests-client"),
        needs=("requests",),
        otel_needs=("opentelemetry.sdk", f"{OTEL_CLIENT}.requests"),
        tracer_needs=("tracer.instrumentation.requests",),
    ),
    Row(
        "3",
        "aiohttp-client",
        "aiohttp client call, keep-alive",
        "µs/call",
        ("untraced", "tracer", "otel"),
        measure_client("aiohttp-client"),
        needs=("aiohttp",),
        otel_needs=("opentelemetry.sdk", f"{OTEL_CLIENT}.aiohttp_client"),
        tracer_needs=("tracer.instrumentation.aiohttp_client",),
    ),
    Row(
        "4",
        "aiohttp-server",
        "aiohttp.web hello world",
        "req/s",
        ("untraced", "tracer", "defaults", "otel"),
        measure_server("aiohttp"),
        needs=("aiohttp",),
        otel_needs=("opentelemetry.sdk", f"{OTEL_CLIENT}.aiohttp_server"),
        tracer_needs=("tracer.instrumentation.aiohttp_server",),
        higher_is_better=True,
    ),
    Row(
        "5",
        "http-server",
        "http.server threading, keep-alive",
        "req/s",
        ("untraced", "tracer", "defaults"),
        measure_server("http-server"),
        tracer_needs=("tracer.instrumentation.http_server",),
        higher_is_better=True,
    ),
    Row(
        "7a",
        "aiohttp-server-stages",
        "aiohttp.web hello world, tracer's stages",
        "req/s",
        ("untraced", "patched", "spans", "tracer"),
        measure_server("aiohttp"),
        needs=("aiohttp",),
        tracer_needs=("tracer.instrumentation.aiohttp_server",),
        higher_is_better=True,
        default=False,
    ),
    Row(
        "7b",
        "http-server-stages",
        "http.server, tracer's stages",
        "req/s",
        ("untraced", "patched", "spans", "tracer"),
        measure_server("http-server"),
        tracer_needs=("tracer.instrumentation.http_server",),
        higher_is_better=True,
        default=False,
    ),
    Row(
        "8",
        "aiohttp-server-metrics",
        "aiohttp.web hello world, metrics off and on",
        "req/s",
        ("untraced", "tracer", "metrics"),
        measure_server("aiohttp"),
        needs=("aiohttp",),
        tracer_needs=("tracer.instrumentation.aiohttp_server", "tracer.metrics"),
        higher_is_better=True,
        default=False,
    ),
    Row(
        "6a",
        "memory-queued",
        "memory per queued span",
        "B/span",
        ("tracer", "otel"),
        measure_memory_queued,
    ),
    Row(
        "6b",
        "memory-down",
        "RSS growth, reporter down",
        "MB",
        ("tracer",),
        measure_memory_down,
    ),
)


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def tracer_available() -> bool:
    """The core API this benchmark drives; imported here only to look, never installed here."""
    try:
        import tracer
    except ImportError:
        return False
    return all(hasattr(tracer, name) for name in ("install", "uninstall", "span", "flush"))


def skip_reason(ctx: Context, row: Row, variant: str) -> str | None:
    if not all(installed(m) for m in row.needs):
        return NOT_INSTALLED
    if variant == "otel" and ("otel" in ctx.without or not all(map(installed, row.otel_needs))):
        return NOT_INSTALLED
    traced = variant in ("tracer", "patched", "spans", "metrics", "memory", "defaults")
    if traced and ("tracer" in ctx.without or not tracer_available()):
        return "skipped (tracer API not available)"
    if traced:
        for module in row.tracer_needs:
            if not installed(module):
                return f"skipped ({module} not available)"
    return None


def run_row(ctx: Context, row: Row, progress: Callable[[str], None]) -> list[Outcome]:
    outcomes = [Outcome(v, skipped=skip_reason(ctx, row, v)) for v in row.variants]
    active = [o for o in outcomes if o.skipped is None]
    for rep in range(ctx.sizes.repeat):
        for outcome in active:
            progress(f"{row.key} {outcome.variant} {rep + 1}/{ctx.sizes.repeat}")
            try:
                outcome.samples.append(row.measure(ctx, outcome.variant))
            except Exception as exc:
                outcome.samples.append(Sample(float("nan"), 0, 0, [f"{exc}"]))
    return outcomes


# ---------------------------------------------------------------------------------------------
# Table


def number(value: float) -> str:
    if value != value:  # NaN: the measurement failed
        return "-"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def good(outcome: Outcome) -> bool:
    return outcome.skipped is None and bool(outcome.samples) and not outcome.problems


def versus(row: Row, outcome: Outcome, base: Outcome | None) -> str:
    """The difference from the untraced variant, as added time per call or request."""
    if base is None or outcome is base or not good(base) or not good(outcome):
        return ""
    if row.higher_is_better:
        added = 1e6 / outcome.median - 1e6 / base.median
        change = outcome.median / base.median - 1
        return f"{change:+.1%} ({added:+.1f} µs/req)"
    added = outcome.median - base.median
    return f"{added:+.1f} µs ({outcome.median / base.median - 1:+.0%})"


def added_us(row: Row, outcome: Outcome, base: Outcome) -> float:
    if row.higher_is_better:
        return 1e6 / outcome.median - 1e6 / base.median
    return outcome.median - base.median


def summary(row: Row, outcomes: dict[str, Outcome]) -> list[str]:
    lines = []
    base, ours, otel = (outcomes.get(v) for v in ("untraced", "tracer", "otel"))
    if ours is not None and otel is not None and good(ours) and good(otel):
        if base is not None and good(base):
            ours_added, otel_added = added_us(row, ours, base), added_us(row, otel, base)
            if otel_added > 0:
                lines.append(
                    f"tracer's added time is {ours_added / otel_added:.2f} of OpenTelemetry's"
                    f" ({ours_added:+.1f} vs {otel_added:+.1f} µs per call)"
                )
        else:
            lines.append(f"tracer/otel = {ours.median / otel.median:.2f}")
    paired = {
        o.variant: o.extra_values("paired_us")
        for o in (ours, otel)
        if o is not None and good(o) and o.extra_values("paired_us")
    }
    if paired:
        medians = {v: statistics.median(values) for v, values in paired.items()}
        shown = ", ".join(
            f"{v} {medians[v]:+.1f} µs [{min(values):+.1f}..{max(values):+.1f}]"
            for v, values in paired.items()
        )
        ratio = ""
        if medians.get("otel", 0) > 0 and "tracer" in medians:
            ratio = f"; tracer's is {medians['tracer'] / medians['otel']:.2f} of OpenTelemetry's"
        lines.append(
            "added per call, paired in each process (traced chunks against untraced chunks"
            f" beside them): {shown}{ratio}"
        )
    if row.key == "span":
        cpu = [
            f"{o.variant} {number(c)}"
            for o in (ours, otel)
            if o is not None and good(o) and (c := o.extra_median("cpu_us")) is not None
        ]
        if cpu:
            lines.append("process CPU incl. delivery, µs/span: " + ", ".join(cpu))
    if row.unit in ("req/s", "µs/call"):
        cpu = [
            f"{o.variant} {number(c)}"
            for o in outcomes.values()
            if good(o) and (c := o.extra_median("cpu_us")) is not None
        ]
        if cpu:
            what = (
                "server process CPU per request" if row.unit == "req/s" else "client CPU per call"
            )
            lines.append(f"{what}, µs: " + ", ".join(cpu))
    if row.key.startswith("aiohttp-server"):
        # The event loop serves every request on the main thread; other threads are tracer's
        # pipeline (or OpenTelemetry's export thread).
        other = [
            f"{o.variant} {number(c)}"
            for o in outcomes.values()
            if good(o) and (c := o.extra_median("other_threads_us")) is not None
        ]
        if other:
            lines.append("of which outside the event loop's thread, µs: " + ", ".join(other))
    if row.key == "memory-queued":
        fresh = [
            f"{o.variant} {number(c)}"
            for o in (ours, otel)
            if o is not None and good(o) and (c := o.extra_median("at_creation")) is not None
        ]
        if fresh:
            lines.append("held right after the spans finished, B/span: " + ", ".join(fresh))
    measured = [s for s in ours.samples if s.extra] if ours is not None else []
    if row.key == "memory-down" and measured:
        last = measured[-1]
        created, failed = last.extra.get("created"), last.extra.get("failed")
        lines.append(
            f"last run: {created} spans made while down, {failed} span deliveries failed"
            " (retries included)"
        )
        for when in ("stats", "after"):
            counts = last.extra.get(when, {})
            shown = ", ".join(f"{k}={v}" for k, v in counts.items() if v not in ({}, None))
            if shown:
                label = "tracer.stats() while down" if when == "stats" else "after recovery"
                lines.append(f"{label}: {shown}")
    return lines


def status(outcome: Outcome) -> str:
    if outcome.skipped is not None:
        return outcome.skipped
    problems = outcome.problems
    if problems:
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        return f"FAILED: {problems[0]}{more}"
    return "ok"


def render(results: list[tuple[Row, list[Outcome]]]) -> tuple[str, bool]:
    header = ("row", "variant", "median", "min..max", "vs untraced", "spans got/want", "status")
    table: list[tuple[str, ...]] = [header]
    notes: list[tuple[int, list[str]]] = []
    failed = False
    for row, outcomes in results:
        by_variant = {o.variant: o for o in outcomes}
        base = by_variant.get("untraced")
        for i, outcome in enumerate(outcomes):
            label = f"{row.number} {row.key}" if i == 0 else ""
            if outcome.skipped is not None or not outcome.samples:
                table.append((label, outcome.variant, "", "", "", "", status(outcome)))
                continue
            failed = failed or bool(outcome.problems)
            values = [v for v in outcome.values if v == v]
            median = f"{number(outcome.median)} {row.unit}" if values else "-"
            spread = f"{number(min(values))}..{number(max(values))}" if values else "-"
            spans = sum(s.spans for s in outcome.samples)
            want = sum(s.expected for s in outcome.samples)
            table.append(
                (
                    label,
                    outcome.variant,
                    median,
                    spread,
                    versus(row, outcome, base),
                    f"{spans}/{want}",
                    status(outcome),
                )
            )
        notes.append((len(table), summary(row, by_variant)))
    widths = [max(len(r[c]) for r in table) for c in range(len(header))]
    lines = []
    inserted = dict(notes)
    for index, cells in enumerate(table):
        lines.append(
            "  ".join(
                cell.rjust(w) if c in (2, 3) else cell.ljust(w)
                for c, (cell, w) in enumerate(zip(cells, widths, strict=True))
            ).rstrip()
        )
        if index == 0:
            lines.append("-" * len(lines[0]))
        for note in inserted.get(index + 1, []):
            lines.append(" " * (widths[0] + 2) + "-> " + note)
    return "\n".join(lines), failed


# ---------------------------------------------------------------------------------------------
# Command line


def select(rows: tuple[Row, ...], only: list[str]) -> list[Row]:
    if not only:
        return [row for row in rows if row.default]
    tokens = [t.strip() for item in only for t in item.split(",") if t.strip()]
    chosen = [
        row
        for row in rows
        if any(row.number.startswith(t) or row.key.startswith(t) for t in tokens)
    ]
    if not chosen:
        names = ", ".join(row.key for row in rows)
        raise SystemExit(f"--only matched no row (rows: {names})")
    return chosen


def child_env() -> dict[str, str]:
    # Children import benchmarks (and the tracer package) from this checkout; both tracers run
    # with the options set here, whatever the shell exported; TRACE_PURE_PYTHON=1 (the build,
    # not an option) measures the pure-Python build.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OTEL_", "TRACE_")) or k == "TRACE_PURE_PYTHON"
    }
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Overhead of tracer against no tracing and against OpenTelemetry, one table.",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repetition")
    parser.add_argument("--repeat", type=int, help="repetitions per variant (default 5, quick 1)")
    parser.add_argument(
        "--only", action="append", default=[], help="row number or name; repeatable or a,b"
    )
    parser.add_argument(
        "--loadgen",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="load for the server rows: wrk if installed (auto), or the aiohttp client",
    )
    parser.add_argument(
        "--without",
        action="append",
        choices=("otel", "wrk", "tracer"),
        default=[],
        help="behave as if this were not installed",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.repeat is not None:
        if args.repeat < 1:
            raise SystemExit("--repeat must be at least 1")
        sizes = Sizes(**{**sizes.__dict__, "repeat": args.repeat})
    without = set(args.without)
    wrk = None if args.loadgen == "python" or "wrk" in without else loadgen.wrk_path()
    if args.loadgen == "wrk" and wrk is None:
        raise SystemExit("wrk is not installed (benchmarks/setup.sh installs it)")
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="replace")
    rows = select(ROWS, args.only)

    def progress(text: str) -> None:
        if not args.quiet:
            print(f"  ... {text}", file=sys.stderr, flush=True)

    workdir = tempfile.mkdtemp(prefix="tracer-bench-")
    started = time.monotonic()
    try:
        ctx = Context(sizes, child_env(), workdir, wrk, without)
        results = [(row, run_row(ctx, row, progress)) for row in rows]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if wrk:
        load_tool = f"{loadgen.wrk_version(wrk)} (1 thread)"
        seconds: float = loadgen.wrk_seconds(sizes.load_seconds)
    else:
        missing = args.loadgen == "auto"
        load_tool = "aiohttp load client" + (" (wrk not installed)" if missing else "")
        seconds = sizes.load_seconds
    table, failed = render(results)
    print(
        f"tracer benchmarks: {sizes.repeat} interleaved repetition(s) per variant"
        f"{' (quick)' if args.quick else ''}; Python {sys.version.split()[0]},"
        f" {os.cpu_count()} CPUs; load: {load_tool}, {sizes.concurrency} connections,"
        f" {seconds:g}s per run"
    )
    print("figures: median [min..max] of the repetitions; spans: delivered/expected, all runs")
    print()
    print(table)
    print()
    print(f"{'FAILED' if failed else 'ok'} in {time.monotonic() - started:.0f}s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
