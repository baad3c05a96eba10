"""Helpers for the ``tracer`` command's tests: run it in a child process, read what it prints.

``plain_install`` is the packaging tests' fixture (a fresh virtualenv with ``pip install
<checkout>``, no extras), imported so that these tests can run the command as users get it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.packaging.conftest import Venv, plain_install
from tests.support.children import Child, subprocess_env

__all__ = ["Child", "Venv", "plain_install", "spans_in", "tracer_cmd"]


def tracer_cmd(
    *args: str, cwd: str | Path, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    """``python -m tracer <args>`` with this checkout's tracer, run to its end."""
    return subprocess.run(
        [sys.executable, "-m", "tracer", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=subprocess_env(**env),
    )


def spans_in(stdout: str) -> list[dict[str, Any]]:
    """The span records among the JSON lines of a stdout reporter's output."""
    return [json.loads(line) for line in stdout.splitlines() if line.startswith('{"trace_id"')]
