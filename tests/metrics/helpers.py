"""Shared pieces of the metrics tests: scraping an exposition and reading its samples."""

from __future__ import annotations

import http.server
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

import tracer
import tracer.metrics
from tracer import context


def scrape(url: str) -> str:
    """The text of one scrape of ``url`` (untraced)."""
    with context.suppressed():
        with urllib.request.urlopen(url, timeout=10) as response:
            return str(response.read().decode())


def local_text() -> str:
    """This process's exposition, as a scrape would give it."""
    from prometheus_client import generate_latest

    return generate_latest(tracer.metrics.registry()).decode()


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample called ``name`` in an exposition."""
    out = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out.append((dict(sample.labels), float(sample.value)))
    return out


def total(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(
        value
        for have, value in samples(text, name)
        if all(have.get(k) == v for k, v in labels.items())
    )


def wait_until(check: Callable[[], Any], timeout: float = 20.0, step: float = 0.1) -> Any:
    """Poll ``check`` until it returns something true, at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(step)


class Handler(http.server.BaseHTTPRequestHandler):
    """``/metrics`` through tracer.metrics.serve_http; ``/status/N``; ``/sleep/MS``; else 200."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path == "/metrics":
            tracer.metrics.serve_http(self)
            return
        code = 200
        if path.startswith("/status/"):
            code = int(path.rsplit("/", 1)[1])
        if path.startswith("/sleep/"):
            time.sleep(int(path.rsplit("/", 1)[1]) / 1000)
        body = b"ok"
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class HttpServer:
    """A ThreadingHTTPServer of :class:`Handler` on 127.0.0.1."""

    def __init__(self) -> None:
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def get(url: str) -> int:
    """GET ``url`` untraced (the client side is not what is measured); its status."""
    import urllib.error

    with context.suppressed():
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                response.read()
                return int(response.status)
        except urllib.error.HTTPError as exc:
            exc.read()
            return int(exc.code)


class AioService:
    """An aiohttp application on 127.0.0.1 (``/users/{id}``, ``/status/{code}``,
    ``/sleep/{ms}``, ``/metrics``), served by a loop in its own thread."""

    def __init__(self) -> None:
        import asyncio

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runner: Any = None
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        self.url = f"http://127.0.0.1:{self.port}"

    async def _start(self) -> int:
        import asyncio

        from aiohttp import web

        async def user(request: web.Request) -> web.Response:
            return web.Response(text="user")

        async def status(request: web.Request) -> web.Response:
            return web.Response(status=int(request.match_info["code"]), text="s")

        async def sleep(request: web.Request) -> web.Response:
            await asyncio.sleep(int(request.match_info["ms"]) / 1000)
            return web.Response(text="slept")

        app = web.Application()
        app.router.add_get("/users/{id}", user)
        app.router.add_get("/status/{code}", status)
        app.router.add_get("/sleep/{ms}", sleep)
        app.router.add_get("/metrics", tracer.metrics.aiohttp_handler())
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        server: Any = site._server
        return int(server.sockets[0].getsockname()[1])

    def close(self) -> None:
        import asyncio

        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def settled(name: str, expected: float, read: Callable[[], str] = local_text, **labels: str) -> str:
    """An exposition in which ``name`` (with ``labels``) reached ``expected``: a server records
    a request once its response is out, just after the client got it. Bounded wait."""
    text = ""

    def check() -> bool:
        nonlocal text
        text = read()
        return total(text, name, **labels) >= expected

    wait_until(check, timeout=10, step=0.02)
    return text
