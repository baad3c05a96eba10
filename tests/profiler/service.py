"""A service with a CPU-bound ``/hot`` and a light ``/cold``, traced, for the profiler's proofs.

Run as ``python -m tests.profiler.service {aiohttp,http-server} OUT_DIR``. tracer is installed
with the metrics port on an ephemeral port (``/debug/profile`` starts a profile there) and
``profile_dir`` at ``OUT_DIR/profiles``. Every batch the pipeline delivers is appended to
``OUT_DIR/batches.jsonl`` by a file reporter, so the test reads the spans and the ``profile``
batches from there. The first line of stdout is ``{"port": ..., "metrics_port": ...}``.

Routes: ``/hot`` (spends its time in :func:`burn_hot`), ``/cold`` (almost nothing), ``/chain``
(aiohttp only: calls ``/cold`` of this service with aiohttp's client, so its trace has a
client span between two server spans), ``/flush`` (flushes the pipeline).
"""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import Any

import tracer
import tracer.metrics

HOT_LOOPS = 600_000


def burn_hot(loops: int = HOT_LOOPS) -> int:
    """The function /hot spends its time in."""
    total = 0
    for i in range(loops):
        total += (i * i) % 7
    return total


class FileReporter:
    """Appends every batch to a JSON-lines file, then acknowledges it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.Lock()

    def send(self, data: dict[str, Any], callback: Any) -> None:
        with self.lock, open(self.path, "a", encoding="utf-8") as out:
            out.write(json.dumps(data, default=str) + "\n")
        callback(None)


def _install(out_dir: str) -> None:
    tracer.install(
        app_name="profiled",
        reporter=FileReporter(os.path.join(out_dir, "batches.jsonl")),
        metrics_port=0,
        metrics_interval=None,
        memory_watch=False,
        flush_interval=0.05,
        profile_dir=os.path.join(out_dir, "profiles"),
        heap_snapshot_signal=None,
    )


def _ready(port: int) -> None:
    print(json.dumps({"port": port, "metrics_port": tracer.metrics.metrics_port()}), flush=True)


def run_aiohttp(out_dir: str) -> None:
    import asyncio

    import aiohttp
    from aiohttp import web

    _install(out_dir)
    state: dict[str, Any] = {}

    async def hot(request: web.Request) -> web.Response:
        return web.Response(text=str(burn_hot()))

    async def cold(request: web.Request) -> web.Response:
        return web.Response(text="cold")

    async def chain(request: web.Request) -> web.Response:
        # A little CPU before the call, so samples land in this handler too.
        burn_hot(2_000)
        async with state["session"].get(f"http://127.0.0.1:{state['port']}/cold") as response:
            body = await response.text()
        return web.Response(text=body)

    async def flush(request: web.Request) -> web.Response:
        ok = await asyncio.get_running_loop().run_in_executor(None, tracer.flush, 10.0)
        return web.Response(text=str(ok))

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/hot", hot)
        app.router.add_get("/cold", cold)
        app.router.add_get("/chain", chain)
        app.router.add_get("/flush", flush)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=2048)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        state["port"] = port
        state["session"] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=60)
        )
        _ready(port)
        await asyncio.Event().wait()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass


def run_http_server(out_dir: str) -> None:
    import http.server

    _install(out_dir)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            if self.path == "/hot":
                body = str(burn_hot()).encode()
            elif self.path == "/flush":
                body = str(tracer.flush(10.0)).encode()
            else:
                body = b"cold"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    _ready(server.server_address[1])
    try:
        server.serve_forever(poll_interval=0.05)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    kind, out = sys.argv[1], sys.argv[2]
    (run_aiohttp if kind == "aiohttp" else run_http_server)(out)
    tracer.uninstall()
