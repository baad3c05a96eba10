"""The WSGI applications of tests/wsgi: a plain one (no framework) and a Flask one.

Both are importable by a server in a child process (``gunicorn tests.wsgi.apps:flask_app``).
A streamed response waits, between its chunks, for :data:`RELEASE` (in this process) so that a
test can look at the server while the response is still under way.
"""

from __future__ import annotations

import contextvars
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from flask import Blueprint, Flask, abort, jsonify, stream_with_context

import tracer

#: Set by a test to let a streamed response send its last chunk.
RELEASE = threading.Event()
#: When (microseconds) a streamed response produced its last chunk, in order.
LAST_CHUNK_US: list[int] = []
#: The headers the plain application passes on every request: the core must not change them.
CONSTANT_HEADERS = [("Content-Type", "text/plain")]

# A variable set by the applications: no request may see what an earlier one set.
seen: contextvars.ContextVar[str | None] = contextvars.ContextVar("seen", default=None)


def _stream() -> Iterator[bytes]:
    yield b"first,"
    RELEASE.wait(60)
    with tracer.span("in-stream"):
        pass
    LAST_CHUNK_US.append(time.time_ns() // 1000)
    yield b"last"


def plain(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
    """A WSGI application with no framework."""
    path = environ.get("PATH_INFO", "")
    if path == "/raise":
        raise ValueError("plain failed")
    if path == "/stream":
        start_response("200 OK", CONSTANT_HEADERS)
        return _stream()
    if path == "/context":
        before = seen.get()
        seen.set(environ.get("QUERY_STRING", ""))
        start_response("200 OK", CONSTANT_HEADERS)
        return [f"{before}".encode()]
    start_response("200 OK", CONSTANT_HEADERS)
    return [b"plain"]


def make_flask() -> Flask:
    """A Flask application: a rule with a converter, a blueprint, errors, a streamed body."""
    app = Flask("tests.wsgi")
    items = Blueprint("items", __name__, url_prefix="/shop")

    @items.route("/items/<name>")
    def item(name: str) -> str:
        return name

    app.register_blueprint(items)

    @app.route("/users/<int:user_id>")
    def user(user_id: int) -> Any:
        span = tracer.current_span()
        return jsonify(
            user=user_id,
            pid=os.getpid(),
            transaction_id=tracer.get_transaction_id(),
            span_id=None if span is None else span.span_id,
        )

    @app.route("/boom")
    def boom() -> str:
        raise ValueError("view failed")

    @app.route("/handled")
    def handled() -> str:
        raise KeyError("missing")

    @app.errorhandler(LookupError)
    def lookup_failed(exc: LookupError) -> tuple[str, int]:
        return "handled by the application", 500

    @app.route("/forbidden")
    def forbidden() -> str:
        abort(403)

    @app.route("/stream")
    def stream() -> Any:
        return app.response_class(stream_with_context(_stream()))

    @app.route("/hold")
    def hold() -> Any:
        # Answers once the test let it go (a file "go" in HOLD_DIR), after saying it came (a
        # file "in-<pid>"): two requests held at once need two sync workers.
        folder = os.environ["HOLD_DIR"]
        with open(os.path.join(folder, f"in-{os.getpid()}"), "w"):
            pass
        deadline = time.monotonic() + 60  # a failed test must not hold a worker for ever
        while not os.path.exists(os.path.join(folder, "go")) and time.monotonic() < deadline:
            time.sleep(0.01)
        return jsonify(pid=os.getpid())

    return app


flask_app = make_flask()
