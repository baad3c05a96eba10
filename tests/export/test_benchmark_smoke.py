"""benchmarks/exporters.py runs end to end in its quick mode: every reporter's row, each of its
processes proven by the receiver's span count. Nothing here asserts a timing."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.timeout(300)
def test_exporters_benchmark_quick_run() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.exporters", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "FAILED" not in done.stdout
    rows = {line.split()[0] for line in done.stdout.splitlines()[2:] if line.strip()}
    assert rows == {"http", "otlp-protobuf", "otlp-json", "zipkin"}, done.stdout
