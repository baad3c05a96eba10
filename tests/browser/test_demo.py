"""``tracer demo --serve`` in Chromium: the quick start's first command ends on pages that show
the demo's traces, its failing call, its service map and its routes.

The demo keeps sending a checkout request every few seconds while it is open, so each test reads
what the API holds first and checks that the page shows at least that.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import ROW, Viewer, find_all, open_page, wait_for
from tests.browser.test_overview_pages import calls
from tests.browser.test_trace_page import depths, rows
from tests.support.children import Child


class Demo(Viewer):
    """``python -m tracer demo --serve --requests 3`` on free ports, its first requests done."""

    def __init__(self, cwd: Path) -> None:
        self.child = Child(
            "demo", "--serve", "--port", "0", "--otlp-port", "0", "--requests", "3", cwd=cwd
        )
        self.url = self.child.wait_for("http://").strip()
        assert self.url.startswith("http://127.0.0.1:") and self.url.endswith("/"), self.url
        self.base = self.url.rstrip("/")
        # Printed once the first requests' traces have arrived whole.
        self.child.wait_for("The viewer is open at")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    running = Demo(tmp_path_factory.mktemp("demo"))
    try:
        yield running
    finally:
        running.stop()


def demo_traces(demo: Demo) -> list[list[dict[str, Any]]]:
    """The spans of each trace the viewer holds now, oldest trace first."""
    listed = demo.get_json("/api/traces?limit=100")["traces"]
    return [demo.get_json(f"/api/traces/{t['trace_id']}")["spans"] for t in reversed(listed)]


def test_the_search_page_lists_the_demos_traces(driver: Any, demo: Demo) -> None:
    listed = demo.get_json("/api/traces?limit=20")["traces"]
    assert len(listed) >= 3
    open_page(driver, demo.url, "tr.trace-row", len(listed))
    shown = {r.get_attribute("data-trace-id") for r in find_all(driver, "tr.trace-row")}
    assert {t["trace_id"] for t in listed} <= shown
    # The demo's third request fails downstream: its row is marked.
    assert find_all(driver, "tr.trace-row.error")


def test_each_trace_page_shows_every_span_nested_and_the_failing_call_marked(
    driver: Any, demo: Demo
) -> None:
    traces = demo_traces(demo)[:3]
    failed = 0
    for spans in traces:
        trace_id = spans[0]["trace_id"]
        open_page(driver, f"{demo.url}trace/{trace_id}", ROW, len(spans))
        shown = rows(driver)
        by_id = {s["span_id"]: s for s in spans}
        want = depths(spans)
        assert sorted(r["id"] for r in shown) == sorted(by_id)
        for row in shown:
            span = by_id[row["id"]]
            assert row["parent"] == span["parent_id"], row
            assert row["depth"] == want[row["id"]], row
            assert row["error"] is (span["error"] is not None), row
        failed += any(r["error"] for r in shown)
        # Several services in one waterfall.
        assert len({r["service"] for r in shown}) >= 3
    assert failed >= 1


def test_the_service_map_shows_the_demos_calls(driver: Any, demo: Demo) -> None:
    want = set().union(*(calls(spans) for spans in demo_traces(demo)))
    assert ("frontend", "users") in want and ("frontend", "inventory") in want
    open_page(driver, demo.url + "map", "svg#service-map g.edge", len(want))
    shown = {
        (e.get_attribute("data-from"), e.get_attribute("data-to"))
        for e in find_all(driver, "svg#service-map g.edge")
    }
    assert shown == want


@pytest.mark.parametrize("service", ["frontend", "pricing"])
def test_the_dashboard_shows_each_services_routes(driver: Any, demo: Demo, service: str) -> None:
    routes = demo.get_json(f"/api/dashboard?service={service}")["routes"]
    assert routes
    open_page(driver, f"{demo.url}dashboard?service={service}", "table#routes tr.route-row")
    shown = [r.get_attribute("data-route") for r in find_all(driver, "table#routes tr.route-row")]
    assert len(shown) == len(routes)
    for route in routes:
        assert any(route["method"] in text and route["route"] in text for text in shown), shown
    table = driver.find_element("css selector", "table#routes").text
    # pricing (aiohttp) knows its route's template; http.server services have none.
    if service == "pricing":
        assert "/price/{item}" in table
    wait_for(
        driver,
        lambda d: (
            d.find_element("css selector", "#dashboard-source").text.strip() in ("metrics", "spans")
        ),
        "the dashboard's source",
    )
