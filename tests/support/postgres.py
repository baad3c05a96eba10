"""A real PostgreSQL for the tests: Debian's ``postgresql``, a fresh cluster in a temporary
directory.

One server per test process (the fixture :func:`postgres_server` is session-scoped), listening
on 127.0.0.1 and a free port, its unix socket in the temporary directory, with no fsync and
``trust`` authentication for the ``postgres`` role; stopped and removed at the end.

``initdb`` and ``postgres`` refuse to run as root: when the tests run as root, both run as the
``postgres`` system user (started with that user and group, no wrapper process in between, so
that the server gets the signal that stops it), which owns the directory. Tests that use it are
skipped, with the reason, when the binaries (``/usr/lib/postgresql/<version>/bin``) or, as root,
the ``postgres`` user are missing.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.waiting import DEADLINE

#: Where Debian puts the binaries, one folder per major version.
PATTERN = "/usr/lib/postgresql/*/bin"
USER = "postgres"
DATABASE = "postgres"


def bin_dir() -> Path | None:
    """The newest installed version's binary folder, or None."""
    found = []
    for folder in glob.glob(PATTERN):
        version = Path(folder).parent.name
        if version.isdigit() and os.access(os.path.join(folder, "initdb"), os.X_OK):
            found.append((int(version), Path(folder)))
    return max(found)[1] if found else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _ready(port: int) -> bool:
    # An SSLRequest: a running server answers it with one byte, "N" (no TLS) or "S".
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as conn:
            conn.sendall(b"\x00\x00\x00\x08\x04\xd2\x16\x2f")
            return conn.recv(1) in (b"N", b"S")
    except OSError:
        return False


class PostgresServer:
    """A running server: :attr:`host`, :attr:`port`, :attr:`user`, :attr:`database`,
    :meth:`dsn`, :meth:`stop`."""

    host = "127.0.0.1"
    user = USER
    database = DATABASE

    def __init__(self, bindir: Path, directory: Path, user: str | None) -> None:
        self.directory = directory
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        data = directory / "data"
        initdb = subprocess.run(
            [str(bindir / "initdb"), "-D", str(data), "-U", USER, "-A", "trust",
             "-E", "UTF8", "--no-sync", "--locale=C"],
            capture_output=True,
            timeout=DEADLINE,
            user=user,
            group=user,
            extra_groups=[] if user else None,
            cwd=directory,
        )  # fmt: skip
        if initdb.returncode != 0:
            raise RuntimeError(f"initdb failed: {initdb.stderr.decode(errors='replace')}")
        # The port is free when probed but could be taken before the server binds it: a few
        # attempts, each on a new port, rule out a test run failing on that race.
        for _ in range(5):
            port = _free_port()
            log = open(directory / "postgres.log", "ab")
            proc = subprocess.Popen(
                [str(bindir / "postgres"), "-D", str(data), "-p", str(port),
                 "-k", str(directory), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
                 "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                user=user,
                group=user,
                extra_groups=[] if user else None,
                cwd=directory,
            )  # fmt: skip
            log.close()
            deadline = time.monotonic() + DEADLINE
            while proc.poll() is None and time.monotonic() < deadline:
                if _ready(port):
                    self.port, self.proc = port, proc
                    return
                time.sleep(0.05)
            proc.kill()
            proc.wait()
        text = (directory / "postgres.log").read_text(errors="replace")
        raise RuntimeError(f"postgres did not start:\n{text[-2000:]}")

    def dsn(self) -> str:
        """A libpq connection string for the server's ``postgres`` database."""
        return f"host={self.host} port={self.port} user={self.user} dbname={self.database}"

    def stop(self) -> None:
        """Stop the server (a fast shutdown: SIGINT) and wait for it."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _user() -> tuple[str | None, int | None, str | None]:
    """The user to run the server as (None: this one), the uid that must own its directory,
    or why it cannot run."""
    if os.geteuid() != 0:
        return None, None, None
    try:
        uid = pwd.getpwnam(USER).pw_uid
    except KeyError:
        return None, None, f"running as root and there is no {USER!r} user to run PostgreSQL as"
    return USER, uid, None


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for this test process (skipped when PostgreSQL is missing)."""
    bindir = bin_dir()
    if bindir is None:
        pytest.skip(f"PostgreSQL is not installed (no initdb in {PATTERN})")
    user, uid, why = _user()
    if why is not None:
        pytest.skip(why)
    directory = Path(tempfile.mkdtemp(prefix="tracer-pg-"))
    if uid is not None:
        os.chown(directory, uid, -1)
    server = None
    try:
        server = PostgresServer(bindir, directory, user)
        yield server
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(directory, ignore_errors=True)
