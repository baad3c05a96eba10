"""Shared pieces of the metrics tests: scraping an exposition and reading its samples."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

import tracer
import tracer.metrics
from tests.support import servers
from tests.support.aio import AioServer
from tests.support.waiting import wait_until
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


class Handler(servers.QuietHandler):
    """``/metrics`` through tracer.metrics.serve_http; ``/status/N``; ``/sleep/MS``; else 200."""

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
        self.reply(code, body=b"ok")


class HttpServer(servers.HttpServer):
    """A ThreadingHTTPServer of :class:`Handler` on 127.0.0.1."""

    def __init__(self) -> None:
        super().__init__(Handler)


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


class AioService(AioServer):
    """An aiohttp application on 127.0.0.1 (``/users/{id}``, ``/status/{code}``,
    ``/sleep/{ms}``, ``/metrics``), served by a loop in its own thread."""

    def __init__(self) -> None:
        super().__init__()

    def app(self) -> Any:
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
        return app


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
