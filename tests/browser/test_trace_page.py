"""The search page and the trace page in Chromium, on traces sent as tracer's HTTP reporter does.

The checkout trace below crosses four services, fails in one of them, and carries the four Dapper
events on each call, so the waterfall's nesting, error marks and network times per hop can all be
compared with what was sent and with what ``/api/traces/<id>`` answers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import (
    ROW,
    Viewer,
    find_all,
    new_trace_id,
    now_us,
    open_page,
    span_record,
    wait_css,
    wait_for,
)
from tests.support.waiting import eventually

# The waterfall's rows as plain data, read in one call.
ROWS_JS = """
var rows = document.querySelectorAll('#waterfall .span-row[data-span-id]');
return Array.from(rows).map(function (row) {
  var name = row.querySelector('.span-name');
  return {
    id: row.getAttribute('data-span-id'),
    parent: row.getAttribute('data-parent-id') || null,
    depth: Number(row.getAttribute('data-depth')),
    service: row.getAttribute('data-service'),
    error: row.classList.contains('error'),
    match: row.classList.contains('match'),
    hidden: row.hidden || row.classList.contains('hidden') || row.offsetParent === null,
    name: name ? name.textContent : null
  };
});
"""


def checkout_trace() -> list[dict[str, Any]]:
    """frontend -> users, frontend -> inventory (fails), frontend -> pricing -> users."""
    trace_id = new_trace_id()
    t0 = now_us() - 5_000_000

    def call(
        parent: dict[str, Any], callee: str, path: str, at_ms: float, ms: float, **kw: Any
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        start = t0 + int(at_ms * 1000)
        client = span_record(
            trace_id,
            f"GET {callee}:80{path}",
            service=parent["service"],
            kind="client",
            parent_id=parent["span_id"],
            start_us=start,
            duration_us=int(ms * 1000),
            pid=parent["pid"],
            **kw.get("client", {}),
        )
        # The callee's server span starts 1.2 ms after the call left and ends 0.8 ms before
        # its answer arrived: the network time of the hop.
        server = span_record(
            trace_id,
            f"GET {path}",
            service=callee,
            kind="server",
            parent_id=client["span_id"],
            start_us=start + 1200,
            duration_us=int(ms * 1000) - 2000,
            pid=sum(map(ord, callee)),
            **kw.get("server", {}),
        )
        return client, server

    root = span_record(trace_id, "GET /checkout", start_us=t0, duration_us=100_000, pid=100)
    users_client, users_server = call(root, "users", "/users/7", 5, 15)
    query = span_record(
        trace_id,
        "SELECT users",
        service="users",
        kind="internal",
        parent_id=users_server["span_id"],
        start_us=users_server["start_us"] + 2000,
        duration_us=4000,
        pid=users_server["pid"],
    )
    failed = {
        "client": {
            "status_code": 500,
            "error": {"type": "HTTPError", "message": "500 from inventory", "stack": ""},
        },
        "server": {
            "status_code": 500,
            "error": {
                "type": "ValueError",
                "message": "broken is out of stock",
                "stack": "Traceback (most recent call last):\n  ValueError: broken",
            },
        },
    }
    stock_client, stock_server = call(root, "inventory", "/reserve/broken", 25, 35, **failed)
    price_client, price_server = call(root, "pricing", "/price/apple", 65, 25)
    again_client, again_server = call(price_server, "users", "/users/8", 70, 10)
    return [
        root,
        users_client,
        users_server,
        query,
        stock_client,
        stock_server,
        price_client,
        price_server,
        again_client,
        again_server,
    ]


@pytest.fixture(scope="module")
def checkout(viewer: Viewer) -> list[dict[str, Any]]:
    spans = checkout_trace()
    viewer.send_spans(spans)
    return spans


@pytest.fixture(scope="module")
def quiet(viewer: Viewer, checkout: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A second trace, one span, no error, sent after the checkout."""
    spans = [span_record(new_trace_id(), "GET /health", service="users", duration_us=300)]
    viewer.send_spans(spans)
    return spans


def rows(driver: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = driver.execute_script(ROWS_JS)
    return found


def open_trace(driver: Any, viewer: Viewer, spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    open_page(driver, f"{viewer.url}trace/{spans[0]['trace_id']}", ROW, len(spans))
    return rows(driver)


def depths(spans: list[dict[str, Any]]) -> dict[str, int]:
    """Each span's depth in its trace: 0 for a span whose parent is not in the trace."""
    parent = {s["span_id"]: s["parent_id"] for s in spans}
    out: dict[str, int] = {}
    for span_id in parent:
        depth, node = 0, parent[span_id]
        while node in parent:
            depth, node = depth + 1, parent[node]
        out[span_id] = depth
    return out


def test_search_lists_each_trace_linked_to_its_page_and_marks_the_failing_one(
    driver: Any, viewer: Viewer, checkout: list[dict[str, Any]], quiet: list[dict[str, Any]]
) -> None:
    failing, healthy = checkout[0]["trace_id"], quiet[0]["trace_id"]
    open_page(driver, viewer.url + "search", "tr.trace-row", 2)
    for trace_id, error in ((failing, True), (healthy, False)):
        (row,) = find_all(driver, f'tr.trace-row[data-trace-id="{trace_id}"]')
        link = row.find_element("css selector", "a.trace-link")
        assert link.get_attribute("href") == f"{viewer.url}trace/{trace_id}"
        assert ("error" in row.get_attribute("class").split()) is error
        (point,) = find_all(driver, f'svg#scatter circle.point[data-trace-id="{trace_id}"]')
        assert ("error" in point.get_attribute("class").split()) is error
    (row,) = find_all(driver, f'tr.trace-row[data-trace-id="{failing}"]')
    assert "frontend" in row.text and "GET /checkout" in row.text
    # The newest first, as the API orders them.
    order = [r.get_attribute("data-trace-id") for r in find_all(driver, "tr.trace-row")]
    assert order.index(healthy) < order.index(failing)


def test_a_search_by_service_and_errors_updates_the_url_and_the_results(
    driver: Any, viewer: Viewer, checkout: list[dict[str, Any]], quiet: list[dict[str, Any]]
) -> None:
    open_page(driver, viewer.url + "search", "tr.trace-row", 2)
    box = driver.find_element("css selector", 'form#search input[name="errors"]')
    if not box.is_selected():
        box.click()
    driver.find_element("css selector", "form#search [type=submit]").click()
    wait_for(driver, lambda d: "errors=" in d.current_url, "the query in the URL")
    failing = checkout[0]["trace_id"]
    wait_for(
        driver,
        lambda d: (
            [r.get_attribute("data-trace-id") for r in find_all(d, "tr.trace-row")] == [failing]
        ),
        "the failing trace alone",
    )
    # The URL is shareable: loading it again gives the same results.
    open_page(driver, driver.current_url, f'tr.trace-row[data-trace-id="{failing}"]')
    assert len(find_all(driver, "tr.trace-row")) == 1


def test_the_waterfall_shows_every_span_nested_as_the_api_gives_it(
    driver: Any, viewer: Viewer, checkout: list[dict[str, Any]]
) -> None:
    api = viewer.get_json(f"/api/traces/{checkout[0]['trace_id']}")["spans"]
    shown = open_trace(driver, viewer, checkout)
    assert sorted(r["id"] for r in shown) == sorted(s["span_id"] for s in api)
    by_id = {s["span_id"]: s for s in api}
    want_depth = depths(api)
    seen: set[str] = set()
    for row in shown:
        span = by_id[row["id"]]
        assert row["parent"] == span["parent_id"], row
        assert row["depth"] == want_depth[row["id"]], row
        assert row["service"] == span["service"]
        assert row["name"] == span["name"]
        assert row["error"] is (span["error"] is not None), row
        # Tree order: a parent's row comes before its children's.
        assert span["parent_id"] is None or span["parent_id"] in seen, row
        seen.add(row["id"])
    # Both spans of the failed call, and no other, are marked.
    assert {r["name"] for r in shown if r["error"]} == {
        "GET inventory:80/reserve/broken",
        "GET /reserve/broken",
    }
    assert max(r["depth"] for r in shown) == 4


def test_each_hop_shows_its_network_time_from_the_four_events(
    driver: Any, viewer: Viewer, checkout: list[dict[str, Any]]
) -> None:
    open_trace(driver, viewer, checkout)
    servers = [s for s in checkout if s["kind"] == "server" and s["parent_id"]]
    for span in servers:
        (row,) = find_all(driver, f'.span-row[data-span-id="{span["span_id"]}"]')
        hop = row.find_element("css selector", ".hop-network").get_attribute("textContent")
        assert "1.2 ms" in hop and "0.8 ms" in hop, hop
        assert "SR" in hop and "CR" in hop, hop
    (root,) = find_all(driver, f'.span-row[data-span-id="{checkout[0]["span_id"]}"]')
    assert root.find_elements("css selector", ".hop-network") == []


def test_clicking_a_span_shows_its_details_and_events(
    driver: Any, viewer: Viewer, checkout: list[dict[str, Any]]
) -> None:
    open_trace(driver, viewer, checkout)
    server = checkout[5]
    driver.find_element("css selector", f'.span-row[data-span-id="{server["span_id"]}"]').click()
    details = wait_for(
        driver,
        lambda d: (
            "broken is out of stock" in (text := d.find_element("css selector", "#details").text)
            and text
        ),
        "the span's details",
    )
    assert "inventory" in details and "ValueError" in details
    events = driver.find_element("css selector", "#details table.events").text
    assert "sr" in events.lower() and "ss" in events.lower()


def test_collapse_hides_the_descendants_and_expand_shows_them_again(
    driver: Any, viewer: Viewer, checkout: list[dict[str, Any]]
) -> None:
    open_trace(driver, viewer, checkout)
    price_client = checkout[6]
    below = {s["span_id"] for s in checkout[7:]}
    toggle = driver.find_element(
        "css selector", f'.span-row[data-span-id="{price_client["span_id"]}"] button.toggle'
    )
    toggle.click()
    wait_for(
        driver,
        lambda d: {r["id"] for r in rows(d) if r["hidden"]} == below,
        "the pricing call's descendants hidden, nothing else",
    )
    toggle.click()
    wait_for(driver, lambda d: not any(r["hidden"] for r in rows(d)), "every row shown again")


def test_next_error_selects_each_error_span_in_turn(
    driver: Any, viewer: Viewer, checkout: list[dict[str, Any]]
) -> None:
    open_trace(driver, viewer, checkout)
    button = driver.find_element("css selector", "button#next-error")
    for message in ("500 from inventory", "broken is out of stock"):
        button.click()

        def shown(d: Any, text: str = message) -> bool:
            return text in d.find_element("css selector", "#details").text

        wait_for(driver, shown, f"the details of the span that failed with {message!r}")


def test_find_marks_exactly_the_matching_rows(
    driver: Any, viewer: Viewer, checkout: list[dict[str, Any]]
) -> None:
    open_trace(driver, viewer, checkout)
    driver.find_element("css selector", "input#find").send_keys("reserve")
    want = {s["span_id"] for s in checkout if "reserve" in s["name"]}
    assert len(want) == 2
    wait_for(driver, lambda d: {r["id"] for r in rows(d) if r["match"]} == want, "two matches")


def test_download_gives_the_apis_json_and_its_upload_on_a_fresh_db_shows_the_trace(
    driver: Any, viewer: Viewer, checkout: list[dict[str, Any]], tmp_path: Path
) -> None:
    trace_id = checkout[0]["trace_id"]
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    open_trace(driver, viewer, checkout)
    driver.find_element("css selector", "a#download").click()
    (saved,) = eventually(
        lambda: [p for p in downloads.iterdir() if p.suffix == ".json"], what="the downloaded file"
    )
    document = json.loads(saved.read_text())
    assert document == viewer.get_json(f"/api/traces/{trace_id}")

    fresh = Viewer(tmp_path / "fresh.db", tmp_path)
    try:
        assert fresh.request("GET", f"/api/traces/{trace_id}")[0] == 404
        open_page(driver, fresh.url + "search", "input#upload")
        driver.find_element("css selector", "input#upload").send_keys(str(saved))
        wait_for(driver, lambda d: d.current_url.endswith(f"/trace/{trace_id}"), "the trace's page")
        shown = wait_css(driver, ROW, len(checkout))
        assert len(shown) == len(checkout)
        assert fresh.get_json(f"/api/traces/{trace_id}")["spans"] == document["spans"]
    finally:
        fresh.stop()


def test_the_live_tail_shows_a_trace_sent_after_the_page_loaded(
    driver: Any, viewer: Viewer, checkout: list[dict[str, Any]]
) -> None:
    open_page(driver, viewer.url + "search", "tr.trace-row")
    live = driver.find_element("css selector", "input#live")
    if not live.is_selected():
        live.click()
    late = [span_record(new_trace_id(), "GET /late", service="frontend")]
    viewer.send_spans(late)
    wait_css(driver, f'tr.trace-row[data-trace-id="{late[0]["trace_id"]}"]')
    live.click()
