"""A real Redis for the tests: Debian's ``redis-server`` on 127.0.0.1, in a temporary directory.

One server per test process (the fixture :func:`redis_server` is session-scoped; and
:func:`redis_cluster`, a cluster of one node, for the cluster client), with no
persistence (no RDB snapshots, no AOF), listening on a free port; stopped at the end. Tests that
use it are skipped, with the reason, when ``redis-server`` is not installed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.waiting import DEADLINE

#: Where Debian puts the server; ``PATH`` is searched too.
BINARY = "/usr/bin/redis-server"


#: No persistence, loopback only, in the foreground.
OPTIONS = ("--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no")


#: A cluster node (its state file in the server's directory).
CLUSTER_OPTIONS = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")


def binary() -> str | None:
    """The redis-server executable, or None when it is not installed."""
    if os.access(BINARY, os.X_OK):
        return BINARY
    return shutil.which("redis-server")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """A running ``redis-server``: :attr:`host`, :attr:`port`, :meth:`url`, :meth:`stop`."""

    host = "127.0.0.1"

    def __init__(self, executable: str, directory: Path, cluster: bool = False) -> None:
        self.directory = directory
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        # The port is free when probed but could be taken before the server binds it: a few
        # attempts, each on a new port, rule out a test run failing on that race.
        for _ in range(5):
            port = _free_port()
            log = open(directory / "redis.log", "ab")
            extra = CLUSTER_OPTIONS if cluster else ()
            proc = subprocess.Popen(
                [executable, "--port", str(port), "--dir", str(directory), *OPTIONS, *extra],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
            log.close()
            deadline = time.monotonic() + DEADLINE
            while proc.poll() is None and time.monotonic() < deadline:
                if _ping(port):
                    self.port, self.proc = port, proc
                    if cluster:
                        self._own_every_slot()
                    return
                time.sleep(0.02)
            proc.kill()
            proc.wait(10)
        raise RuntimeError(
            "redis-server did not start: " + (directory / "redis.log").read_text(errors="replace")
        )

    def _command(self, *words: str) -> bytes:
        with socket.create_connection((self.host, self.port), timeout=DEADLINE) as conn:
            conn.sendall(" ".join(words).encode() + b"\r\n")
            return conn.recv(65536)

    def _own_every_slot(self) -> None:
        """Make this node a cluster of one: it serves all 16384 slots."""
        assert self._command("CLUSTER", "ADDSLOTSRANGE", "0", "16383").startswith(b"+OK")
        deadline = time.monotonic() + DEADLINE
        while b"cluster_state:ok" not in self._command("CLUSTER", "INFO"):
            if time.monotonic() > deadline:
                raise RuntimeError("the one-node redis cluster did not become ready")
            time.sleep(0.02)

    def url(self, db: int = 0) -> str:
        """The ``redis://`` URL of database ``db``."""
        return f"redis://{self.host}:{self.port}/{db}"

    def stop(self) -> None:
        """Stop the server and wait for it."""
        proc = self.proc
        if proc is None:
            return
        self.proc = None
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _serve(cluster: bool) -> Iterator[RedisServer]:
    executable = binary()
    if executable is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server)")
    with tempfile.TemporaryDirectory(prefix="tracer-redis-") as directory:
        server = RedisServer(executable, Path(directory), cluster)
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A Redis server for the whole test process (see the module docstring)."""
    yield from _serve(False)


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisServer]:
    """A Redis cluster of one node, which serves every slot, for the whole test process."""
    yield from _serve(True)
