"""An aiohttp service that leaks (or not) on every request, with tracer's memory watcher on.

Run as ``python -m tests.memory.leak_service OUT_DIR``. The environment chooses:

* ``LEAK``: ``heap`` (each request appends a few Python objects to a module-level list),
  ``rss`` (each request keeps an anonymous ``mmap`` it wrote into: memory outside the Python
  heap), ``bursts`` (every ``BURST_EVERY`` seconds, 1 by default, a burst of 60,000 objects
  is built, at most three bursts are held, and ``gc.collect()`` runs after each: bounded, a
  sawtooth, no leak) or ``none``;
* ``MEMORY_INTERVAL`` (seconds), ``LEAK_OBSERVATIONS``, ``LEAK_WINDOW`` (seconds);
* ``FULL_GC`` (seconds): also run ``gc.collect()`` that often, as a service with many
  long-lived objects coming and going gets full collections by itself;
* ``OBSERVATIONS=1``: every ``stats`` event also goes to ``OUT_DIR/observations.jsonl`` (the
  benchmark replays them).

It prints its port on the first line of stdout. Every report batch of kind ``memory`` the
pipeline delivers is appended to ``OUT_DIR/memory.jsonl`` by a user reporter; snapshots go to
``OUT_DIR/snapshots``.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import json
import mmap
import os
import socket
import sys
import threading
from typing import Any

from aiohttp import web

import tracer
import tracer.memory

LEAKED: list[Any] = []
RSS_CHUNK = 64 * 1024


class Session:
    """What the leaking handler keeps: a few objects per request."""

    def __init__(self, request: web.Request) -> None:
        self.path = request.path
        self.headers = dict(request.headers)
        self.parts = [str(i) * 3 for i in range(8)]


class FileReporter:
    """Appends memory batches to a JSON-lines file; spans are acknowledged and dropped."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.Lock()

    def send(self, data: dict[str, Any], callback: Any) -> None:
        if "memory" in data:
            with self.lock, open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(data) + "\n")
        callback(None)


def main() -> None:
    out = sys.argv[1]
    leak = os.environ.get("LEAK", "none")
    tracer.install(
        app_name="leaky",
        reporter=FileReporter(os.path.join(out, "memory.jsonl")),
        flush_interval=0.05,
        memory_interval=float(os.environ.get("MEMORY_INTERVAL", "0.25")),
        leak_observations=int(os.environ.get("LEAK_OBSERVATIONS", "5")),
        leak_window=float(os.environ.get("LEAK_WINDOW", "300")),
        heap_snapshot_dir=os.path.join(out, "snapshots"),
        heap_snapshot_min_interval=0.0,
        heap_snapshot_signal=None,
    )

    if os.environ.get("OBSERVATIONS") == "1":
        path = os.path.join(out, "observations.jsonl")

        def keep(stats: dict[str, Any]) -> None:
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(stats) + "\n")

        tracer.memory.on("stats", keep)

    async def handle(request: web.Request) -> web.Response:
        if leak == "heap":
            LEAKED.append(Session(request))
        elif leak == "rss":
            buf = mmap.mmap(-1, RSS_CHUNK)
            for offset in range(0, RSS_CHUNK, mmap.PAGESIZE):
                buf[offset] = 1
            LEAKED.append(buf)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    if leak == "bursts":
        held: collections.deque[list[Any]] = collections.deque(maxlen=3)
        pause = float(os.environ.get("BURST_EVERY", "1"))

        async def bursts(app: web.Application) -> Any:
            async def loop() -> None:
                while True:
                    await asyncio.sleep(pause)
                    held.append([{"n": i} for i in range(60_000)])
                    gc.collect()

            task = asyncio.ensure_future(loop())
            yield
            task.cancel()

        app.cleanup_ctx.append(bursts)
    every = float(os.environ.get("FULL_GC", "0"))
    if every:

        async def collect(app: web.Application) -> Any:
            async def loop() -> None:
                while True:
                    await asyncio.sleep(every)
                    gc.collect()

            task = asyncio.ensure_future(loop())
            yield
            task.cancel()

        app.cleanup_ctx.append(collect)

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    print(sock.getsockname()[1], flush=True)
    web.run_app(app, sock=sock, print=None, access_log=None, handle_signals=True)


if __name__ == "__main__":
    main()
