"""WSGI servers on 127.0.0.1 served from a thread of this process: wsgiref's and werkzeug's."""

from __future__ import annotations

import socketserver
import threading
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class Wsgiref:
    """``app`` served by ``wsgiref.simple_server`` (a thread per request) on an ephemeral port."""

    def __init__(self, app: Any) -> None:
        self.server = make_server(
            "127.0.0.1", 0, app, server_class=_ThreadingServer, handler_class=_QuietHandler
        )
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(10)


class Werkzeug:
    """``app`` served by werkzeug's development server (``flask run``'s) on an ephemeral port."""

    def __init__(self, app: Any) -> None:
        from werkzeug.serving import make_server as werkzeug_server

        self.server = werkzeug_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(10)
