"""How fast the viewer draws a big trace: ``python -m benchmarks.serve_ui [--spans N] [--runs N]``.

A ``tracer serve`` child on an empty database gets one trace of ``--spans`` spans (several
services, calls nested up to ten deep, a few errors) as tracer's HTTP reporter would send it; then
headless Chromium (Debian's ``chromium`` and ``chromedriver``) loads ``/trace/<id>`` ``--runs``
times. Each run is the time from the navigation's start to the moment the waterfall holds its
last row, read in the page with ``performance.now()`` by a ``MutationObserver`` installed before
the page's own scripts run. Median and max are printed, with the API's own answer time for the
same trace beside them.

``--screenshots FOLDER`` instead runs ``tracer demo --serve``, adds a leak event for the demo's
frontend process and two heap snapshots of a real process, and saves each page at 1280x800 as
``FOLDER/serve-<page>.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
#: The viewport of every page, and so of every screenshot.
WIDTH, HEIGHT = 1280, 800
OPTIONS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    f"--window-size={WIDTH},{HEIGHT}",
)
SERVICES = ("frontend", "checkout", "users", "pricing", "inventory", "payments", "search")
#: How long one wait may last before the run fails.
DEADLINE = 120.0


def start_driver(user_data_dir: str) -> Any:
    """A headless Chromium whose viewport is exactly WIDTH x HEIGHT, its console log kept."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for option in OPTIONS:
        options.add_argument(option)
    options.add_argument(f"--user-data-dir={user_data_dir}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    # The window size counts the browser's own frame; pages and screenshots need the page's area.
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
    )
    driver.set_page_load_timeout(DEADLINE)
    driver.set_script_timeout(DEADLINE)
    return driver


def child_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TRACE_") or k == "TRACE_PURE_PYTHON"
    }
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


@contextmanager
def serve(db: str, *command: str) -> Iterator[str]:
    """A ``python -m tracer serve`` child (or ``command``) on free ports; yields the UI's URL
    without its final slash."""
    args = command or ("serve", "--port", "0", "--otlp-port", "0", "--db", db)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tracer", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=os.path.dirname(db),
        env=child_env(),
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("http://"):
                break
        else:
            raise SystemExit(f"tracer {' '.join(args)} printed no URL (exit {proc.wait()})")
        yield line.strip().split("?")[0].rstrip("/")
    finally:
        proc.terminate()
        proc.wait(30)


def request(base: str, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        base + path, data, {"Content-Type": "application/json"}, method=method
    )
    with urllib.request.urlopen(req, timeout=DEADLINE) as answer:
        raw = answer.read()
    return json.loads(raw) if raw.strip() else None


def big_trace(spans: int, seed: int = 24) -> list[dict[str, Any]]:
    """One trace of ``spans`` tracer span records: calls between SERVICES (a client span and the
    callee's server span under it) and internal spans, nested at most ten deep."""
    rng = random.Random(seed)
    trace_id = secrets.token_hex(16)
    start = time.time_ns() // 1000 - 60_000_000
    records: list[dict[str, Any]] = []
    depth: dict[str, int] = {}

    def add(parent: dict[str, Any] | None, service: str, kind: str, name: str) -> dict[str, Any]:
        if parent is None:
            begin, length = start, 10_000_000
        else:
            room = parent["duration_us"]
            begin = parent["start_us"] + rng.randrange(max(room // 2, 1))
            length = max(rng.randrange(max((parent["start_us"] + room - begin) // 2, 2)), 1)
        span_id = secrets.token_hex(8)
        first, last = ("sr", "ss") if kind == "server" else ("cs", "cr")
        failed = rng.random() < 0.01
        record = {
            "trace_id": trace_id,
            "request_id": None,
            "span_id": span_id,
            "parent_id": None if parent is None else parent["span_id"],
            "kind": kind,
            "name": name,
            "service": service,
            "host": "bench",
            "pid": 1000 + SERVICES.index(service),
            "start_us": begin,
            "duration_us": length,
            "events": []
            if kind == "internal"
            else [{"type": first, "time_us": begin}, {"type": last, "time_us": begin + length}],
            "http": None,
            "error": {"type": "ValueError", "message": "failed", "stack": ""} if failed else None,
            "annotations": [],
            "tags": {},
            "sampled": True,
            "must_collect": False,
            "tracestate": None,
        }
        records.append(record)
        depth[span_id] = 0 if parent is None else depth[parent["span_id"]] + 1
        return record

    add(None, SERVICES[0], "server", "GET /checkout")
    while len(records) < spans:
        parent = rng.choice(records)
        # A call makes two spans, one level each: keep both within ten levels.
        if depth[parent["span_id"]] >= 8 or parent["kind"] == "client":
            continue
        if rng.random() < 0.4 and len(records) + 2 <= spans:
            callee = rng.choice([s for s in SERVICES if s != parent["service"]])
            route = f"/{callee}/{rng.randrange(50)}"
            client = add(parent, parent["service"], "client", f"GET {callee}:80{route}")
            add(client, callee, "server", f"GET {route}")
        else:
            add(parent, parent["service"], "internal", f"step {rng.randrange(200)}")
    return records


def send_trace(base: str, records: list[dict[str, Any]]) -> None:
    """POST the records as tracer batches, one per process, at most 2,000 spans each."""
    by_process: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for record in records:
        by_process.setdefault((record["service"], record["pid"]), []).append(record)
    for (service, pid), spans in by_process.items():
        for i in range(0, len(spans), 2000):
            batch = {
                "service": service,
                "host": "bench",
                "pid": pid,
                "sent_at_us": time.time_ns() // 1000,
                "spans": spans[i : i + 2000],
            }
            request(base, "POST", "/api/v1/batches", batch)


# Installed before the page's own scripts: the time (ms since the navigation started) at which
# the waterfall first held ``want`` rows.
_OBSERVER = """
window.__rowsWanted = %d;
window.__rowsAt = null;
new MutationObserver(function (changes, observer) {
  var rows = document.querySelectorAll('#waterfall .span-row[data-span-id]');
  if (rows.length >= window.__rowsWanted) {
    window.__rowsAt = performance.now();
    observer.disconnect();
  }
}).observe(document, {childList: true, subtree: true});
"""


def time_waterfall(driver: Any, url: str, rows: int) -> tuple[float, float]:
    """Load ``url``; the ms from navigation start to ``rows`` rows in the waterfall, and to the
    end of the page's ``/api/traces/`` answer."""
    from selenium.webdriver.support.ui import WebDriverWait

    script = driver.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument", {"source": _OBSERVER % rows}
    )
    try:
        driver.get("about:blank")
        driver.get(url)
        at = WebDriverWait(driver, DEADLINE, poll_frequency=0.02).until(
            lambda d: d.execute_script("return window.__rowsAt"),
            f"the waterfall never held {rows} rows",
        )
        answered = driver.execute_script(
            "return performance.getEntriesByType('resource')"
            ".filter(e => e.name.indexOf('/api/traces/') >= 0)"
            ".map(e => e.responseEnd).pop() || 0"
        )
    finally:
        driver.execute_cdp_cmd(
            "Page.removeScriptToEvaluateOnNewDocument", {"identifier": script["identifier"]}
        )
    return float(at), float(answered)


def benchmark(spans: int, runs: int) -> int:
    records = big_trace(spans)
    trace_id = records[0]["trace_id"]
    deepest = max(_depths(records).values())
    with tempfile.TemporaryDirectory(prefix="tracer-serve-ui-") as folder:
        with serve(os.path.join(folder, "serve.db")) as base:
            began = time.perf_counter()
            send_trace(base, records)
            sent = time.perf_counter() - began
            api: list[float] = []
            for _ in range(runs):
                began = time.perf_counter()
                got = request(base, "GET", f"/api/traces/{trace_id}")
                api.append((time.perf_counter() - began) * 1000)
            assert len(got["spans"]) == spans, len(got["spans"])
            driver = start_driver(os.path.join(folder, "profile"))
            try:
                loads = [
                    time_waterfall(driver, f"{base}/trace/{trace_id}", spans) for _ in range(runs)
                ]
                errors = [
                    e
                    for e in driver.get_log("browser")
                    # The browser asks for /favicon.ico on its own, whatever the page says.
                    if e["level"] == "SEVERE" and "/favicon.ico - " not in e["message"]
                ]
            finally:
                driver.quit()
    print(
        f"trace of {spans:,} spans ({len({r['service'] for r in records})} services, "
        f"{deepest + 1} levels), sent in {sent:.1f} s; {runs} runs"
    )
    print(f"{'':<36} {'median':>10} {'max':>10}")
    for what, figures in (
        ("waterfall drawn (navigation start)", [drawn for drawn, _ in loads]),
        ("  of which the trace's JSON arrived", [answered for _, answered in loads]),
        ("  and the rows were drawn", [drawn - answered for drawn, answered in loads]),
        ("GET /api/traces/<id> alone (urllib)", api),
    ):
        print(f"{what:<36} {_ms(statistics.median(figures))} {_ms(max(figures))}")
    if errors:
        print(f"the page logged {len(errors)} console errors, the first: {errors[0]['message']}")
        return 1
    return 0


def _ms(value: float) -> str:
    return f"{value:>7,.0f} ms"


def _depths(records: list[dict[str, Any]]) -> dict[str, int]:
    parents = {r["span_id"]: r["parent_id"] for r in records}
    depths: dict[str, int] = {}
    for span_id in parents:
        chain, node = 0, parents[span_id]
        while node is not None:
            chain, node = chain + 1, parents[node]
        depths[span_id] = chain
    return depths


# -- screenshots -----------------------------------------------------------------------------------

#: page name -> (path, CSS selector present once the page shows its data)
PAGES = {
    "search": ("/search", "tr.trace-row"),
    "map": ("/map", "g.edge"),
    # pricing (aiohttp) names its route's template; the demo's http.server services have none.
    "dashboard": ("/dashboard?service=pricing", "tr.route-row"),
    "memory": ("/memory", "svg.memory-chart"),
    "profiles": ("/profiles", "tr.profile-row"),
}


def screenshots(folder: str, minutes: float) -> int:
    """Save each page, with the demo's data, as ``folder/serve-<page>.png``, once the demo has
    run ``minutes`` (its dashboard charts have a point a minute)."""
    from selenium.webdriver.common.by import By

    os.makedirs(folder, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tracer-serve-shots-") as work:
        demo = ("demo", "--serve", "--port", "0", "--otlp-port", "0", "--requests", "6")
        with serve(os.path.join(work, "serve.db"), *demo) as base:
            _wait_traces(base)
            time.sleep(minutes * 60)
            _send_memory(base)
            before, after = _heap_snapshots(work)
            driver = start_driver(os.path.join(work, "profile"))
            try:
                shots: dict[str, str] = {}
                for page, (path, ready) in PAGES.items():
                    driver.get(base + path)
                    try:
                        # The profiles page has data only when a profile was sent.
                        _wait(driver, ready, 15 if page == "profiles" else DEADLINE)
                    except Exception as exc:  # a page without data here is reported, not shot
                        print(f"{page}: skipped ({type(exc).__name__}: {ready} never appeared)")
                        continue
                    shots[page] = _shoot(driver, folder, page)
                trace = _failing_trace(base)
                driver.get(f"{base}/trace/{trace}")
                _wait(driver, "div.span-row[data-span-id]")
                # The details of the failing span, as a person would click it.
                driver.find_element(By.CSS_SELECTOR, "div.span-row.error").click()
                shots["trace"] = _shoot(driver, folder, "trace")
                driver.get(base + "/heap")
                _wait(driver, "input#heap-before")
                driver.find_element(By.CSS_SELECTOR, "input#heap-before").send_keys(before)
                driver.find_element(By.CSS_SELECTOR, "input#heap-after").send_keys(after)
                driver.find_element(By.CSS_SELECTOR, "form#heap-diff [type=submit]").click()
                _wait(driver, "table#heap-diff-result tr td")
                shots["heap"] = _shoot(driver, folder, "heap")
            finally:
                driver.quit()
    for page, path in shots.items():
        print(f"{page:<10} {path} {os.path.getsize(path):>9,} bytes")
    return 0


def _wait(driver: Any, css: str, timeout: float = DEADLINE) -> Any:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, 0.05).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, css), f"no {css} on the page"
    )


def _shoot(driver: Any, folder: str, page: str) -> str:
    path = os.path.join(folder, f"serve-{page}.png")
    # The charts draw after their data arrives: one frame more, then the picture.
    driver.execute_async_script("requestAnimationFrame(() => requestAnimationFrame(arguments[0]))")
    driver.save_screenshot(path)
    return path


def _wait_traces(base: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not request(base, "GET", "/api/traces?limit=50")["traces"]:
        if time.monotonic() > deadline:
            raise SystemExit("the demo stored no trace")
        time.sleep(0.1)


def _failing_trace(base: str) -> str:
    traces = request(base, "GET", "/api/traces?errors=1&limit=1")["traces"]
    if not traces:
        traces = request(base, "GET", "/api/traces?limit=1")["traces"]
    return str(traces[0]["trace_id"])


def _send_memory(base: str) -> None:
    """A leak event for the demo's frontend process, as tracer's memory watch sends one (the demo
    is too short for the watch to find one): the memory page marks it on that process's chart."""
    deadline = time.monotonic() + DEADLINE
    while True:
        processes = request(base, "GET", "/api/memory?service=frontend")["processes"]
        if processes and len(processes[0]["points"]) >= 3:
            break
        if time.monotonic() > deadline:
            raise SystemExit("the demo's frontend reported no memory")
        time.sleep(0.2)
    process = processes[0]
    times = sorted(p["time_us"] for p in process["points"])
    start, end = times[0] / 1e6, times[-1] / 1e6

    def iso(at: float) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at % 1 * 1e6):06d}Z"

    leak = {
        "event": "leak",
        "measure": "heap",
        "reason": "heap growth over 5 consecutive full GCs (8 s) - 2,700,000 blocks/hr",
        "start": iso(start),
        "end": iso(end),
        "growth": 6_000,
        "unit": "blocks",
        "observations": 5,
        "seconds": end - start,
        "growth_per_hour": 2_700_000,
        "base": 160_000,
    }
    batch = {
        "service": process["service"],
        "host": process["host"],
        "pid": process["pid"],
        "sent_at_us": time.time_ns() // 1000,
        "memory": leak,
    }
    request(base, "POST", "/api/v1/batches", batch)


def _heap_snapshots(folder: str) -> tuple[str, str]:
    """Two heap snapshot files of a real process, the second after it kept 30,000 objects."""
    before, after = os.path.join(folder, "before.json.gz"), os.path.join(folder, "after.json.gz")
    code = (
        "import sys, tracer.memory\n"
        "tracer.memory.snapshot(sys.argv[1])\n"
        "class Order:\n    pass\n"
        "kept = [Order() for _ in range(30000)]\n"
        "tracer.memory.snapshot(sys.argv[2])\n"
    )
    subprocess.run([sys.executable, "-c", code, before, after], check=True, env=child_env())
    return before, after


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spans", type=int, default=10_000, help="spans in the trace")
    parser.add_argument("--runs", type=int, default=5, help="page loads timed")
    parser.add_argument("--screenshots", metavar="FOLDER", help="save each page as a PNG instead")
    parser.add_argument(
        "--minutes", type=float, default=0.0, help="with --screenshots: let the demo run first"
    )
    args = parser.parse_args(argv)
    if args.screenshots:
        return screenshots(args.screenshots, args.minutes)
    return benchmark(args.spans, args.runs)


if __name__ == "__main__":
    sys.exit(main())
