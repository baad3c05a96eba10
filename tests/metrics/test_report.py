"""Metrics batches, end to end: real requests to traced http.server and aiohttp services on
127.0.0.1 reach a custom reporter and a Logstash listener as metrics batches every
``metrics_interval`` (0.2 s here), with the right counts; the ledger of report batches balances;
the last partial interval is sent at uninstall and at exit; a forked child counts only its own."""

from __future__ import annotations

import asyncio
import http.server
import itertools
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

import tracer
from reporters import logstash
from tests.conftest import subprocess_env
from tests.delivery.helpers import LineServer, strict_loads
from tests.metrics.helpers import Handler
from tests.support.waiting import eventually as wait_for

INTERVAL = 0.2


class Recorder:
    """A user reporter (``send(data, callback)``) that keeps every batch."""

    def __init__(self) -> None:
        self.batches: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def send(self, data: dict[str, Any], callback: Callable[[BaseException | None], None]) -> None:
        with self.lock:
            self.batches.append(json.loads(json.dumps(data)))
        callback(None)

    def metrics(self) -> list[dict[str, Any]]:
        with self.lock:
            return [b for b in self.batches if "metrics" in b]


def served(batches: list[dict[str, Any]], part: str = "server") -> int:
    return sum(int(b["metrics"][part]["requests"]) for b in batches)


def by_class(batches: list[dict[str, Any]], part: str = "server") -> dict[str, int]:
    out: dict[str, int] = {}
    for b in batches:
        for cls, n in b["metrics"][part]["requests_by_class"].items():
            out[cls] = out.get(cls, 0) + int(n)
    return {k: v for k, v in out.items() if v}


def ledger_balances() -> dict[str, Any]:
    counts: dict[str, Any] = tracer.stats()["reports"]["metrics"]
    assert counts["created"] == (
        counts["delivered"] + counts["dropped"] + counts["spooled"] + counts["pending"]
    ), counts
    return counts


def get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as exc:
        exc.read()
        return int(exc.code)


STATUSES = [200, 200, 200, 201, 302, 404, 404, 500, 503, 200, 200, 200]


def test_a_custom_reporter_gets_the_counts_of_real_requests(service: str) -> None:
    reporter = Recorder()
    tracer.install(
        app_name="shop",
        reporter=reporter,
        flush_interval=0.02,
        metrics_interval=INTERVAL,
        sample_rate=0,  # sampling decides which traces are kept, never what is counted
    )
    requests = pytest.importorskip("requests")
    with requests.Session() as session:
        for code in STATUSES:
            url = f"{service}/status/{code}" if code != 200 else f"{service}/ok"
            assert session.get(url, allow_redirects=False, timeout=10).status_code == code
        # The batches after this moment hold every request: wait for one that starts later.
        sent_at = time.time()
        wait_for(
            lambda: any(
                b["metrics"]["interval"]["start_us"] / 1e6 > sent_at for b in reporter.metrics()
            )
        )
    batches = reporter.metrics()
    assert served(batches) == len(STATUSES)
    assert by_class(batches) == {"2xx": 7, "3xx": 1, "4xx": 2, "5xx": 2}
    # The client side (requests) is counted apart, by the same status classes.
    assert served(batches, "client") == len(STATUSES)
    assert by_class(batches, "client") == {"2xx": 7, "3xx": 1, "4xx": 2, "5xx": 2}
    first = batches[0]
    assert first["service"] == "shop" and first["pid"] == os.getpid()
    assert isinstance(first["sent_at_us"], int) and "spans" not in first
    # The intervals follow one another without a gap or an overlap.
    for before, after in itertools.pairwise(batches):
        assert before["metrics"]["interval"]["end_us"] == after["metrics"]["interval"]["start_us"]
    busy = [b["metrics"] for b in batches if b["metrics"]["server"]["requests"]]
    row = busy[0]["server"]["routes"][0]
    assert set(row) == {
        "method", "route", "requests", "rpm", "mean_ms", "p50_ms", "p95_ms", "p99_ms"
    }  # fmt: skip
    assert row["method"] == "GET" and row["p50_ms"] is not None
    assert row["rpm"] == pytest.approx(
        row["requests"] * 60 / busy[0]["interval"]["seconds"], rel=1e-3
    )
    target = busy[0]["client"]["targets"][0]
    assert target["server_address"] == "127.0.0.1"
    assert target["server_port"] == service.rsplit(":", 1)[1]
    counts = ledger_balances()
    assert counts["created"] >= len(batches)
    tracer.uninstall()
    # Nothing of the schedule is left running.
    assert not [t for t in threading.enumerate() if t.name == "tracer-metrics-report"]


async def test_aiohttp_routes_and_percentiles() -> None:
    web = pytest.importorskip("aiohttp.web")
    import aiohttp

    reporter = Recorder()
    tracer.install(
        app_name="aio", reporter=reporter, flush_interval=0.02, metrics_interval=INTERVAL
    )

    async def user(request: Any) -> Any:
        # A known least duration: the 50th percentile cannot be below it.
        await asyncio.sleep(0.03)
        return web.Response(text=request.match_info["id"])

    async def health(request: Any) -> Any:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/users/{id}", user)
    app.router.add_get("/health", health)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session:
            for n in range(6):
                async with session.get(f"http://127.0.0.1:{port}/users/{n}") as response:
                    assert response.status == 200
            for _ in range(4):
                async with session.get(f"http://127.0.0.1:{port}/health") as response:
                    assert response.status == 200
            sent_at = time.time()
            deadline = time.monotonic() + 20
            while not any(
                b["metrics"]["interval"]["start_us"] / 1e6 > sent_at for b in reporter.metrics()
            ):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
    finally:
        await runner.cleanup()
    batches = reporter.metrics()
    routes: dict[str, list[dict[str, Any]]] = {}
    for b in batches:
        for row in b["metrics"]["server"]["routes"]:
            routes.setdefault(row["route"], []).append(row)
    # Routes are aiohttp's canonical ones, never the raw paths.
    assert set(routes) == {"/users/{id}", "/health"}
    assert sum(r["requests"] for r in routes["/users/{id}"]) == 6
    assert sum(r["requests"] for r in routes["/health"]) == 4
    for row in routes["/users/{id}"]:
        assert row["p50_ms"] >= 25.0  # the bucket (25 ms, 50 ms] or a later one
        assert row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
    # The loop the service runs on is probed for lag (its thread is named in the batch).
    assert any(b["metrics"]["event_loop_lag"]["loops"] for b in batches)
    ledger_balances()


def test_a_logstash_listener_gets_each_batch_as_one_event(service: str) -> None:
    listener = LineServer()
    try:
        tracer.install(
            app_name="shop",
            reporter=logstash.create(type="tcp", host="127.0.0.1", port=listener.port),
            flush_interval=0.02,
            metrics_interval=INTERVAL,
        )
        for _ in range(5):
            assert get(f"{service}/ok") == 200
        assert get(f"{service}/status/404") == 404
        events: list[dict[str, Any]] = []

        def arrived() -> bool:
            while not listener.lines.empty():
                events.append(strict_loads(listener.lines.get()))
            return served([e for e in events if "metrics" in e]) >= 6

        wait_for(arrived)
        counts = ledger_balances()
        metrics = [e for e in events if "metrics" in e]
        # Delivered means Logstash's TCP stack acknowledged it: it is here.
        assert 1 <= counts["delivered"] <= len(metrics) + 1
        tracer.uninstall()
        arrived()
        metrics = [e for e in events if "metrics" in e]
        assert served(metrics) == 6
        assert by_class(metrics) == {"2xx": 5, "4xx": 1}
        event = metrics[0]
        assert set(event) == {"@timestamp", "@version", "service", "host", "pid", "sent_at_us",
                              "metrics"}  # fmt: skip
        assert event["@version"] == "1" and event["@timestamp"].endswith("Z")
        assert event["service"] == "shop" and event["pid"] == os.getpid()
    finally:
        listener.close()


def test_the_ledger_balances_while_the_reporter_fails(service: str, tmp_path: Any) -> None:
    class Flaky(Recorder):
        def __init__(self) -> None:
            super().__init__()
            self.failures = 3

        def send(self, data: dict[str, Any], callback: Any) -> None:
            if "metrics" in data and self.failures:
                self.failures -= 1
                callback(ConnectionError("down"))
                return
            super().send(data, callback)

    reporter = Flaky()
    tracer.install(
        app_name="flaky",
        reporter=reporter,
        flush_interval=0.02,
        metrics_interval=INTERVAL,
        max_backoff=0.05,
        spool_path=str(tmp_path / "spool.sqlite"),
    )
    for _ in range(4):
        assert get(f"{service}/ok") == 200
    wait_for(lambda: served(reporter.metrics()) == 4)
    assert reporter.failures == 0
    counts = ledger_balances()
    assert counts["delivered"] >= 1
    tracer.uninstall()
    assert served(reporter.metrics()) == 4


def test_the_last_partial_interval_is_sent_at_exit(tmp_path: Any) -> None:
    code = textwrap.dedent(
        """
        import http.server, json, threading, urllib.request
        import tracer
        first = threading.Event()
        class Printer:
            def send(self, data, callback):
                if "metrics" in data:
                    print(json.dumps(data), flush=True)
                    first.set()
                callback(None)
        tracer.install(app_name="leaving", reporter=Printer(), metrics_interval=1.0,
                       flush_interval=0.02)
        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
            def log_message(self, *a): pass
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
        url = f"http://127.0.0.1:{httpd.server_address[1]}/x"
        for _ in range(3):
            urllib.request.urlopen(url).read()
        assert first.wait(30)  # the first batch went out; the next is a second away
        for _ in range(2):
            urllib.request.urlopen(url).read()
        # The server records a request as its span ends, a moment after the client has the
        # answer: exit once the registry has all five, not while one is still being recorded.
        import time, tracer.metrics
        def counted():
            return sum(s.value for f in tracer.metrics.registry().collect() for s in f.samples
                       if s.name == "http_server_request_duration_seconds_count")
        deadline = time.monotonic() + 10
        while counted() < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=subprocess_env(),
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    reports = [json.loads(line) for line in out.stdout.splitlines() if '"metrics"' in line]
    reports = [r for r in reports if "metrics" in r]
    assert [r["metrics"]["final"] for r in reports] == [False, True], out.stdout[-2000:]
    assert [r["metrics"]["server"]["requests"] for r in reports] == [3, 2]


def test_a_process_that_ends_within_its_first_interval_sends_no_batch(tmp_path: Any) -> None:
    code = textwrap.dedent(
        """
        import tracer
        from reporters import stdout
        tracer.install(app_name="brief", reporter=stdout.create(format="json"),
                       metrics_interval=60, flush_interval=0.02)
        with tracer.span("job"):
            pass
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=subprocess_env(),
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [line["name"] for line in lines] == ["job"]


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_counts_only_its_own_requests(service: str) -> None:
    reporter = Recorder()
    tracer.install(
        app_name="forks", reporter=reporter, flush_interval=0.02, metrics_interval=INTERVAL
    )
    for _ in range(5):
        assert get(f"{service}/ok") == 200
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        code = 0
        said: Any
        try:
            os.close(read_end)
            # The parent's sender may have held the lock at the fork: the child takes a new one.
            reporter.lock = threading.Lock()
            reporter.batches.clear()
            # The parent's server thread did not come along: the child serves its own.
            httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
            threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
            for _ in range(2):
                assert get(f"http://127.0.0.1:{httpd.server_address[1]}/status/404") == 404
            wait_for(lambda: bool(reporter.metrics()))
            tracer.uninstall()
            httpd.shutdown()
            said = reporter.metrics()
        except BaseException:
            import traceback

            code, said = 1, traceback.format_exc()
        finally:
            os.write(write_end, json.dumps(said).encode())
            os.close(write_end)
            os._exit(code)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    _, status = os.waitpid(pid, 0)
    child = json.loads(b"".join(chunks))
    assert status == 0, child
    assert child, "the child sent no metrics batch"
    summary = [(b["pid"], b["metrics"]["server"]["requests_by_class"]) for b in child]
    assert {b["pid"] for b in child} == {pid}, summary
    assert served(child) == 2, summary
    assert by_class(child) == {"4xx": 2}, summary
    # The parent goes on with its own counts only.
    tracer.uninstall()
    mine = [b for b in reporter.metrics() if b["pid"] == os.getpid()]
    summary = [b["metrics"]["server"]["requests_by_class"] for b in mine]
    assert served(mine) == 5, summary
    assert by_class(mine) == {"2xx": 5}, summary
