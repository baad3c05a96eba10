"""One echo server per module for the HTTP client tests (tracer's own http.server span on it)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import EchoHandler, Server
from tracer.context import current

#: What tracer sends with a call by default.
TRACE_HEADERS = ("request-id", "x-span-id", "x-parent", "traceparent")


class Handler(EchoHandler):
    """The echo handler of tests.conftest; ``/must`` answers 200 with ``x-must-collect: 1``, as
    a callee that must keep its trace does."""

    def do_GET(self) -> None:
        if self.path == "/must":
            self.reply(200, {"x-must-collect": "1"}, b"kept")
            return
        super().do_GET()


@pytest.fixture(scope="module")
def echo() -> Iterator[Server]:
    """An echo server shared by a module's tests."""
    srv = Server(Handler)
    yield srv
    srv.close()


def clients(spans: list[dict[str, object]]) -> list[dict[str, object]]:
    """The client spans, in the order they started."""
    return sorted(
        (s for s in spans if s["kind"] == "client"), key=lambda s: int(str(s["start_us"]))
    )


def no_open_call() -> bool:
    """Nothing of a call is left in the context (a test's own sanity check)."""
    from tracer.context import calling

    return calling.get() is None and current.get() is None
