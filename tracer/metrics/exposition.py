"""Serving the registry: tracer's own ``/metrics`` server, and handlers to mount in applications."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterable
from socketserver import BaseServer
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import choose_encoder

from tracer import patching, safety


def render(registry: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    """The exposition of ``registry`` in the format ``accept`` asks for, and its content type."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


class _Handler(WSGIRequestHandler):
    """tracer's own endpoint: silent, and never traced (scrapes are not the application's)."""

    # One thread answers every scrape: a connection that sends nothing holds the others back
    # for this long at most (Prometheus' own scrape timeout is 10 s).
    timeout = 2

    def parse_request(self) -> bool:
        # http.server's parse_request is where tracer starts server spans: this server calls
        # the original.
        base = http.server.BaseHTTPRequestHandler
        original = patching._originals.get((base, "parse_request"), base.parse_request)
        return bool(original(self))

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(WSGIServer):
    """One thread answers scrapes one at a time; ``tick`` runs between them, every poll."""

    tick: Callable[[], None] | None = None

    def service_actions(self) -> None:
        tick = self.tick
        if tick is not None:
            tick()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a scraper that went away


class MetricsThread:
    """tracer's one metrics thread: the ``/metrics`` server (when configured) and ``tick``.

    ``tick`` (writing this process's file for a pre-forking server) runs every ``interval``.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        host: str | None,
        port: int | None,
        tick: Callable[[], None] | None,
        interval: float,
    ) -> None:
        self.interval = interval
        self._tick = tick
        self._next = 0.0
        self._stop = threading.Event()
        self.server: _Server | None = None
        if port is not None:
            assert host is not None
            self.server = make_server(
                host, port, make_wsgi_app(registry), server_class=_Server, handler_class=_Handler
            )
            self.server.tick = self._maybe_tick
        self.thread = threading.Thread(target=self._run, name="tracer-metrics", daemon=True)

    @property
    def port(self) -> int | None:
        return None if self.server is None else int(self.server.server_address[1])

    def start(self) -> None:
        self.thread.start()

    def _maybe_tick(self) -> None:
        import time

        now = time.monotonic()
        if self._tick is not None and now >= self._next:
            self._next = now + self.interval
            try:
                self._tick()
            except Exception as exc:
                safety.internal_error("metrics.tick", exc)

    def _run(self) -> None:
        server: BaseServer | None = self.server
        if server is not None:
            server.serve_forever(poll_interval=min(0.5, self.interval))
            return
        while not self._stop.is_set():
            self._maybe_tick()
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self.server is not None:
            if self.thread.is_alive():
                self.server.shutdown()
            self.server.server_close()
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(5.0)

    def forget(self) -> None:
        """In a forked child: the thread is gone; close the inherited listening socket."""
        if self.server is not None:
            try:
                self.server.socket.close()
            except OSError:
                pass


def wsgi(registry: CollectorRegistry) -> Callable[[dict[str, Any], Any], Iterable[bytes]]:
    app: Callable[[dict[str, Any], Any], Iterable[bytes]] = make_wsgi_app(registry)
    return app
