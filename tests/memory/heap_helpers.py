"""A leaking aiohttp service for the heap snapshot tests, and what the tests use to drive it.

``serve(out_dir)`` (run in a child: ``python -c "from tests.memory.heap_helpers import serve;
serve('OUT')"``) installs a SIGUSR2 handler of its own, then tracer (snapshots to
``OUT/snapshots``), and answers on 127.0.0.1:

* ``/leak``: appends one :class:`Record` to the module-level ``RECORDS`` list: the leak;
* ``/slow?ms=N``: sleeps N ms, then answers ``slow N``; ``/inflight`` counts slow requests
  that started and have not answered yet;
* ``/previous``: how many times the service's own SIGUSR2 handler ran.

It prints its port on the first line of stdout.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

from tests.conftest import subprocess_env
from tests.support.waiting import eventually

RECORDS: list[Record] = []
PREVIOUS_CALLS = 0
SNAPSHOT_NAME = re.compile(r"^heap-.+-\d+-\d{8}T\d{6}\.\d{6}Z\.json\.gz$")


class Record:
    """What the leaking handler keeps: one per request, with only plain values inside."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.at = time.time()
        self.note = f"request {n}"


class Discard:
    """A reporter that acknowledges and drops everything, so tracer itself keeps nothing."""

    def send(self, data: dict[str, Any], callback: Any) -> None:
        callback(None)


def serve(out_dir: str) -> None:
    import asyncio
    import signal
    import socket

    from aiohttp import web

    import tracer

    def previous(signum: int, frame: Any) -> None:
        global PREVIOUS_CALLS
        PREVIOUS_CALLS += 1

    # The application's own handler, there before tracer: it must keep running.
    signal.signal(signal.SIGUSR2, previous)
    tracer.install(
        app_name="heapleak",
        reporter=Discard(),
        memory_watch=False,
        heap_snapshot_dir=os.path.join(out_dir, "snapshots"),
        heap_snapshot_max_files=50,
        # The tests take snapshots on signals one after another.
        heap_snapshot_signal_interval=0.0,
    )
    inflight = 0

    async def leak(request: web.Request) -> web.Response:
        RECORDS.append(Record(len(RECORDS)))
        return web.Response(text=str(len(RECORDS)))

    async def slow(request: web.Request) -> web.Response:
        nonlocal inflight
        ms = int(request.query["ms"])
        inflight += 1
        try:
            await asyncio.sleep(ms / 1000)
        finally:
            inflight -= 1
        return web.Response(text=f"slow {ms}")

    async def count(request: web.Request) -> web.Response:
        return web.Response(text=str(inflight))

    async def calls(request: web.Request) -> web.Response:
        return web.Response(text=str(PREVIOUS_CALLS))

    app = web.Application()
    app.router.add_get("/leak", leak)
    app.router.add_get("/slow", slow)
    app.router.add_get("/inflight", count)
    app.router.add_get("/previous", calls)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    print(sock.getsockname()[1], flush=True)
    web.run_app(app, sock=sock, print=None, access_log=None, handle_signals=True)


class Service:
    """The child process running :func:`serve`."""

    def __init__(self, proc: subprocess.Popen[str], port: int, out_dir: str) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.url = f"http://127.0.0.1:{port}"
        self.snapshots = os.path.join(out_dir, "snapshots")

        self._conn: http.client.HTTPConnection | None = None
        self._port = port

    def get(self, path: str, timeout: float = 30.0) -> str:
        """GET ``path`` on a new connection."""
        with urllib.request.urlopen(self.url + path, timeout=timeout) as resp:
            body: bytes = resp.read()
            assert resp.status == 200
            return body.decode()

    def get_kept_alive(self, path: str) -> str:
        """GET ``path`` on one keep-alive connection, as a load generator would: a connection
        per request would leave a cancelled keep-alive timer per request in asyncio's queue
        for a while, which a short test would see grow as fast as the leak."""
        if self._conn is None:
            self._conn = http.client.HTTPConnection("127.0.0.1", self._port, timeout=30)
        self._conn.request("GET", path)
        resp = self._conn.getresponse()
        body = resp.read()
        assert resp.status == 200
        return body.decode()

    def files(self) -> list[str]:
        if not os.path.isdir(self.snapshots):
            return []
        return sorted(n for n in os.listdir(self.snapshots) if SNAPSHOT_NAME.match(n))

    def signal_snapshot(self, timeout: float = 60.0) -> str:
        """Send SIGUSR2 and wait for the new snapshot file; its path."""
        import signal

        before = set(self.files())
        os.kill(self.pid, signal.SIGUSR2)
        return wait_for_file(self.snapshots, before, timeout)


def wait_for_file(folder: str, before: set[str], timeout: float = 60.0) -> str:
    """The path of the first snapshot file in ``folder`` not in ``before`` (bounded wait)."""

    def fresh() -> list[str]:
        if not os.path.isdir(folder):
            return []
        new = sorted(n for n in os.listdir(folder) if SNAPSHOT_NAME.match(n))
        return [n for n in new if n not in before]

    return os.path.join(folder, eventually(fresh, timeout, what=f"a new snapshot in {folder}")[0])


@contextlib.contextmanager
def service(out_dir: str) -> Iterator[Service]:
    code = f"from tests.memory.heap_helpers import serve; serve({out_dir!r})"
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(TRACER_STRICT="1"),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.strip():
            proc.kill()
            _, err = proc.communicate(timeout=30)
            raise AssertionError(f"the service did not start: {err}")
        svc = Service(proc, int(line), out_dir)
        yield svc
        assert proc.poll() is None, "the service died"
        if svc._conn is not None:
            svc._conn.close()
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate(timeout=30)


def heap_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m tracer heap ARGS`` in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "tracer", "heap", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=subprocess_env(),
    )
