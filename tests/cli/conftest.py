"""Helpers for the ``tracer`` command's tests: run it in a child process, read what it prints.

``plain_install`` is the packaging tests' fixture (a fresh virtualenv with ``pip install
<checkout>``, no extras), imported so that these tests can run the command as users get it.
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from tests.conftest import subprocess_env
from tests.packaging.conftest import Venv, plain_install

__all__ = ["Child", "Venv", "plain_install", "spans_in", "tracer_cmd"]


def tracer_cmd(
    *args: str, cwd: str | Path, timeout: float = 60, **env: str
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


class Child:
    """A long-running ``python -m tracer ...`` whose stdout and stderr lines are read as they
    come, by threads, so that neither pipe can fill up and block it."""

    def __init__(self, *args: str, cwd: str | Path, **env: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tracer", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env=subprocess_env(PYTHONUNBUFFERED="1", **env),
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._lines: queue.Queue[str] = queue.Queue()
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.stdout), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, pipe: IO[str], into: list[str]) -> None:
        for line in pipe:
            into.append(line)
            self._lines.put(line)

    def wait_for(self, text: str, timeout: float = 30) -> str:
        """The first line (stdout or stderr) holding ``text``; fails after ``timeout``."""
        deadline = time.monotonic() + timeout
        for line in self.stdout + self.stderr:
            if text in line:
                return line
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=min(0.2, max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                if self.proc.poll() is not None and self._lines.empty():
                    break
                continue
            if text in line:
                return line
        raise AssertionError(
            f"no {text!r} within {timeout} s; stdout:\n{''.join(self.stdout)}\n"
            f"stderr:\n{''.join(self.stderr)}"
        )

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30) -> int:
        """Send ``sig`` (Ctrl-C by default), wait for the exit; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        for reader in self._readers:
            reader.join(10)
        return self.proc.returncode
