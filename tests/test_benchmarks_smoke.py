"""The benchmark command runs end to end in its tiny mode and prints every row.

Rows or variants whose optional dependencies (OpenTelemetry, wrk) are missing say so in the table
instead of failing, so this passes without the ``bench`` extra. Nothing here asserts a timing.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.run import NOT_INSTALLED, ROWS

ROOT = Path(__file__).resolve().parent.parent


def run_benchmarks(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--quiet", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )


@pytest.mark.timeout(300)
def test_quick_run_prints_every_row_and_exits_0() -> None:
    out = run_benchmarks()
    assert out.returncode == 0, out.stdout + out.stderr
    for row in ROWS:
        # The stage rows run only when asked for (see the next test).
        assert (f"{row.number} {row.key}" in out.stdout) == row.default, row.key
    # Both client rows time traced chunks against untraced ones in the same process.
    assert out.stdout.count("added per call, paired in each process") == 2, out.stdout
    assert "of which outside the event loop's thread" in out.stdout
    assert "FAILED" not in out.stdout


@pytest.mark.timeout(300)
def test_stage_rows_run_when_asked_for() -> None:
    out = run_benchmarks("--only", "7")
    assert out.returncode == 0, out.stdout + out.stderr
    for key in ("aiohttp-server-stages", "http-server-stages"):
        row = next(line for line in out.stdout.splitlines() if key in line)
        assert row.rstrip().endswith("ok"), row
    lines = out.stdout.splitlines()
    for variant in ("patched", "spans"):
        assert sum(1 for line in lines if f" {variant} " in line and line.endswith("ok")) == 2
    assert "server process CPU per request" in out.stdout
    assert "FAILED" not in out.stdout


@pytest.mark.timeout(120)
def test_missing_optional_dependencies_are_skipped_not_failed() -> None:
    out = run_benchmarks("--only", "span", "--without", "otel", "--without", "wrk")
    assert out.returncode == 0, out.stdout + out.stderr
    otel_line = next(line for line in out.stdout.splitlines() if " otel " in line)
    assert NOT_INSTALLED in otel_line


def test_profile_sums_py_spy_collapsed_stacks_per_package_and_function() -> None:
    from benchmarks.profile import Sampled, read_collapsed, report

    collapsed = [
        'process 7:"python";<module> (/x/runpy.py:1);'
        "_handle_request (/x/tracer/instrumentation/aiohttp_server.py);"
        "_handle (/x/aiohttp/web_app.py) 30",
        "<module> (/x/runpy.py:1);_handle_request (/x/tracer/instrumentation/aiohttp_server.py);"
        "server_span (/x/tracer/runtime.py:99) 10",
        "<module> (/x/runpy.py:1);select (/usr/lib/python3/selectors.py) 60",
        # A checkout named tracer/ with its virtualenv inside: this frame is aiohttp's.
        "thread (0x7f00);<module> (/home/u/tracer/.venv/lib/site-packages/aiohttp/web.py:3) 5",
        "thread (0x7f00) 7",  # a label alone is no sample
        "not a stack line",
    ]
    profile = read_collapsed(collapsed)
    assert profile.samples == 105
    assert profile.by_package == {"aiohttp": 35, "tracer": 10, "stdlib and other": 60}
    assert profile.with_tracer == 40
    assert profile.own["server_span (runtime.py)"] == 10
    # 100 samples at 100 Hz are 1 s of GIL time: over 1,000 requests, 1,000 µs each.
    run = Sampled("tracer", profile, requests=1000, rate=100)
    assert run.us_per_request(100) == 1000.0
    text = report([Sampled("untraced", read_collapsed(collapsed[2:3]), 1000, 100), run], top=5)
    assert "server_span (runtime.py)" in text and "untraced" in text


def test_instruction_counts_are_read_per_thread_and_reported(tmp_path: Path) -> None:
    from benchmarks.instructions import PerRequest, read_total, report, thread_totals

    head = "version: 1\ncreator: callgrind-3.19.0\nevents: Ir\n"
    for number, total in ((1, 5000), (2, 700), (3, 300)):
        (tmp_path / f"out-0{number}").write_text(f"{head}summary: {total}\n\nfn=main\n1 {total}\n")
    (tmp_path / "out-notes").write_text("not callgrind output")
    assert thread_totals(str(tmp_path / "out")) == {1: 5000, 2: 700, 3: 300}
    assert read_total("totals: 42\n") == 42
    with pytest.raises(ValueError):
        read_total("fn=main\n1 42\n")
    text = report(
        "aiohttp",
        [PerRequest("untraced", 200_000, 0, []), PerRequest("tracer", 250_000, 20_000, ["x"])],
        warmup=10,
        requests=100,
    )
    tracer_line = next(line for line in text.splitlines() if line.startswith("tracer"))
    assert "+50,000" in tracer_line and "0.800" in tracer_line and "FAILED: x" in tracer_line
    client = report(
        "requests",
        [
            PerRequest("untraced", 1_000_000, 0, []),
            PerRequest("tracer", 1_100_000, 30_000, []),
            PerRequest("otel", 1_400_000, 20_000, []),
        ],
        warmup=10,
        requests=100,
    )
    assert "requests client" in client
    assert "tracer's is 0.25 of OpenTelemetry's" in client


@pytest.mark.timeout(300)
@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_instruction_count_command_runs_under_callgrind() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.instructions",
            "http-server",
            "--variants=untraced,tracer",
            "--requests=100",
            "--warmup=5",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    rows = {line.split()[0]: line.split() for line in out.stdout.splitlines() if line.strip()}
    # Counted, not timed: a traced request executes more instructions than an untraced one.
    untraced = int(rows["untraced"][1].replace(",", ""))
    traced = int(rows["tracer"][1].replace(",", ""))
    assert 0 < untraced < traced
    assert "FAILED" not in out.stdout


@pytest.mark.timeout(300)
def test_framework_servers_run_every_variant_and_tracer_makes_a_span_per_request() -> None:
    pytest.importorskip("gunicorn")
    pytest.importorskip("uvicorn")
    pytest.importorskip("opentelemetry.instrumentation.flask")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.frameworks",
            "--repeat=1",
            "--seconds=0.3",
            "--warmup=0",
            "--loadgen=python",
            "--concurrency=2",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    # A server whose variant delivered a span count other than its requests' is FAILED (exit 1).
    assert out.returncode == 0, out.stdout + out.stderr
    assert "FAILED" not in out.stdout
    for framework in ("flask", "fastapi", "django"):
        for variant in ("untraced", "tracer", "otel"):
            assert any(line.split()[:2] == [framework, variant] for line in out.stdout.splitlines())
        assert f"{framework:8} tracer keeps" in out.stdout
