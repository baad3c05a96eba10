"""Child services' spans, received over HTTP, and the untraced requests tests send them."""

from __future__ import annotations

import socket
from typing import Any

import requests

from tests.support.receivers import HttpSink
from tests.support.waiting import eventually
from tracer import context


def free_port() -> int:
    """A port free on 127.0.0.1 now, for a child server that must be told its port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def untraced_get(url: str, **kw: Any) -> requests.Response:
    """A request that carries only the headers the test chose (no client span)."""
    with context.suppressed():
        return requests.get(url, timeout=30, **kw)


class Sink:
    """A receiver of the children's batches (their http reporter's ``url``), and the span
    records in them."""

    def __init__(self) -> None:
        self.http = HttpSink().start()
        self.url = f"http://127.0.0.1:{self.http.port}/spans"

    def spans(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for received in list(self.http.received):
            out.extend(received.body.get("spans", ()))
        return out

    def trace(self, trace_id: str, count: int, kind: str | None = None) -> list[dict[str, Any]]:
        """The spans of ``trace_id`` (of ``kind``, when given), once ``count`` of them arrived."""

        def found() -> list[dict[str, Any]]:
            spans = [
                s
                for s in self.spans()
                if s["trace_id"] == trace_id and (kind is None or s["kind"] == kind)
            ]
            return spans if len(spans) >= count else []

        return eventually(found, what=f"{count} {kind or ''} span(s) of trace {trace_id}")

    def server_spans(self, trace_id: str, count: int = 1) -> list[dict[str, Any]]:
        """The server spans of ``trace_id``, once ``count`` of them arrived."""
        return self.trace(trace_id, count, "server")

    def stop(self) -> None:
        self.http.stop()
