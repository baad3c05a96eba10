"""Past the series cap, a request still counts with its status code (and scheme or error type)
while there is room for overflow series, then in the one whose labels are all ``_OTHER``; the
table never holds more than ``MAX_SERIES``."""

from __future__ import annotations

import pytest

from tracer.metrics import recording
from tracer.span import CLIENT, SERVER, LocalTrace, Span

OT = "_OTHER"


def finished(kind: str, route: str, status: int | None, url: str) -> Span:
    span = Span(kind, "GET", "a" * 32, "r", None, LocalTrace(True), True, "b" * 16)
    span.method = "GET"
    span.route = route
    span.status_code = status
    span.url = url
    span.duration_us = 1000
    return span


def test_overflowed_requests_keep_their_status(monkeypatch: pytest.MonkeyPatch) -> None:
    # One ordinary series, two overflow series, the last one.
    monkeypatch.setattr(recording, "MAX_SERIES", 4)
    monkeypatch.setattr(recording, "OVERFLOW_SERIES", 3)
    rec = recording.Recorder((0.005, 0.01))
    for i, status in enumerate([200, 200, 503, 503, 404, 200, 500]):
        rec.record(finished(SERVER, f"/r{i}", status, "https://svc/x"))
    for i, status in enumerate([200, 200, 500, 502, None]):
        rec.record(finished(CLIENT, "", status, f"http://host{i}:80/"))
    assert len(rec.server) == len(rec.client) == 4
    rows = rec.series()
    server = {tuple(labels): sum(values[:-1]) for labels, values in rows[recording.SERVER_NAME]}
    assert server == {
        ("GET", "/r0", "200", "https"): 1,
        (OT, OT, "200", "https"): 2,
        (OT, OT, "503", "https"): 2,
        (OT, OT, OT, OT): 2,
    }
    client = {tuple(labels): sum(values[:-1]) for labels, values in rows[recording.CLIENT_NAME]}
    assert client == {
        ("GET", "host0", "80", "200", ""): 1,
        (OT, OT, OT, "200", ""): 1,
        (OT, OT, OT, "500", ""): 1,
        (OT, OT, OT, OT, OT): 2,
    }


def test_the_scrape_cap_keeps_what_it_admitted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Summed over processes, label sets admitted by an earlier scrape stay; later ones are
    counted as overflow, and the total is the same."""
    monkeypatch.setattr(recording, "MAX_SERIES", 4)
    monkeypatch.setattr(recording, "OVERFLOW_SERIES", 2)
    admitted: dict[tuple[str, ...], None] = {}

    def row(route: str, status: str, count: int) -> tuple[list[str], list[int]]:
        return ["GET", route, status, "http"], [count, 0, 0, count]

    first = recording.bounded([row("/a", "200", 1), row("/b", "200", 1)], admitted, 2)
    assert [labels for labels, _ in first] == [
        ["GET", "/a", "200", "http"],
        ["GET", "/b", "200", "http"],
    ]
    # A new process's file comes first in the next scrape: /a and /b stay, /c and /d overflow.
    rows = [row("/c", "500", 1), row("/d", "404", 1), row("/a", "200", 2), row("/b", "200", 2)]
    second = {tuple(labels): values[0] for labels, values in recording.bounded(rows, admitted, 2)}
    assert second == {
        (OT, OT, "500", "http"): 1,
        (OT, OT, OT, OT): 1,
        ("GET", "/a", "200", "http"): 2,
        ("GET", "/b", "200", "http"): 2,
    }
