"""The application of tests/wsgi/test_gunicorn_stop.py, served by gunicorn (one sync worker).

A request is held until the test lets it go, and its body is a generator, so that its span ends
in the WSGI iterable's ``close()``. The module installs tracer in the worker, after gunicorn set
its own SIGTERM handler (tracer's runs first, then gunicorn's), and notes in a file when a
SIGTERM arrived, from a handler set in front of both. At exit, once tracer's exit work ran, the
worker writes ``tracer.stats()`` to ``stats-<pid>.json``.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

FOLDER = Path(os.environ["HOLD_DIR"])


def _write_stats() -> None:
    import tracer

    (FOLDER / f"stats-{os.getpid()}.json").write_text(json.dumps(tracer.stats()))


# Registered before tracer is imported (which registers its own exit work): atexit runs the last
# registered first, so this runs after tracer's exit.
atexit.register(_write_stats)

import tracer  # noqa: E402

tracer.install()
_behind = signal.getsignal(signal.SIGTERM)


def _note_sigterm(signum: int, frame: FrameType | None) -> None:
    (FOLDER / f"term-{os.getpid()}").touch()
    if callable(_behind):
        _behind(signum, frame)


signal.signal(signal.SIGTERM, _note_sigterm)


def _app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    (FOLDER / f"in-{os.getpid()}").touch()
    go = FOLDER / "go"
    deadline = time.monotonic() + 60  # a failed test must not hold the worker for ever
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    start_response("200 OK", [("Content-Type", "text/plain")])

    def body() -> Iterator[bytes]:
        yield b"held, "
        yield str(os.getpid()).encode()

    return body()


# A plain WSGI application: traced through tracer's WSGI wrapper.
app = tracer.wsgi(_app)
