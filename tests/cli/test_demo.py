"""``tracer demo``: runs on a plain install (standard library only), honours ``--requests``,
shows the requests and aiohttp hops when they are installed, and explains its notation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.cli.conftest import Venv, tracer_cmd


def legends(stdout: str) -> list[str]:
    """The lines that explain the tree's notation."""
    return [line for line in stdout.splitlines() if line.startswith("legend:") and "@+" in line]


def traces(stdout: str) -> list[str]:
    """The printed trees, one text block each."""
    return [b for b in re.split(r"\n(?=trace )", stdout) if b.startswith("trace ")]


@pytest.mark.parametrize("count", [0, 1, 4])
def test_demo_sends_as_many_requests_as_asked(tmp_path: Path, count: int) -> None:
    out = tracer_cmd("demo", "--requests", str(count), cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("GET /checkout?item=") == count, out.stdout
    assert len(traces(out.stdout)) == count, out.stdout
    # One legend line before the trees, none when there is no tree to explain.
    assert len(legends(out.stdout)) == (1 if count else 0), out.stdout


def test_demo_shows_the_requests_and_aiohttp_hops_when_installed(tmp_path: Path) -> None:
    out = tracer_cmd("demo", "--requests", "1", cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "frontend --requests--> users" in out.stdout
    assert "frontend --urllib--> inventory" in out.stdout
    (tree,) = traces(out.stdout)
    assert "services: demo-client, frontend, inventory, pricing, users" in tree
    assert "[pricing] client GET 127.0.0.1:" in tree
    assert "[pricing] internal compute-tax" in tree


def test_demo_runs_on_a_plain_install(plain_install: Venv, tmp_path: Path) -> None:
    # The plain install has no extras: no requests, no aiohttp.
    probe = plain_install.run("-c", "import requests", cwd=tmp_path)
    assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr
    out = plain_install.run("-m", "tracer", "demo", cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    assert "requests is not installed" in out.stdout and "aiohttp is not installed" in out.stdout
    assert len(legends(out.stdout)) == 1, out.stdout
    blocks = traces(out.stdout)
    assert len(blocks) == 3, out.stdout
    for block in blocks:
        assert "services: demo-client, frontend, inventory, users" in block, block
        lines = block.splitlines()
        # Each urllib call of the frontend has its client span, and the callee's server span
        # is its child: the trace headers went along.
        for callee, path in (("users", "/users/7"), ("inventory", "/stock/")):
            client = next(
                i
                for i, line in enumerate(lines)
                if "[frontend] client GET" in line and path in line
            )
            assert f"[{callee}] server GET {path}" in lines[client + 1], block
    failing = [b for b in blocks if "ERROR" in b]
    assert len(failing) == 1, out.stdout
    assert "network-error" in failing[0] and "RuntimeError" in failing[0]
    assert "[demo-client] client GET" in failing[0] and " 502 " in failing[0]
