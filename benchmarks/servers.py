"""A hello-world server under load, one variant per process:
``python -m benchmarks.servers {aiohttp,http-server} VARIANT``.

It prints ``PORT n`` once listening on 127.0.0.1, serves until a line arrives on stdin (or
``--lifetime`` runs out), then flushes the variant's spans and prints
``RESULT {"handled": n, "spans": n, ...}``: the requests its handler answered and the spans the
sink received, which the orchestrator compares.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from benchmarks.common import PORT_PREFIX, Setup, emit, make_setup

BODY = b"Hello, world"


def stop_on_stdin(callback: Any) -> None:
    """Call ``callback`` from a daemon thread once stdin has a line (or is closed)."""

    def read() -> None:
        sys.stdin.readline()
        callback()

    threading.Thread(target=read, daemon=True).start()


def serve_aiohttp(setup: Setup, lifetime: float) -> int:
    from aiohttp import web

    handled = 0

    async def hello(request: web.Request) -> web.Response:
        nonlocal handled
        handled += 1
        return web.Response(body=BODY, content_type="text/plain")

    async def run() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        # Looked up now, not at import: instrumentation may replace web.Application.
        app = web.Application()
        app.router.add_get("/", hello)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        print(f"{PORT_PREFIX}{port}", flush=True)
        stop_on_stdin(lambda: loop.call_soon_threadsafe(stop.set))
        try:
            await asyncio.wait_for(stop.wait(), lifetime)
        except asyncio.TimeoutError:
            pass
        await runner.cleanup()

    asyncio.run(run())
    return handled


def serve_http_server(setup: Setup, lifetime: float) -> int:
    lock = threading.Lock()
    handled = 0

    class Hello(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            # Without it, delayed ACKs hold each small response back: a few hundred req/s.
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            super().setup()

        def do_GET(self) -> None:
            nonlocal handled
            with lock:
                handled += 1
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True

    server = Server(("127.0.0.1", 0), Hello)
    print(f"{PORT_PREFIX}{server.server_address[1]}", flush=True)
    stop_on_stdin(server.shutdown)
    timer = threading.Timer(lifetime, server.shutdown)
    timer.daemon = True
    timer.start()
    server.serve_forever(poll_interval=0.1)
    timer.cancel()
    server.server_close()
    with lock:
        return handled


SERVERS = {"aiohttp": ("aiohttp-server", serve_aiohttp), "http-server": ("", serve_http_server)}


class Stages:
    """The stage variants of the server-stages rows: tracer installed, but a request goes only so
    far. ``patched``: the patched methods run, but no span is started (the request is treated as
    ignored). ``spans``: server spans are started, get their response headers and finish, then
    are counted and dropped instead of entering the pipeline."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self.dropped = 0
        if stage == "patched":
            from tracer.runtime import Runtime

            # Before install: the instrumentations bind the runtime's method when they patch.
            Runtime.server_span = lambda self, *args, **kwargs: None  # type: ignore[method-assign]

    def drop(self, span: Any) -> None:
        self.dropped += 1

    def after_install(self) -> None:
        if self.stage == "spans":
            from tracer import installer
            from tracer.span import SpanProcessor

            rt = installer.runtime
            assert rt is not None
            drop = self.drop

            class Dropper(SpanProcessor):
                def on_end(self, span: Any) -> None:
                    drop(span)

            # The collector, the last processor, replaced by one that counts and drops.
            rt.remove_processor(rt.collector)
            rt.add_processor(Dropper())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=sorted(SERVERS))
    parser.add_argument(
        "variant",
        choices=[
            "untraced",
            "patched",
            "spans",
            "tracer",
            "metrics",
            "memory",
            "defaults",
            "spanmap",
            "profiled",
            "otel",
        ],
    )
    parser.add_argument("--lifetime", type=float, default=120.0)
    args = parser.parse_args(argv)
    instrument, serve = SERVERS[args.kind]
    stages = Stages(args.variant) if args.variant in ("patched", "spans") else None
    variant = "tracer" if stages is not None else args.variant
    setup = make_setup(variant, [instrument] if instrument else [])
    if stages is not None:
        stages.after_install()
    handled = serve(setup, args.lifetime)
    flushed = setup.flush()
    spans, expected = setup.delivered(), handled
    if args.variant in ("untraced", "patched"):
        expected = 0
    elif stages is not None:
        # Made and dropped before the pipeline: one that reached the sink spoils the count.
        spans += stages.dropped
    result = {
        "handled": handled,
        "spans": spans,
        "expected": expected,
        "flushed": flushed,
        "stats": setup.stats(),
        "notes": setup.notes,
    }
    setup.close()
    emit(result)


if __name__ == "__main__":
    main()
