"""Browser tests of ``tracer serve``: Debian's Chromium driven by selenium through chromedriver.

One headless browser serves the whole session and one ``tracer serve`` child each module; a test
loads a page, waits for its DOM hooks (docs/serve.md and the pages' contract) with
``WebDriverWait``, never a sleep, and ends by checking that the page logged no error to the
console (a script error or a Content-Security-Policy refusal shows there). Without chromium or
chromedriver every test here is skipped, saying which is missing.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from benchmarks.serve_ui import CHROMEDRIVER, CHROMIUM, start_driver
from tests.support.children import Child
from tests.support.waiting import DEADLINE, eventually

#: A span's row in the waterfall (the time axis's row is a ``.span-row`` of no span).
ROW = "#waterfall .span-row[data-span-id]"


def missing_browser() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (the test extra has it)"
    absent = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if absent:
        return (
            f"{' and '.join(absent)} not found: the browser tests need Debian's chromium and "
            "chromium-driver (apt-get install chromium chromium-driver)"
        )
    return None


@pytest.fixture(scope="session")
def driver() -> Iterator[Any]:
    """The session's headless Chromium (selenium's ``WebDriver``)."""
    reason = missing_browser()
    if reason:
        pytest.skip(reason)
    with tempfile.TemporaryDirectory(prefix="tracer-chromium-") as profile:
        browser = start_driver(profile)
        try:
            yield browser
        finally:
            browser.quit()


def console_errors(driver: Any) -> list[dict[str, Any]]:
    """The console's errors since the last call (reading empties it): the browser's SEVERE
    entries, and the pages' own warnings, which is how the pages report a failure they caught
    (a page's exception is shown to the person and passed to ``console.warn``)."""
    return [
        entry
        for entry in driver.get_log("browser")
        if (
            entry["level"] == "SEVERE"
            or (entry["level"] == "WARNING" and entry.get("source") == "console-api")
        )
        # The browser asks for /favicon.ico on its own, whatever the page says.
        and "/favicon.ico - " not in entry["message"]
    ]


def allow_console_errors(driver: Any, *allowed: str) -> None:
    """Take the console's errors now, failing unless each holds one of the ``allowed`` texts
    (a test that loads what is not there expects the browser's own 404 line, say)."""
    unexpected = [
        entry
        for entry in console_errors(driver)
        if not any(text in entry["message"] for text in allowed)
    ]
    assert unexpected == []


@pytest.fixture(autouse=True)
def no_console_errors(driver: Any) -> Iterator[None]:
    """Each test starts on an empty console and fails when a page logged an error in it."""
    console_errors(driver)
    yield
    errors = console_errors(driver)
    assert errors == [], "\n".join(e["message"] for e in errors)


def wait_for(
    driver: Any, condition: Callable[[Any], Any], what: str, timeout: float = DEADLINE
) -> Any:
    """``WebDriverWait`` until ``condition(driver)`` is true; its value. ``what`` names it."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(
        condition, f"timed out after {timeout} s waiting for {what}"
    )


def find_all(driver: Any, css: str) -> list[Any]:
    """Every element matching ``css`` now."""
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, css))


def wait_css(driver: Any, css: str, count: int = 1, timeout: float = DEADLINE) -> list[Any]:
    """Wait until at least ``count`` elements match ``css``; all of them."""
    elements: list[Any] = wait_for(
        driver,
        lambda d: (found := find_all(d, css)) and len(found) >= count and found,
        f"{count} x {css!r}",
        timeout,
    )
    return elements


def open_page(driver: Any, url: str, ready: str, count: int = 1) -> list[Any]:
    """Load ``url`` and wait until ``count`` elements match ``ready``; them."""
    driver.get(url)
    return wait_css(driver, ready, count)


# --- the viewer -----------------------------------------------------------------------------------


class Viewer:
    """A ``python -m tracer serve`` child on free ports with its own database file."""

    def __init__(self, db: Path, cwd: Path) -> None:
        self.db = db
        self.child = Child("serve", "--port", "0", "--otlp-port", "0", "--db", str(db), cwd=cwd)
        first = self.child.wait_for("http://")
        #: The UI's URL, ``http://127.0.0.1:<port>/`` (the first line of the child's output).
        self.url = first.strip()
        assert self.url.startswith("http://127.0.0.1:") and self.url.endswith("/"), first
        self.base = self.url.rstrip("/")
        second = self.child.wait_for("receiver http://")
        #: The receivers' address (the OTLP port), ``http://127.0.0.1:<port>``.
        self.receiver = second.split()[1]
        assert self.receiver.startswith("http://127.0.0.1:"), second

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str = "application/json",
    ) -> tuple[int, bytes]:
        """One request to the UI's port: (status, body)."""
        headers = {"Content-Type": content_type} if body is not None else {}
        request = urllib.request.Request(self.base + path, body, headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=DEADLINE) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as error:
            with error:
                return error.code, error.read()

    def get_json(self, path: str) -> Any:
        status, body = self.request("GET", path)
        assert status == 200, (path, status, body[:300])
        return json.loads(body)

    def post_json(self, path: str, document: Any) -> Any:
        status, body = self.request("POST", path, json.dumps(document).encode())
        assert 200 <= status < 300, (path, status, body[:300])
        return json.loads(body) if body.strip() else None

    def send_spans(self, spans: Sequence[dict[str, Any]]) -> None:
        """POST ``spans`` as tracer's HTTP reporter does, one batch per service, and wait
        until each trace they belong to answers with all of them."""
        by_service: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
        for span in spans:
            by_service.setdefault((span["service"], span["host"], span["pid"]), []).append(span)
        for (service, host, pid), batch in by_service.items():
            self.post_json("/api/v1/batches", batch_of(service, host, pid, spans=batch))
        for trace_id in {span["trace_id"] for span in spans}:
            want = {s["span_id"] for s in spans if s["trace_id"] == trace_id}
            self.wait_trace(trace_id, len(want))

    def wait_trace(self, trace_id: str, spans: int) -> list[dict[str, Any]]:
        """The spans of ``trace_id`` once the API has at least ``spans`` of them."""

        def stored() -> list[dict[str, Any]] | None:
            status, body = self.request("GET", f"/api/traces/{trace_id}")
            if status != 200:
                return None
            found: list[dict[str, Any]] = json.loads(body)["spans"]
            return found if len(found) >= spans else None

        found = eventually(stored, what=f"trace {trace_id} stored with {spans} spans")
        assert found is not None
        return found

    def stop(self) -> int:
        return self.child.stop()


@pytest.fixture(scope="module")
def viewer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Viewer]:
    """A ``tracer serve`` child for the module, on an empty database."""
    folder = tmp_path_factory.mktemp("serve")
    serve = Viewer(folder / "serve.db", folder)
    try:
        yield serve
    finally:
        serve.stop()


# --- span records ---------------------------------------------------------------------------------


def new_trace_id() -> str:
    return secrets.token_hex(16)


def new_span_id() -> str:
    return secrets.token_hex(8)


def batch_of(service: str, host: str, pid: int, **content: Any) -> dict[str, Any]:
    """A batch as tracer's reporters get it: ``spans=[...]``, ``memory={...}`` or
    ``metrics={...}``."""
    return {"service": service, "host": host, "pid": pid, "sent_at_us": now_us(), **content}


def now_us() -> int:
    return time.time_ns() // 1000


def span_record(
    trace_id: str,
    name: str,
    *,
    service: str = "frontend",
    kind: str = "server",
    parent_id: str | None = None,
    span_id: str | None = None,
    start_us: int | None = None,
    duration_us: int = 1000,
    status_code: int | None = 200,
    error: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
    host: str = "box",
    pid: int = 4242,
) -> dict[str, Any]:
    """A tracer span record (docs/reporters.md, "The span record") with its Dapper events."""
    start = now_us() if start_us is None else start_us
    end = start + duration_us
    first, last = ("sr", "ss") if kind == "server" else ("cs", "cr")
    method, _, path = name.partition(" ")
    return {
        "trace_id": trace_id,
        "request_id": None,
        "span_id": span_id or new_span_id(),
        "parent_id": parent_id,
        "kind": kind,
        "name": name,
        "service": service,
        "host": host,
        "pid": pid,
        "start_us": start,
        "duration_us": duration_us,
        "events": (
            [{"type": first, "time_us": start}, {"type": last, "time_us": end}]
            if kind in ("server", "client")
            else []
        ),
        "http": (
            {
                "method": method,
                "url": f"http://127.0.0.1:8000{path}",
                "path": path,
                "status_code": status_code,
                "route": path,
            }
            if kind in ("server", "client") and path.startswith("/")
            else None
        ),
        "error": error,
        "annotations": [],
        "tags": dict(tags or {}),
        "sampled": True,
        "must_collect": False,
        "tracestate": None,
    }
