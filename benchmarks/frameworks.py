"""Frameworks under their usual servers: a hello-world app's throughput, untraced, with tracer and
with OpenTelemetry's own instrumentation of that framework, side by side in one run.

``python -m benchmarks.frameworks`` measures, for each framework:

- flask: Flask under gunicorn (one sync worker, gunicorn's default);
- fastapi: FastAPI under uvicorn (one process);
- django: Django under gunicorn (one sync worker);

each variant in a fresh server (``untraced``; ``tracer``, spans only as in benchmarks.run's rows;
``otel``, the SDK with a BatchSpanProcessor and a counting exporter, and the framework's
OpenTelemetry instrumentor), the variants taking turns, with load from another process on
loopback (wrk when installed, else benchmarks.loadgen's aiohttp client). A figure is the median
of ``--repeat`` runs. Besides requests per second it reads the serving process's CPU time per
request from ``/proc``, which a busy machine moves less than throughput.

The same module is the application: ``benchmarks.frameworks:flask_app()`` and the others are
the factories the servers load, set up by ``BENCH_VARIANT`` and writing what they saw to
``BENCH_DIR`` (``ready``: the serving process's pid; ``result.json`` at exit: the requests the
view answered and the spans the variant delivered). A ``BENCH_TRACE_<NAME>`` variable of the
orchestrator's environment reaches the servers as ``TRACE_<NAME>`` (``BENCH_TRACE_METRICS=1``).
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import loadgen
from benchmarks.common import OtelSetup, Setup, make_setup

BODY = b"Hello, world"
FRAMEWORKS = ("flask", "fastapi", "django")
VARIANTS = ("untraced", "tracer", "otel")
# tracer.stats() counters shown when a span count is wrong.
STATS_SHOWN = ("created", "delivered", "dropped", "spooled", "pending", "unsampled_dropped")
ROOT = Path(__file__).resolve().parent.parent
APP_MODULE = "benchmarks.frameworks"

# -- the applications, in the serving process -------------------------------------------------

_handled = 0


def _count() -> None:
    global _handled
    _handled += 1


def _start(variant_instrument: Callable[[Any], None]) -> Setup:
    """The variant of this process (``BENCH_VARIANT``); its result is written at exit."""
    variant = os.environ.get("BENCH_VARIANT", "untraced")
    setup = make_setup("untraced" if variant == "otel" else variant)
    if variant == "otel":
        setup = OtelSetup()
        variant_instrument(setup.provider)
    out = Path(os.environ["BENCH_DIR"])

    def write_result() -> None:
        flushed = setup.flush()
        result = {
            "handled": _handled,
            "spans": setup.delivered(),
            "flushed": flushed,
            "stats": setup.stats(),
            "notes": setup.notes,
        }
        (out / "result.json").write_text(json.dumps(result))

    # Registered after tracer's own exit work, so it runs before it (atexit is last in, first
    # out) and flushes while the pipeline still runs.
    atexit.register(write_result)
    # Renamed into place, so the orchestrator never reads it half-written.
    (out / "ready.tmp").write_text(str(os.getpid()))
    os.replace(out / "ready.tmp", out / "ready")
    return setup


def flask_app() -> Any:
    """Flask's hello world (gunicorn loads ``benchmarks.frameworks:flask_app()``)."""

    def instrument(provider: Any) -> None:
        from opentelemetry.instrumentation.flask import FlaskInstrumentor

        FlaskInstrumentor().instrument(tracer_provider=provider)

    _start(instrument)
    import flask

    app = flask.Flask("bench")

    @app.get("/")
    def hello() -> Any:
        _count()
        return flask.Response(BODY, content_type="text/plain")

    return app


def fastapi_app() -> Any:
    """FastAPI's hello world (``uvicorn --factory benchmarks.frameworks:fastapi_app``)."""
    import fastapi
    from fastapi.responses import PlainTextResponse

    app = fastapi.FastAPI()

    @app.get("/")
    async def hello() -> Any:
        _count()
        return PlainTextResponse(BODY)

    def instrument(provider: Any) -> None:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)

    _start(instrument)
    return app


def django_app() -> Any:
    """Django's hello world (gunicorn loads ``benchmarks.frameworks:django_app()``)."""
    import django
    from django.conf import settings

    settings.configure(
        DEBUG=False,
        ALLOWED_HOSTS=["127.0.0.1", "localhost"],
        ROOT_URLCONF=APP_MODULE,
        SECRET_KEY="benchmark only",
        MIDDLEWARE=[],
        INSTALLED_APPS=[],
        DATABASES={},
    )

    def instrument(provider: Any) -> None:
        from opentelemetry.instrumentation.django import DjangoInstrumentor

        DjangoInstrumentor().instrument(tracer_provider=provider)

    _start(instrument)
    django.setup()
    from django.core.wsgi import get_wsgi_application

    return get_wsgi_application()


def hello_view(request: Any) -> Any:
    """The Django view of ``GET /``."""
    from django.http import HttpResponse

    _count()
    return HttpResponse(BODY, content_type="text/plain")


def __getattr__(name: str) -> Any:
    # Django's URLconf, made on first use: django.urls is imported only in the Django server.
    if name == "urlpatterns":
        from django.urls import path

        return [path("", hello_view)]
    raise AttributeError(name)


# -- the orchestrator -------------------------------------------------------------------------


def command(framework: str) -> list[str]:
    """The server command of ``framework``, listening on 127.0.0.1:``{port}``."""
    gunicorn = [sys.executable, "-m", "gunicorn", "--workers=1", "--bind=127.0.0.1:{port}"]
    gunicorn += ["--no-control-socket"] if _gunicorn_has_control_socket() else []
    if framework == "flask":
        return [*gunicorn, f"{APP_MODULE}:flask_app()"]
    if framework == "django":
        return [*gunicorn, f"{APP_MODULE}:django_app()"]
    if framework == "fastapi":
        return [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            f"{APP_MODULE}:fastapi_app",
            "--host=127.0.0.1",
            "--port={port}",
            "--no-access-log",
            "--log-level=warning",
        ]
    raise ValueError(f"unknown framework {framework!r}")


def _gunicorn_has_control_socket() -> bool:
    try:
        from gunicorn.config import KNOWN_SETTINGS
    except ImportError:
        return False
    return any(setting.name == "control_socket_disable" for setting in KNOWN_SETTINGS)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _accepts(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def process_cpu(pid: int) -> float | None:
    """CPU seconds (user + system, all threads) ``pid`` has used so far; None off Linux."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class Run:
    rate: float
    cpu_us: float | None
    problems: list[str] = field(default_factory=list)


def child_env(variant: str, workdir: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TRACE_", "OTEL_")) or k == "TRACE_PURE_PYTHON"
    }
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(BENCH_VARIANT=variant, BENCH_DIR=workdir, TRACE_SPOOL="0")
    env.update({k[6:]: v for k, v in os.environ.items() if k.startswith("BENCH_TRACE_")})
    return env


def load(wrk: str | None, url: str, concurrency: int, seconds: float) -> dict[str, Any]:
    if wrk is not None:
        return loadgen.run_wrk(wrk, url, concurrency, seconds)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return loadgen.run_python(url, concurrency, seconds, env, str(ROOT))


def measure(framework: str, variant: str, args: argparse.Namespace, wrk: str | None) -> Run:
    """One server of ``framework`` set up as ``variant``: warm-up, the measured load, the stop."""
    with tempfile.TemporaryDirectory(prefix="tracer-frameworks-") as workdir:
        port = free_port()
        argv = [part.replace("{port}", str(port)) for part in command(framework)]
        proc = subprocess.Popen(
            argv,
            cwd=workdir,
            env=child_env(variant, workdir),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            ready = Path(workdir, "ready")
            deadline = time.monotonic() + 60
            while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if not ready.exists():
                raise RuntimeError(f"{framework} {variant} did not start: {_stderr(proc)}")
            pid = int(ready.read_text())
            # The application is made before the server listens (uvicorn) or after (gunicorn).
            while not _accepts(port) and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            url = f"http://127.0.0.1:{port}/"
            sent = load(wrk, url, args.concurrency, args.warmup)["requests"] if args.warmup else 0
            cpu_before = process_cpu(pid)
            measured = load(wrk, url, args.concurrency, args.seconds)
            cpu_after = process_cpu(pid)
            sent += measured["requests"]
            # One more request, answered in full: the requests the load client cut short at
            # its end are over by then, so the server stops idle and every span is finished.
            with urllib.request.urlopen(url, timeout=30) as answer:
                answer.read()
            sent += 1
        finally:
            # uvicorn raises a SIGTERM again once it has shut down, which would end the process
            # before its exit work; after a Ctrl-C it exits normally.
            proc.send_signal(signal.SIGINT if framework == "fastapi" else signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        result_path = Path(workdir, "result.json")
        if not result_path.exists():
            return Run(0.0, None, [f"no result from the server: {_stderr(proc)}"])
        result = json.loads(result_path.read_text())
    problems = []
    if measured["errors"] or measured["non_2xx"]:
        problems.append(f"{measured['errors']} errors, {measured['non_2xx']} non-2xx")
    # wrk stops mid-request: a server may answer one more request per connection per run.
    if not sent <= result["handled"] <= sent + 2 * args.concurrency:
        problems.append(f"server handled {result['handled']}, load client saw {sent}")
    # tracer makes one span per request; OpenTelemetry's ASGI middleware also makes one for
    # each message sent and received.
    spans, handled = result["spans"], result["handled"]
    if variant != "untraced" and (spans < handled or (variant == "tracer" and spans != handled)):
        counts = {k: v for k, v in result["stats"].items() if k in STATS_SHOWN and v}
        problems.append(f"{spans} spans delivered for {handled} requests {counts}")
    rate = measured["requests"] / measured["seconds"] if measured["seconds"] else 0.0
    cpu_us = None
    if cpu_before is not None and cpu_after is not None and measured["requests"]:
        cpu_us = (cpu_after - cpu_before) * 1e6 / measured["requests"]
    return Run(rate, cpu_us, problems)


def _stderr(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None or proc.stderr is None:
        return ""
    return proc.stderr.read()[-800:]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def report(framework: str, runs: dict[str, list[Run]]) -> list[str]:
    """The row of ``framework``: each variant's median, and tracer against the goals."""
    rates = {v: median([r.rate for r in rs]) for v, rs in runs.items()}
    cpus = {v: median([r.cpu_us for r in rs if r.cpu_us is not None]) for v, rs in runs.items()}
    lines = []
    for variant, variant_runs in runs.items():
        spread = [r.rate for r in variant_runs]
        problems = sorted({p for r in variant_runs for p in r.problems})
        lines.append(
            f"{framework:8} {variant:9} {rates[variant]:9,.0f} req/s"
            f" ({min(spread):,.0f}..{max(spread):,.0f})"
            f"  CPU {cpus[variant]:7.1f} µs/req"
            + (f"  FAILED: {'; '.join(problems)}" if problems else "")
        )
    base = rates.get("untraced")
    if base and "tracer" in rates:
        ratio = rates["tracer"] / base
        note = f"{framework:8} tracer keeps {ratio:.2f}x of untraced throughput (goal >= 0.85)"
        if rates.get("otel"):
            ours = 1e6 / rates["tracer"] - 1e6 / base
            theirs = 1e6 / rates["otel"] - 1e6 / base
            ours_cpu = cpus["tracer"] - cpus["untraced"]
            theirs_cpu = cpus["otel"] - cpus["untraced"]
            note += (
                f"; adds {ours:.1f} µs/req wall, {ours_cpu:.1f} µs/req CPU;"
                f" OpenTelemetry adds {theirs:.1f} wall, {theirs_cpu:.1f} CPU"
            )
            if theirs_cpu > 0:
                note += f" (tracer/otel CPU added: {ours_cpu / theirs_cpu:.2f}, goal <= 0.25)"
        lines.append(note)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0, help="measured load per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="load before measuring")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    args = parser.parse_args(argv)
    wrk = None if args.loadgen == "python" else loadgen.wrk_path()
    if args.loadgen == "wrk" and wrk is None:
        raise SystemExit("wrk is not installed (benchmarks/setup.sh installs it)")
    if wrk is not None:
        args.seconds = loadgen.wrk_seconds(args.seconds)
        args.warmup = loadgen.wrk_seconds(args.warmup) if args.warmup else 0
    tool = f"{loadgen.wrk_version(wrk)} (1 thread)" if wrk else "aiohttp load client"
    print(
        f"# {args.repeat} runs per variant, {args.seconds} s each after {args.warmup} s of"
        f" warm-up; load: {tool}, {args.concurrency} connections; {os.cpu_count()} CPUs",
        flush=True,
    )
    failed = False
    for framework in args.frameworks.split(","):
        variants = args.variants.split(",")
        runs: dict[str, list[Run]] = {v: [] for v in variants}
        for _ in range(args.repeat):
            for variant in variants:
                runs[variant].append(measure(framework, variant, args, wrk))
        failed |= any(r.problems for rs in runs.values() for r in rs)
        for line in report(framework, runs):
            print(line, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
