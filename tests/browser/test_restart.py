"""A viewer stopped and started again on the same database shows what it had stored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.browser.conftest import ROW, Viewer, find_all, open_page
from tests.browser.test_trace_page import checkout_trace


def test_a_restarted_viewer_shows_the_trace_it_stored(driver: Any, tmp_path: Path) -> None:
    db = tmp_path / "kept.db"
    spans = checkout_trace()
    trace_id = spans[0]["trace_id"]
    first = Viewer(db, tmp_path)
    try:
        first.send_spans(spans)
        stored = first.get_json(f"/api/traces/{trace_id}")
        open_page(driver, f"{first.url}trace/{trace_id}", ROW, len(spans))
    finally:
        assert first.stop() == 0
    again = Viewer(db, tmp_path)
    try:
        assert again.get_json(f"/api/traces/{trace_id}") == stored
        open_page(driver, f"{again.url}search", f'tr.trace-row[data-trace-id="{trace_id}"]')
        open_page(driver, f"{again.url}trace/{trace_id}", ROW, len(spans))
        shown = {r.get_attribute("data-span-id") for r in find_all(driver, ROW)}
        assert shown == {s["span_id"] for s in spans}
    finally:
        again.stop()
