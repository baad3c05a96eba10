"""The flame graph of the profiles page in Chromium: a real profile, taken in a traced child
process and sent by its HTTP reporter to ``tracer serve``, drawn for the whole profile, one
route and one trace, zoomed by a click and reset."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from tests.browser.conftest import Viewer, find_all, open_page, wait_css, wait_for
from tests.support.children import subprocess_env
from tests.support.waiting import DEADLINE, eventually

#: Three /hot requests that burn CPU in burn_hot, one /cold in burn_cold, under a profile sent
#: to the viewer (argv[1]: its batches URL).
PROFILED = """
import sys, time
import tracer, reporters.http

def burn_hot(seconds):
    end = time.thread_time() + seconds
    n = 0
    while time.thread_time() < end:
        n += 1
    return n

def burn_cold(seconds):
    end = time.thread_time() + seconds
    n = 0
    while time.thread_time() < end:
        n += 1
    return n

tracer.install(
    app_name="flame-shop", reporter=reporters.http.create(sys.argv[1]), metrics=False,
    memory_watch=False, heap_snapshot_signal=None, handle_sigterm=False, sample_rate=1.0,
)
with tracer.profile(20, write=False) as p:
    for _ in range(3):
        with tracer.span("/hot"):
            burn_hot(0.25)
    with tracer.span("/cold"):
        burn_cold(0.1)
assert p.summary["samples"] > 0, p.summary
assert tracer.flush(20)
tracer.uninstall()
print("ok")
"""


@pytest.fixture(scope="module")
def profile(viewer: Viewer) -> dict[str, Any]:
    """The profile the child sent, as the viewer's API gives it."""
    done = subprocess.run(
        [sys.executable, "-c", PROFILED, viewer.receiver + "/api/v1/batches"],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=DEADLINE * 2,
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]

    def listed() -> list[dict[str, Any]] | None:
        found: list[dict[str, Any]] = viewer.get_json("/api/profiles?service=flame-shop")[
            "profiles"
        ]
        return found or None

    (summary,) = eventually(listed, what="the profile listed")
    whole: dict[str, Any] = viewer.get_json(f"/api/profiles/{summary['id']}")
    return whole


def frames(driver: Any) -> list[dict[str, Any]]:
    """The flame graph's frames now: name, samples, depth, width and hover title."""
    found: list[dict[str, Any]] = driver.execute_script(
        """return Array.from(document.querySelectorAll('svg#flame g.frame')).map(g => ({
            name: g.getAttribute('data-name'), samples: Number(g.getAttribute('data-samples')),
            depth: Number(g.getAttribute('data-depth')),
            width: Number(g.querySelector('rect').getAttribute('width')),
            title: g.querySelector('title').textContent}))"""
    )
    return found


def route_samples(profile: dict[str, Any], route: str | None) -> int:
    total = 0
    for line in profile["collapsed"].splitlines():
        stack, _, count = line.rpartition(" ")
        if route is None or stack.split(";")[0] == f"route {route}":
            total += int(count)
    return total


def test_a_profile_is_listed_and_drawn_as_a_flame_graph(
    driver: Any, viewer: Viewer, profile: dict[str, Any]
) -> None:
    row = open_page(driver, viewer.url + "profiles", "tr.profile-row[data-profile-id]")[0]
    wait_css(driver, f'tr.profile-row[data-profile-id="{profile["id"]}"]')
    assert "flame-shop" in find_all(driver, f'tr[data-profile-id="{profile["id"]}"]')[0].text
    assert row.get_attribute("data-profile-id")
    open_page(driver, f"{viewer.url}profiles/{profile['id']}", "svg#flame g.frame")
    drawn = frames(driver)
    root = next(f for f in drawn if f["depth"] == 0)
    assert root["samples"] == route_samples(profile, None) > 0
    hot = [f for f in drawn if "burn_hot" in f["name"]]
    assert hot and all("samples" in f["title"] and "burn_hot" in f["title"] for f in hot)
    # Both routes are children of the whole profile's root.
    assert {f["name"] for f in drawn if f["depth"] == 1} >= {"route /hot", "route /cold"}


def test_one_route_one_trace_zoom_and_reset(
    driver: Any, viewer: Viewer, profile: dict[str, Any]
) -> None:
    from selenium.webdriver.support.ui import Select

    open_page(driver, f"{viewer.url}profiles/{profile['id']}", "svg#flame g.frame")
    Select(find_all(driver, "select#route")[0]).select_by_value("/hot")
    chart = find_all(driver, "svg#flame")[0]
    wait_for(driver, lambda d: chart.get_attribute("data-route") == "/hot", "the route drawn")
    drawn = frames(driver)
    assert int(chart.get_attribute("data-samples")) == route_samples(profile, "/hot")
    assert any("burn_hot" in f["name"] for f in drawn)
    assert not any("burn_cold" in f["name"] for f in drawn)
    assert "route=%2Fhot" in driver.current_url

    # One trace: the /hot trace with the most samples, as the batch carries it.
    traced = next(t for t in profile["traces"] if t["route"] == "/hot")
    box = find_all(driver, "input#trace")[0]
    box.clear()
    box.send_keys(traced["trace_id"])
    wait_for(driver, lambda d: chart.get_attribute("data-trace") == traced["trace_id"], "trace")
    assert int(chart.get_attribute("data-samples")) == traced["samples"]
    assert not any("burn_cold" in f["name"] for f in frames(driver))

    # A click zooms on a frame (it takes the whole width); reset draws the whole graph again.
    target = max((f for f in frames(driver) if "burn_hot" in f["name"]), key=lambda f: f["width"])
    driver.execute_script(
        "Array.from(document.querySelectorAll('svg#flame g.frame'))"
        ".find(g => g.getAttribute('data-name') === arguments[0])"
        ".dispatchEvent(new MouseEvent('click', {bubbles: true}))",
        target["name"],
    )
    wait_for(driver, lambda d: chart.get_attribute("data-focus") == target["name"], "the zoom")
    zoomed = next(f for f in frames(driver) if f["name"] == target["name"])
    assert zoomed["width"] > 1190
    find_all(driver, "button#flame-reset")[0].click()
    wait_for(driver, lambda d: chart.get_attribute("data-focus") != target["name"], "the reset")
