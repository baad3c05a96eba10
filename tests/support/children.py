"""Child processes: a child Python that imports this checkout's tracer, one whose output is
read as it comes, a forked child waited for."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

from tests.support.waiting import DEADLINE

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a child Python that must import this checkout's tracer."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACE_")}
    # The spool's folder, and the build the suite runs on (TRACE_PURE_PYTHON), go to children.
    for name in ("TRACE_SPOOL_DIR", "TRACE_PURE_PYTHON"):
        if name in os.environ:
            env[name] = os.environ[name]
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def assert_child_prints_ok(code: str) -> None:
    """Run ``code`` in a fresh interpreter (this checkout's tracer, nothing imported yet): it
    must exit 0 and print ``ok``."""
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=90,
        env=subprocess_env(),
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def wait_child(pid: int, timeout: float = DEADLINE) -> int:
    """Wait for a forked child; kill it if it hangs. Returns its exit code."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError("the forked child hung")


class Child:
    """A long-running child (``python -m tracer ...`` by default) whose stdout and stderr lines
    are read as they come, by threads, so that neither pipe can fill up and block it."""

    def __init__(
        self,
        *args: str,
        cwd: str | Path,
        command: tuple[str, ...] = (sys.executable, "-m", "tracer"),
        **env: str,
    ) -> None:
        self.proc = subprocess.Popen(
            [*command, *args],
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

    def wait_for(self, text: str, timeout: float = DEADLINE) -> str:
        """The first line (stdout or stderr) holding ``text``; fails when the child ends
        without it or after ``timeout``."""
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

    def stop(self, sig: int = signal.SIGINT, timeout: float = DEADLINE) -> int:
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
