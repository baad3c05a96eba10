"""Past the series cap, a request still counts with its status code (and scheme or error type)."""

from __future__ import annotations

import pytest

from tracer.metrics import recording
from tracer.span import CLIENT, SERVER, LocalTrace, Span


def finished(kind: str, route: str, status: int | None, url: str) -> Span:
    span = Span(kind, "GET", "a" * 32, "r", None, LocalTrace(True), True, "b" * 16)
    span.method = "GET"
    span.route = route
    span.status_code = status
    span.url = url
    span.duration_us = 1000
    return span


def test_overflowed_requests_keep_their_status(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recording, "MAX_SERIES", 2)
    rec = recording.Recorder((0.005, 0.01))
    for i, status in enumerate([200, 200, 503, 503, 404]):
        rec.record(finished(SERVER, f"/r{i}", status, "https://svc/x"))
    for i, status in enumerate([200, 200, 500]):
        rec.record(finished(CLIENT, "", status, f"http://host{i}:80/"))
    rows = rec.series()
    server = {tuple(labels): values for labels, values in rows[recording.SERVER_NAME]}
    # /r0 and /r1 took the two series; the rest overflowed, by status.
    assert sum(server[("_OTHER", "_OTHER", "503", "https")][:-1]) == 2
    assert sum(server[("_OTHER", "_OTHER", "404", "https")][:-1]) == 1
    assert not any(labels[2] == "" for labels in server)
    client = {tuple(labels): values for labels, values in rows[recording.CLIENT_NAME]}
    assert sum(client[("_OTHER", "_OTHER", "_OTHER", "500", "")][:-1]) == 1
    assert not any(labels[3] == "" for labels in client)
