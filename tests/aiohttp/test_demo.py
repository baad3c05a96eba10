"""The demo's trace crosses http.server, requests and aiohttp; without aiohttp it still runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import subprocess_env


def _demo(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tracer", "demo"],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
    )


def test_demo_trace_crosses_aiohttp() -> None:
    out = _demo(subprocess_env())
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert text.count("[pricing] server GET /price/{item} 200") == 3
    assert text.count("[pricing] client GET 127.0.0.1:") == 3
    assert text.count("[pricing] internal compute-tax") == 3
    assert "services: demo-client, frontend, inventory, pricing, users" in text


def test_demo_runs_without_aiohttp(tmp_path: Path) -> None:
    # A module that fails to import stands in for aiohttp not being installed.
    (tmp_path / "aiohttp.py").write_text("raise ImportError('aiohttp is not installed')\n")
    env = subprocess_env()
    env["PYTHONPATH"] = str(tmp_path) + os.pathsep + env["PYTHONPATH"]
    out = _demo(env)
    assert out.returncode == 0, out.stderr
    assert "pricing" not in out.stdout
    assert "[frontend] server GET /checkout 200" in out.stdout
