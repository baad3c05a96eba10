"""Strings from spans are shown as text on every page, never run.

Each payload, if it ran, would set ``window.__pwned`` and the page's title. The pages' own
Content-Security-Policy would refuse an inline script or handler too, but such a refusal is
logged to the console, which fails the test as well (see conftest's ``no_console_errors``); and
each payload must show literally, as text.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

import pytest

from tests.browser.conftest import (
    ROW,
    Viewer,
    find_all,
    new_trace_id,
    open_page,
    span_record,
    wait_for,
)

NAME = "<img src=x onerror=\"window.__pwned='name';document.title='pwned'\">"
SERVICE = "<script>window.__pwned='service'</script>svc"
CALLEE = "<svg onload=\"window.__pwned='callee'\">"
TAG_KEY = "<b onmouseover=\"window.__pwned='tag'\">k</b>"
TAG_VALUE = "javascript:window.__pwned='tag value'"
URL = "javascript:window.__pwned='url';//"
MESSAGE = "<iframe src=\"javascript:window.__pwned='error'\"></iframe>"
ROUTE = "/<img src=x onerror=window.__pwned='route'>"

UNTOUCHED = """
return {pwned: window.__pwned === undefined ? null : String(window.__pwned),
        title: document.title,
        injected: document.querySelectorAll(
          '#app img, #app script, #app iframe, body svg[onload], [onerror], [onmouseover]'
        ).length,
        scriptLinks: Array.from(document.querySelectorAll('a[href]')).filter(function (a) {
          return a.getAttribute('href').trim().toLowerCase().indexOf('javascript:') === 0;
        }).length};
"""


@pytest.fixture(scope="module")
def hostile(viewer: Viewer) -> list[dict[str, Any]]:
    trace_id = new_trace_id()
    root = span_record(
        trace_id,
        NAME,
        service=SERVICE,
        tags={TAG_KEY: TAG_VALUE},
        status_code=500,
        error={"type": MESSAGE, "message": MESSAGE, "stack": MESSAGE},
    )
    root["http"] = {
        "method": "GET",
        "url": URL,
        "path": ROUTE,
        "status_code": 500,
        "route": ROUTE,
    }
    root["annotations"] = [{"time_us": root["start_us"] + 10, "data": {TAG_KEY: MESSAGE}}]
    client = span_record(
        trace_id, f"GET {CALLEE}", service=SERVICE, kind="client", parent_id=root["span_id"]
    )
    server = span_record(trace_id, ROUTE, service=CALLEE, parent_id=client["span_id"])
    spans = [root, client, server]
    viewer.send_spans(spans)
    return spans


def assert_untouched(driver: Any) -> None:
    state = driver.execute_script(UNTOUCHED)
    assert state["pwned"] is None, state
    assert state["title"] != "pwned", state
    assert state["injected"] == 0, state
    assert state["scriptLinks"] == 0, state


def test_hostile_strings_show_as_text_on_the_search_page(
    driver: Any, viewer: Viewer, hostile: list[dict[str, Any]]
) -> None:
    trace_id = hostile[0]["trace_id"]
    (row,) = open_page(driver, viewer.url + "search", f'tr.trace-row[data-trace-id="{trace_id}"]')
    text = row.get_attribute("textContent")
    assert NAME in text and SERVICE in text
    assert_untouched(driver)
    # The service list of the search form holds them as text too.
    options = [o.get_attribute("textContent") for o in find_all(driver, "form#search option")]
    assert SERVICE in options and CALLEE in options
    assert_untouched(driver)


def test_hostile_strings_show_as_text_on_the_trace_page_and_in_its_details(
    driver: Any, viewer: Viewer, hostile: list[dict[str, Any]]
) -> None:
    open_page(driver, f"{viewer.url}trace/{hostile[0]['trace_id']}", ROW, 3)
    names = [
        e.get_attribute("textContent")
        for e in find_all(driver, ".span-row[data-span-id] .span-name")
    ]
    assert names == [NAME, f"GET {CALLEE}", ROUTE]
    driver.find_element(
        "css selector", f'.span-row[data-span-id="{hostile[0]["span_id"]}"]'
    ).click()
    details = wait_for(
        driver,
        lambda d: TAG_VALUE in (text := d.find_element("css selector", "#details").text) and text,
        "the hostile span's details",
    )
    for text in (TAG_KEY, MESSAGE, URL):
        assert text in details, text
    assert_untouched(driver)


def test_hostile_strings_show_as_text_on_the_map_and_the_dashboard(
    driver: Any, viewer: Viewer, hostile: list[dict[str, Any]]
) -> None:
    open_page(driver, viewer.url + "map", "svg#service-map g.edge")
    (edge,) = find_all(driver, "svg#service-map g.edge")
    assert (edge.get_attribute("data-from"), edge.get_attribute("data-to")) == (SERVICE, CALLEE)
    labels = driver.find_element("css selector", "svg#service-map").get_attribute("textContent")
    assert SERVICE in labels and CALLEE in labels
    assert_untouched(driver)
    query = urllib.parse.urlencode({"service": SERVICE})
    open_page(driver, f"{viewer.url}dashboard?{query}", "table#routes tr.route-row")
    assert ROUTE in driver.find_element("css selector", "table#routes").get_attribute("textContent")
    assert_untouched(driver)


def test_a_hostile_query_string_is_taken_as_text(
    driver: Any, viewer: Viewer, hostile: list[dict[str, Any]]
) -> None:
    query = urllib.parse.urlencode({"service": NAME, "operation": SERVICE, "tag": f"{TAG_KEY}=1"})
    open_page(driver, f"{viewer.url}search?{query}", "form#search")
    wait_for(driver, lambda d: d.execute_script("return document.readyState") == "complete", "load")
    assert_untouched(driver)
