"""Serving the registry: tracer's own ``/metrics`` server, and handlers to mount in applications."""

from __future__ import annotations

import http.server
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import choose_encoder

from tracer import patching, safety


def render(registry: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    """The exposition of ``registry`` in the format ``accept`` asks for, and its content type."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


# Scrapes served at the same time; a connection past these is answered 503 at once.
MAX_CONNECTIONS = 4
# The longest one connection may take, request and response (Prometheus' default scrape
# timeout): a client that trickles its request a byte at a time is cut off then.
CONNECTION_DEADLINE = 10.0

_REFUSED = b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


WSGIApp = Callable[[dict[str, Any], Any], Iterable[bytes]]

# Path -> WSGI app served on the metrics port beside /metrics (the profiler's /debug/profile),
# replaced as a whole so that a scrape thread reads it without a lock.
_routes: dict[str, WSGIApp] = {}


def add_route(path: str, app: WSGIApp) -> None:
    """Serve ``app`` at ``path`` on the metrics port (a feature's debug endpoint)."""
    global _routes
    _routes = {**_routes, path: app}


def remove_route(path: str) -> None:
    """Stop serving ``path``; one never added is ignored."""
    global _routes
    _routes = {name: app for name, app in _routes.items() if name != path}


def routed(metrics: WSGIApp) -> WSGIApp:
    """``metrics`` for every path but those of :func:`add_route`."""

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        other = _routes.get(environ.get("PATH_INFO", ""))
        return (other or metrics)(environ, start_response)

    return app


class _Handler(WSGIRequestHandler):
    """tracer's own endpoint: silent, and never traced (scrapes are not the application's)."""

    # A connection that sends nothing for this long is given up on; one that keeps sending
    # slowly meets the connection's deadline (Server.service_actions).
    timeout = 2

    def parse_request(self) -> bool:
        # http.server's parse_request is where tracer starts server spans: this server calls
        # the original.
        base = http.server.BaseHTTPRequestHandler
        original = patching._originals.get((base, "parse_request"), base.parse_request)
        return bool(original(self))

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Server(WSGIServer):
    """Accepts on tracer's metrics thread and serves each connection on a thread of its own,
    at most :data:`MAX_CONNECTIONS` at once, each for at most :data:`CONNECTION_DEADLINE`.

    The accepting thread never reads from a client, so neither a slow client nor a full house
    holds back the file writes or stopping; stopping ends the open connections.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Open connections and their deadlines. A socket is closed only after it leaves this
        # table under the lock, so the deadline never shuts down a socket that was closed
        # (whose descriptor could be another file's by then).
        self._open: dict[socket.socket, float] = {}
        self._open_lock = threading.Lock()
        # Polled by MetricsThread: an accept that finds the client gone must not block.
        self.socket.setblocking(False)

    def accept(self) -> None:
        """Take one waiting connection, if there is one, and hand it to a thread."""
        try:
            request, client_address = self.get_request()
        except OSError:
            return
        try:
            self.process_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
            self.shutdown_request(request)

    def connections(self) -> int:
        """Connections being served now."""
        with self._open_lock:
            return len(self._open)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            full = len(self._open) >= MAX_CONNECTIONS
            if not full:
                self._open[request] = time.monotonic() + CONNECTION_DEADLINE
        if full:
            self._refuse(request)
            return
        thread = threading.Thread(
            target=self._serve, args=(request, client_address), name="tracer-metrics-scrape"
        )
        thread.daemon = True
        thread.start()

    def _serve(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            with self._open_lock:
                self._open.pop(request, None)
            self.shutdown_request(request)

    def _refuse(self, request: socket.socket) -> None:
        # Never blocks: the answer fits any send buffer, and what the client sent so far is
        # read first, so that closing does not reset the connection before it is seen.
        try:
            request.setblocking(False)
            try:
                request.recv(65536)
            except BlockingIOError:
                pass
            request.send(_REFUSED)
        except OSError:
            pass
        self.shutdown_request(request)

    def _end(self, expired_only: bool) -> None:
        now = time.monotonic()
        with self._open_lock:
            for sock, deadline in self._open.items():
                if not expired_only or now >= deadline:
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

    def close_connections(self) -> None:
        """End every open connection: its thread sees the socket closed and finishes."""
        self._end(expired_only=False)

    def forget_connections(self) -> None:
        """In a forked child: close its copies of the parent's connections, without shutting
        them down (which would end them for the parent too), so they end when the parent's do."""
        # Not taken: a thread of the parent (a scrape ending, the deadline check) may have held
        # it at the fork, and that thread does not exist here to release it.
        self._open_lock = threading.Lock()
        for sock in self._open:
            sock.close()
        self._open.clear()

    def service_actions(self) -> None:
        self._end(expired_only=True)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a scraper that went away, or one cut off


class MetricsThread:
    """tracer's metrics thread: it accepts ``/metrics`` connections (when configured), each
    served on a ``tracer-metrics-scrape`` thread, and runs ``tick`` (writing this process's
    file for a pre-forking server) every ``interval``."""

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
        self.server: Server | None = None
        # Written to by stop(), so that the thread's wait for connections ends at once.
        self._wake: tuple[socket.socket, socket.socket] | None = None
        if port is not None:
            assert host is not None
            self.server = make_server(
                host,
                port,
                routed(make_wsgi_app(registry)),
                server_class=Server,
                handler_class=_Handler,
            )
            self._wake = socket.socketpair()
        self.thread = threading.Thread(target=self._run, name="tracer-metrics", daemon=True)

    @property
    def port(self) -> int | None:
        return None if self.server is None else int(self.server.server_address[1])

    def start(self) -> None:
        self.thread.start()

    def _maybe_tick(self) -> None:
        now = time.monotonic()
        if self._tick is not None and now >= self._next:
            self._next = now + self.interval
            try:
                self._tick()
            except Exception as exc:
                safety.internal_error("metrics.tick", exc)

    def _run(self) -> None:
        server, wake = self.server, self._wake
        if server is None or wake is None:
            while not self._stop.is_set():
                self._maybe_tick()
                self._stop.wait(self.interval)
            return
        poll = min(0.5, self.interval)
        with selectors.DefaultSelector() as selector:
            selector.register(server.socket, selectors.EVENT_READ)
            selector.register(wake[0], selectors.EVENT_READ)
            while not self._stop.is_set():
                ready = selector.select(poll)
                if self._stop.is_set():
                    break
                if any(key.fileobj is server.socket for key, _ in ready):
                    server.accept()
                server.service_actions()
                self._maybe_tick()

    def stop(self) -> None:
        """Stop at once: the thread is woken, open connections are ended, not waited for."""
        self._stop.set()
        if self._wake is not None:
            try:
                self._wake[1].send(b"x")
            except OSError:
                pass
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            # What it may be doing is one file write.
            self.thread.join(5.0)
        if self.server is not None:
            self.server.close_connections()
            self.server.server_close()
        self._close_wake()

    def _close_wake(self) -> None:
        wake, self._wake = self._wake, None
        for sock in wake or ():
            sock.close()

    def forget(self) -> None:
        """In a forked child: the thread is gone; close the inherited sockets."""
        if self.server is not None:
            self.server.forget_connections()
            try:
                self.server.socket.close()
            except OSError:
                pass
        self._close_wake()


def wsgi(registry: CollectorRegistry) -> Callable[[dict[str, Any], Any], Iterable[bytes]]:
    app: Callable[[dict[str, Any], Any], Iterable[bytes]] = make_wsgi_app(registry)
    return app
