"""A hello-world Flask application called through its WSGI entry point in-process.

The ``flask`` rows of ``python -m benchmarks.instructions`` count what one request costs Flask and
the tracer that instruments it (tracer's WSGI core, OpenTelemetry's Flask instrumentation),
without a server or a socket. The application is made when the calls start, after either tracer
is set up: OpenTelemetry's instrumentor replaces ``flask.Flask`` with a subclass of its own, which
only applications made afterwards are.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

BODY = b"ok"

_ENVIRON = {
    "REQUEST_METHOD": "GET",
    "SCRIPT_NAME": "",
    "PATH_INFO": "/hello/7",
    "QUERY_STRING": "",
    "SERVER_NAME": "127.0.0.1",
    "SERVER_PORT": "8000",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "HTTP_HOST": "127.0.0.1:8000",
    "wsgi.version": (1, 0),
    "wsgi.url_scheme": "http",
    "wsgi.multithread": False,
    "wsgi.multiprocess": False,
    "wsgi.run_once": False,
}


def make_app() -> Any:
    import flask

    app = flask.Flask("benchmark")

    @app.route("/hello/<int:id>")
    def hello(id: int) -> bytes:
        return BODY

    return app


@contextmanager
def calls(url: str) -> Iterator[Callable[[int, bool], int]]:
    """``call(count, fresh)``: ``count`` requests through the application (a new one after each
    switch); how many were answered 200 with the expected body (``url`` is not used: nothing
    leaves the process)."""
    errors = io.StringIO()
    apps: list[Any] = []
    status: list[str] = []

    def start_response(line: str, headers: Any, exc_info: Any = None) -> Any:
        status.append(line)
        return None

    def call(count: int, fresh: bool) -> int:
        if fresh or not apps:
            apps[:] = [make_app()]
        app = apps[0]
        ok = 0
        for _ in range(count):
            status.clear()
            environ = {**_ENVIRON, "wsgi.input": io.BytesIO(), "wsgi.errors": errors}
            result = app(environ, start_response)
            try:
                body = b"".join(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
            ok += status == ["200 OK"] and body == BODY
        return ok

    yield call
