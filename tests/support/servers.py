"""Real servers on 127.0.0.1, served from daemon threads.

``serve_forever`` looks at its shutdown flag once per poll interval, 0.5 s by default: every
stopped server would cost a test half a second. Servers here poll every :data:`POLL_INTERVAL`.
"""

from __future__ import annotations

import contextlib
import gzip
import http.server
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from typing import Any

#: How often a served loop looks at its stop flag.
POLL_INTERVAL = 0.05


class QuietHandler(http.server.BaseHTTPRequestHandler):
    """An HTTP/1.1 handler that logs nothing, with :meth:`reply` for a whole answer."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def read_body(self) -> tuple[bytes, bytes]:
        """The request's body as sent, and as meant (gunzipped when it says gzip)."""
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        gzipped = self.headers.get("Content-Encoding") == "gzip"
        return raw, gzip.decompress(raw) if gzipped else raw

    def reply(self, status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> None:
        """Status line, ``headers``, a Content-Length and ``body``."""
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class HttpServer:
    """A ThreadingHTTPServer of ``handler`` on an ephemeral port of ``host``, from a thread."""

    def __init__(
        self,
        handler: type[http.server.BaseHTTPRequestHandler],
        ssl_context: ssl.SSLContext | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.httpd = http.server.ThreadingHTTPServer((host, 0), handler)
        self.httpd.daemon_threads = True
        if ssl_context is not None:
            self.httpd.socket = ssl_context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = int(self.httpd.server_address[1])
        scheme = "http" if ssl_context is None else "https"
        self.url = f"{scheme}://{host}:{self.port}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": POLL_INTERVAL}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)

    stop = close


class ReceiverBase:
    """A receiver served by :class:`HttpServer`: ``start()`` serves :meth:`handler`, ``stop()``
    ends it. Subclasses build the handler class (a :class:`QuietHandler` that knows them)."""

    http: HttpServer | None = None

    def handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        raise NotImplementedError

    def start(self, ssl_context: ssl.SSLContext | None = None) -> Any:
        self.http = HttpServer(self.handler(), ssl_context)
        return self

    def stop(self) -> None:
        assert self.http is not None
        self.http.close()

    @property
    def server(self) -> http.server.ThreadingHTTPServer | None:
        return None if self.http is None else self.http.httpd

    @property
    def port(self) -> int:
        assert self.http is not None
        return self.http.port


class TcpListener:
    """A TCP listener on 127.0.0.1 whose accept loop hands each connection to :meth:`serve`
    on a thread of its own. ``pause()`` / ``resume()`` take it down and back on the same port."""

    def __init__(
        self, port: int = 0, backlog: int | None = None, rcvbuf: int | None = None
    ) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if rcvbuf is not None:
            # Set before listen(): accepted connections inherit it.
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.listener.bind(("127.0.0.1", port))
        self.backlog = backlog
        self.port: int = self.listener.getsockname()[1]
        self._accepted = 0
        self._conns: list[socket.socket] = []
        self._listen()

    def _listen(self) -> None:
        if self.backlog is None:
            self.listener.listen()
        else:
            self.listener.listen(self.backlog)
        self.listener.settimeout(POLL_INTERVAL)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._accepted += 1
            self._conns.append(conn)
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    @property
    def accepted(self) -> int:
        """How many connections it accepted."""
        return self._accepted

    def serve(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.listener.close()
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        self._conns = []

    def pause(self) -> None:
        """Go down: stop listening and drop every connection, but keep the port, bound and not
        listening, so that connecting is refused until :meth:`resume` and no other socket can
        take the port in between (closing and listening anew could lose it)."""
        self.close()
        holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", self.port))
        self.listener = holder

    def resume(self) -> None:
        """Come back on the same port after :meth:`pause`."""
        self._listen()


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A 127.0.0.1 port that refuses connections for as long as the block runs.

    The socket stays bound without listening: connecting gets ECONNREFUSED, and no other socket
    can take the port in the meantime, as one could if it were only closed.
    """
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield int(held.getsockname()[1])


def strict_loads(data: bytes | str) -> Any:
    """json.loads that refuses NaN and Infinity, which are not JSON."""

    def refuse(name: str) -> None:
        raise ValueError(f"not JSON: {name}")

    return json.loads(data, parse_constant=refuse)
