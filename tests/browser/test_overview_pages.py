"""The service map, the dashboard, the memory page and the heap diff in Chromium."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import (
    Viewer,
    allow_console_errors,
    batch_of,
    find_all,
    new_trace_id,
    open_page,
    span_record,
    wait_css,
    wait_for,
)
from tests.browser.test_trace_page import checkout_trace
from tests.support.children import subprocess_env
from tracer.memory.cli import diff, load


@pytest.fixture(scope="module")
def traces(viewer: Viewer) -> list[list[dict[str, Any]]]:
    """Three checkout traces and a few more requests of other routes of the frontend."""
    sent = [checkout_trace() for _ in range(3)]
    for path, status in (("/cart", 200), ("/cart", 200), ("/login", 401), ("/pay", 503)):
        span = span_record(new_trace_id(), f"POST {path}", status_code=status, pid=100)
        if status >= 500:
            span["error"] = {"type": "HTTPError", "message": "503", "stack": ""}
        sent.append([span])
    viewer.send_spans([span for trace in sent for span in trace])
    return sent


def calls(spans: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """(caller, callee) of every span whose parent is of another service."""
    by_id = {s["span_id"]: s for s in spans}
    return {
        (by_id[s["parent_id"]]["service"], s["service"])
        for s in spans
        if s["parent_id"] in by_id and by_id[s["parent_id"]]["service"] != s["service"]
    }


def test_the_service_map_draws_each_caller_callee_pair_of_the_traces(
    driver: Any, viewer: Viewer, traces: list[list[dict[str, Any]]]
) -> None:
    want = set().union(*(calls(t) for t in traces))
    assert want == {
        ("frontend", "users"),
        ("frontend", "inventory"),
        ("frontend", "pricing"),
        ("pricing", "users"),
    }
    open_page(driver, viewer.url + "map", "svg#service-map g.edge", len(want))
    edges = {
        (e.get_attribute("data-from"), e.get_attribute("data-to")): e
        for e in find_all(driver, "svg#service-map g.edge")
    }
    assert set(edges) == want
    api = {(e["from"], e["to"]): e for e in viewer.get_json("/api/dependencies")["edges"]}
    for pair, edge in edges.items():
        assert int(edge.get_attribute("data-calls")) == api[pair]["calls"] == 3, pair
        assert int(edge.get_attribute("data-errors")) == api[pair]["errors"], pair
        assert int(edge.get_attribute("data-p95-us")) == api[pair]["p95_us"], pair
    assert int(edges[("frontend", "inventory")].get_attribute("data-errors")) == 3
    nodes = {n.get_attribute("data-service") for n in find_all(driver, "g.node")}
    assert nodes == {"frontend", "users", "inventory", "pricing"}


def test_the_dashboard_lists_the_services_routes_from_its_spans(
    driver: Any, viewer: Viewer, traces: list[list[dict[str, Any]]]
) -> None:
    open_page(driver, viewer.url + "dashboard?service=frontend", "table#routes tr.route-row", 4)
    api = viewer.get_json("/api/dashboard?service=frontend")
    assert api["source"] == "spans"
    shown = [r.get_attribute("data-route") for r in find_all(driver, "table#routes tr.route-row")]
    assert len(shown) == len(api["routes"]) == 4
    for route in api["routes"]:
        assert any(route["route"] in text and route["method"] in text for text in shown), (
            route,
            shown,
        )
    text = driver.find_element("css selector", "table#routes").text
    assert "/checkout" in text and "/pay" in text
    assert driver.find_element("css selector", "#dashboard-source").text.strip() == "spans"
    wait_css(driver, "svg#rpm-chart *")
    wait_css(driver, "svg#latency-chart *")
    # The one failing route heads the failing table.
    failing = driver.find_element("css selector", "table#failing")
    assert "/pay" in failing.text
    assert "/checkout" in driver.find_element("css selector", "table#slowest").text


def _iso(at_s: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at_s)) + f".{int(at_s % 1 * 1e6):06d}Z"


def test_the_memory_page_draws_each_process_and_marks_its_leak(driver: Any, viewer: Viewer) -> None:
    now = time.time()
    pid = 31337
    for i in range(10):
        at = now - 60 + 5 * i
        stats = {
            "event": "stats",
            "time": _iso(at),
            "trigger": "timer",
            "rss_bytes": 50_000_000 + i * 1_000_000,
            "allocated_blocks": 300_000 + i * 10_000,
        }
        batch = batch_of("leaky", "box", pid, memory=stats)
        batch["sent_at_us"] = int(at * 1e6)
        viewer.post_json("/api/v1/batches", batch)
    leak = {
        "event": "leak",
        "measure": "heap",
        "reason": "heap growth over 5 consecutive full GCs (25 s) - 1,440,000 blocks/hr",
        "start": _iso(now - 35),
        "end": _iso(now - 10),
        "growth": 50_000,
        "unit": "blocks",
        "observations": 5,
        "seconds": 25.0,
        "growth_per_hour": 1_440_000,
        "base": 390_000,
    }
    viewer.post_json("/api/v1/batches", batch_of("leaky", "box", pid, memory=leak))
    wait_for(
        driver,
        lambda d: viewer.get_json("/api/memory?service=leaky")["processes"],
        "the process in /api/memory",
    )
    open_page(driver, viewer.url + "memory", f'svg.memory-chart[data-pid="{pid}"] .leak-marker')
    (chart,) = find_all(driver, f'svg.memory-chart[data-pid="{pid}"]')
    assert chart.get_attribute("data-service") == "leaky"
    assert len(chart.find_elements("css selector", ".leak-marker")) == 1
    # RSS and heap are each drawn as a line over time.
    assert chart.find_elements("css selector", "path, polyline")


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two heap snapshots of one real process, the second after it kept 20,000 objects."""
    folder = tmp_path_factory.mktemp("heap")
    before, after = folder / "before.json.gz", folder / "after.json.gz"
    code = (
        "import sys, tracer.memory\n"
        "tracer.memory.snapshot(sys.argv[1])\n"
        "class KeptOrder:\n    pass\n"
        "kept = [KeptOrder() for _ in range(20000)]\n"
        "tracer.memory.snapshot(sys.argv[2])\n"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(before), str(after)],
        check=True,
        env=subprocess_env(),
        timeout=60,
    )
    return before, after


def test_the_heap_diff_of_two_snapshot_files_shows_what_grew(
    driver: Any, viewer: Viewer, snapshots: tuple[Path, Path]
) -> None:
    before, after = snapshots
    grown = diff(load(str(before)), load(str(after)))["types"]
    assert grown[0]["what"] == "__main__.KeptOrder"
    open_page(driver, viewer.url + "heap", "form#heap-diff")
    driver.find_element("css selector", "input#heap-before").send_keys(str(before))
    driver.find_element("css selector", "input#heap-after").send_keys(str(after))
    driver.find_element("css selector", "form#heap-diff [type=submit]").click()
    wait_css(driver, "table#heap-diff-result td")
    table = driver.find_element("css selector", "table#heap-diff-result")
    first = table.find_elements("css selector", "tbody tr")[0].text
    assert "KeptOrder" in first and "20,000" in first.replace("\u202f", ",")


def test_an_unknown_trace_says_so(driver: Any, viewer: Viewer) -> None:
    missing = new_trace_id()
    open_page(driver, f"{viewer.url}trace/{missing}", "#waterfall")
    wait_for(
        driver,
        lambda d: "not found" in d.find_element("css selector", "body").text.lower(),
        "a not-found message",
    )
    # The browser logs the API's 404 itself; nothing else may be there.
    allow_console_errors(driver, f"/api/traces/{missing} - Failed to load resource")
