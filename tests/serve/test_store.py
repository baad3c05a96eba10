"""The viewer's store on real SQLite files: every method, each search filter, traces split over
batches, retries, retention, histogram deltas and the spans fallback, memory, profiles, a reopened
file, concurrent writer and readers, and hostile strings.

Records are tracer's own (a real ``http.server`` on 127.0.0.1, traced with the memory reporter)
and hand-built foreign spans, as the OTLP and Zipkin decoders make them.
"""

from __future__ import annotations

import copy
import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

import reporters
import tracer
from tests.support.waiting import eventually
from tracer.serve.model import Decoded, HistogramPoint
from tracer.serve.store import Store

T0 = 28_333_333 * 60_000_000  # a minute boundary (November 2023), in microseconds
MINUTE = 60_000_000


class _Handler(http.server.BaseHTTPRequestHandler):
    """``/chain`` calls ``/ok`` on the same server; ``/fail`` answers 500."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/chain":
            port = self.server.server_address[1]
            requests.get(f"http://127.0.0.1:{port}/ok", timeout=30)
        self.send_response(500 if self.path == "/fail" else 200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")


@pytest.fixture(scope="module")
def tracer_spans(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """tracer's span records of three requests (one through a chain of two servers, one that
    fails), made by a real server and client on 127.0.0.1."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRACE_SPOOL_DIR", str(tmp_path_factory.mktemp("spool")))
        memory = reporters.create("memory")
        tracer.install(app_name="shop", reporter=memory, flush_interval=0.02)
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        try:
            port = server.server_address[1]
            for path in ("/chain", "/ok", "/fail"):
                requests.get(f"http://127.0.0.1:{port}{path}", timeout=30)
            # /chain: 2 clients and 2 servers; /ok and /fail: a client and a server each.
            eventually(lambda: len(memory.spans) >= 8, what="8 spans")
            spans = copy.deepcopy(memory.spans)
        finally:
            server.shutdown()
            server.server_close()
            tracer.uninstall()
    return spans


def _span(
    trace: int,
    span: int,
    parent: int | None,
    service: str,
    name: str,
    start: int,
    duration: int,
    kind: str = "server",
    **fields: Any,
) -> dict[str, Any]:
    """A foreign span record, as the OTLP decoder makes one."""
    record: dict[str, Any] = {
        "trace_id": f"{trace:032x}",
        "span_id": f"{span:016x}",
        "parent_id": None if parent is None else f"{parent:016x}",
        "kind": kind,
        "name": name,
        "service": service,
        "host": "h1",
        "pid": 7,
        "start_us": start,
        "duration_us": duration,
        "events": [],
        "http": None,
        "error": None,
        "annotations": [],
        "tags": {},
        "sampled": True,
        "must_collect": False,
        "tracestate": None,
        "request_id": None,
        "source": "otlp",
        "attributes": {},
    }
    record.update(fields)
    return record


def _call(
    trace: int, start: int, caller: str, callee: str, route: str, status: int, duration: int
) -> list[dict[str, Any]]:
    """A trace of three spans: ``caller``'s server span, its client call, ``callee``'s server."""
    http_part = {"method": "GET", "url": None, "path": route, "status_code": status, "route": route}
    error = {"type": "HTTPError", "message": str(status), "stack": ""} if status >= 500 else None
    base = trace * 10
    return [
        _span(trace, base + 1, None, caller, f"GET {route}", start, duration + 200, http=http_part),
        _span(
            trace,
            base + 2,
            base + 1,
            caller,
            f"GET {callee}{route}",
            start + 50,
            duration + 100,
            kind="client",
            http=http_part,
            error=error,
        ),
        _span(
            trace,
            base + 3,
            base + 2,
            callee,
            f"GET {route}",
            start + 100,
            duration,
            http=http_part,
            error=error,
        ),
    ]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(tmp_path / "serve.db")
    yield opened
    opened.close()


def _ids(found: list[Any]) -> list[str]:
    return [t["trace_id"] for t in found]


# -- tracer's own spans --------------------------------------------------------------------------


def test_tracer_spans_come_back_as_they_were_sent(
    store: Store, tracer_spans: list[dict[str, Any]]
) -> None:
    store.add(Decoded(spans=tracer_spans))
    by_trace: dict[str, list[dict[str, Any]]] = {}
    for span in tracer_spans:
        by_trace.setdefault(span["trace_id"], []).append(span)
    assert len(by_trace) == 3
    for trace_id, sent in by_trace.items():
        got = store.trace(trace_id)
        assert got is not None
        assert sorted(got, key=lambda s: s["span_id"]) == sorted(sent, key=lambda s: s["span_id"])
        # Earliest first, and the events (kept as offsets) are the ones recorded.
        assert [s["start_us"] for s in got] == sorted(s["start_us"] for s in sent)
    found = store.search(service="shop", limit=10)
    assert {t["trace_id"] for t in found} == set(by_trace)
    chain = next(t for t in found if t["spans"] == 4)
    # The root is the test's client span: it has no parent.
    assert chain["root_name"].startswith("GET 127.0.0.1:")
    assert chain["services"] == {"shop": 4}
    failed = store.search(tags=[("http.status_code", "500")])
    assert len(failed) == 1 and failed[0]["spans"] == 2
    assert store.services() == ["shop"]
    assert {"name": "GET /chain", "kind": "server"} in store.operations("shop")
    assert store.stats()["spans"] == len(tracer_spans)


def test_an_unknown_or_malformed_trace_id_is_none(store: Store) -> None:
    store.add(Decoded(spans=_call(1, T0, "web", "api", "/a", 200, 1000)))
    assert store.trace(f"{1:032x}") is not None
    assert store.trace(f"{2:032x}") is None
    assert store.trace("not hex") is None
    assert store.trace("") is None


# -- search filters ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """Six traces, one minute apart, each different in one way."""
    opened = Store(tmp_path_factory.mktemp("search") / "serve.db")
    spans = [
        *_call(1, T0, "web", "users", "/users", 200, 1_000),
        *_call(2, T0 + MINUTE, "web", "orders", "/orders", 200, 50_000),
        *_call(3, T0 + 2 * MINUTE, "web", "orders", "/orders", 503, 2_000),
        *_call(4, T0 + 3 * MINUTE, "web", "users", "/users", 200, 3_000),
        *_call(5, T0 + 4 * MINUTE, "web", "pay", "/charge", 200, 4_000),
        _span(6, 61, None, "batch", "nightly", T0 + 5 * MINUTE, 9_000, kind="internal"),
    ]
    spans[10]["tags"] = {"customer": "42"}  # trace 4's callee
    spans[13]["attributes"] = {"messaging.system": "kafka"}  # trace 5's client
    spans[14]["db"] = {"db.system.name": "postgresql", "db.query.text": "SELECT ?"}
    spans[-1]["error"] = {"type": "TimeoutError", "message": "late", "stack": ""}
    opened.add(Decoded(spans=spans))
    yield opened
    opened.close()


def _t(*numbers: int) -> list[str]:
    return [f"{n:032x}" for n in numbers]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, _t(6, 5, 4, 3, 2, 1)),
        ({"service": "orders"}, _t(3, 2)),
        ({"service": "nobody"}, []),
        ({"service": "web", "operation": "GET /users"}, _t(4, 1)),
        ({"operation": "nightly"}, _t(6)),
        ({"service": "users", "operation": "GET /orders"}, []),
        ({"min_duration_us": 10_000}, _t(2)),
        ({"max_duration_us": 2_500}, _t(3, 1)),
        ({"errors": True}, _t(6, 3)),
        ({"tags": [("customer", "42")]}, _t(4)),
        ({"tags": [("customer", "43")]}, []),
        ({"tags": [("messaging.system", "kafka")]}, _t(5)),
        ({"tags": [("http.status_code", "503")]}, _t(3)),
        ({"tags": [("http.route", "/users")]}, _t(4, 1)),
        ({"tags": [("db.system.name", "postgresql")]}, _t(5)),
        ({"tags": [("error.type", "TimeoutError")]}, _t(6)),
        ({"tags": [("customer", "42"), ("http.route", "/users")]}, _t(4)),
        ({"tags": [("customer", "42"), ("http.route", "/orders")]}, []),
        ({"start_us": T0 + MINUTE, "end_us": T0 + 3 * MINUTE}, _t(4, 3, 2)),
        ({"start_us": T0 + 4 * MINUTE}, _t(6, 5)),
        ({"limit": 2}, _t(6, 5)),
        ({"service": "web", "errors": True, "min_duration_us": 1}, _t(3)),
    ],
)
def test_each_filter(searched: Store, query: dict[str, Any], expected: list[str]) -> None:
    assert _ids(searched.search(**query)) == expected


def test_a_summary_holds_the_trace(searched: Store) -> None:
    (found,) = searched.search(service="pay")
    assert found == {
        "trace_id": f"{5:032x}",
        "start_us": T0 + 4 * MINUTE,
        "duration_us": 4_200,
        "root_service": "web",
        "root_name": "GET /charge",
        "spans": 3,
        "errors": 0,
        "services": {"pay": 1, "web": 2},
    }


# -- batches, retries ----------------------------------------------------------------------------


def test_a_trace_split_over_batches_is_one_trace(store: Store) -> None:
    root, client, server = _call(9, T0, "web", "api", "/x", 500, 1_000)
    store.add(Decoded(spans=[server]))  # the callee's process reports first
    (only,) = store.search()
    assert (only["root_service"], only["spans"], only["errors"]) == ("api", 1, 1)
    store.add(Decoded(spans=[client]))
    store.add(Decoded(spans=[root]))
    (whole,) = store.search()
    assert whole == {
        "trace_id": f"{9:032x}",
        "start_us": T0,
        "duration_us": 1_200,
        "root_service": "web",
        "root_name": "GET /x",
        "spans": 3,
        "errors": 2,
        "services": {"api": 1, "web": 2},
    }
    # Found by a tag of the span that came first and by the service of the last.
    assert _ids(store.search(service="web", tags=[("http.status_code", "500")])) == _t(9)
    (edge,) = store.dependencies()["edges"]
    assert (edge["from"], edge["to"], edge["calls"], edge["errors"]) == ("web", "api", 1, 1)


def test_a_span_received_twice_is_stored_once(store: Store) -> None:
    spans = _call(3, T0, "web", "api", "/x", 200, 1_000)
    store.add(Decoded(spans=spans))
    store.add(Decoded(spans=copy.deepcopy(spans)))
    store.add(Decoded(spans=[spans[0], spans[0]]))
    assert store.stats()["spans"] == 3
    assert len(store.trace(f"{3:032x}") or []) == 3
    (summary,) = store.search()
    assert summary["spans"] == 3
    deps = store.dependencies()
    assert deps["edges"][0]["calls"] == 1
    assert {s["name"]: s["spans"] for s in deps["services"]} == {"api": 1, "web": 2}
    assert store.dashboard("web")["routes"][0]["requests"] == 1


def test_spans_with_unusable_ids_are_left_out(store: Store) -> None:
    good = _span(1, 1, None, "a", "x", T0, 10)
    store.add(
        Decoded(
            spans=[
                good,
                {**good, "span_id": "zz"},
                {**good, "trace_id": "12"},
                {**good, "trace_id": None},
            ]
        )
    )
    assert store.stats()["spans"] == 1


# -- service map and dashboards ------------------------------------------------------------------


def test_dependencies_count_calls_errors_and_p95_in_the_range(store: Store) -> None:
    spans = []
    for i in range(20):
        spans += _call(100 + i, T0 + i * 1000, "web", "api", "/a", 500 if i < 5 else 200, 10_000)
    spans += _call(200, T0 + 10 * MINUTE, "api", "db-proxy", "/q", 200, 5_000)
    store.add(Decoded(spans=spans))
    deps = store.dependencies()
    edges = {(e["from"], e["to"]): e for e in deps["edges"]}
    web_api = edges[("web", "api")]
    assert (web_api["calls"], web_api["errors"], web_api["error_ratio"]) == (20, 5, 0.25)
    # The caller's client span lasted 10,100 us; buckets are within 10%.
    assert 9_000 < web_api["p95_us"] < 11_200
    assert set(edges) == {("web", "api"), ("api", "db-proxy")}
    early = store.dependencies(T0, T0 + MINUTE - 1)
    assert [(e["from"], e["to"]) for e in early["edges"]] == [("web", "api")]
    assert {s["name"] for s in early["services"]} == {"web", "api"}
    late = store.dependencies(T0 + 10 * MINUTE)
    assert [(e["from"], e["to"]) for e in late["edges"]] == [("api", "db-proxy")]


def test_dashboard_from_spans(store: Store) -> None:
    spans = []
    for i in range(30):
        minute = i // 10
        status = 500 if i % 10 == 0 else 200
        route = "/slow" if i % 3 == 0 else "/fast"
        duration = 90_000 if route == "/slow" else 2_000
        trace = _call(300 + i, T0 + minute * MINUTE + i, "web", "api", route, status, duration)
        spans += trace
    store.add(Decoded(spans=spans))
    board = store.dashboard("api")
    assert (board["service"], board["source"], board["step_s"]) == ("api", "spans", 60)
    assert [p["time_us"] for p in board["series"]] == [T0, T0 + MINUTE, T0 + 2 * MINUTE]
    assert [p["rpm"]["2xx"] + p["rpm"]["5xx"] for p in board["series"]] == [10, 10, 10]
    assert [p["rpm"]["5xx"] for p in board["series"]] == [1, 1, 1]
    routes = {r["route"]: r for r in board["routes"]}
    assert routes["/slow"]["requests"] == 10 and routes["/fast"]["requests"] == 20
    assert routes["/slow"]["errors"] == 1 and routes["/fast"]["errors"] == 2
    assert 80 < routes["/slow"]["p95_ms"] < 100 and routes["/fast"]["p50_ms"] < 2.3
    assert [r["route"] for r in board["slowest"]] == ["/slow", "/fast"]
    assert [r["route"] for r in board["failing"]] == ["/fast", "/slow"]
    assert len(routes["/slow"]["series"]) == 3
    wide = store.dashboard("api", step_s=180)
    assert wide["step_s"] == 180 and len(wide["series"]) == 1
    assert wide["series"][0]["rpm"]["2xx"] == pytest.approx(9)
    assert store.dashboard("nobody")["routes"] == []


def _point(time_us: int, counts: list[int], start_us: int = T0, **fields: Any) -> HistogramPoint:
    point: HistogramPoint = {
        "service": "api",
        "host": "h1",
        "pid": 7,
        "kind": "server",
        "method": "GET",
        "route": "/items",
        "status_code": 200,
        "start_us": start_us,
        "time_us": time_us,
        "count": sum(counts),
        "sum_s": 0.0,
        "bounds": [0.005, 0.05, 0.5],
        "bucket_counts": counts,
    }
    point.update(fields)  # type: ignore[typeddict-item]
    return point


def test_histogram_points_become_deltas_and_the_dashboard_says_metrics(store: Store) -> None:
    store.add(Decoded(spans=_call(1, T0, "web", "api", "/items", 200, 1_000)))
    points = [
        _point(T0 + 10_000_000, [4, 0, 0, 0]),
        _point(T0 + MINUTE + 10_000_000, [10, 2, 0, 0]),  # +6 fast, +2 medium
        _point(T0 + 2 * MINUTE + 10_000_000, [1, 0, 0, 0]),  # a reset: 1 on its own
        # A new series (a restarted process) counts everything it holds.
        _point(T0 + 3 * MINUTE + 10_000_000, [0, 0, 3, 0], start_us=T0 + 3 * MINUTE),
        _point(
            T0 + 3 * MINUTE + 20_000_000, [0, 0, 3, 2], start_us=T0 + 3 * MINUTE, status_code=200
        ),
        _point(T0 + 10_000_000, [0, 0, 0, 5], status_code=503),
    ]
    store.add(Decoded(histograms=points))
    store.add(Decoded(histograms=points[:2]))  # a retry adds nothing
    board = store.dashboard("api")
    assert board["source"] == "metrics"
    totals = [sum(p["rpm"].values()) for p in board["series"]]
    assert totals == [9, 8, 1, 5]
    assert board["series"][0]["rpm"]["5xx"] == 5
    routes = {(r["method"], r["route"]): r for r in board["routes"]}
    items = routes[("GET", "/items")]
    assert items["requests"] == 23 and items["errors"] == 5
    # Outside the points' range the same service falls back to its spans.
    assert store.dashboard("api", T0 + 10 * MINUTE, T0 + 20 * MINUTE)["source"] == "spans"
    assert "api" in store.services()


# -- memory, profiles ----------------------------------------------------------------------------


def test_memory_points_and_leaks_per_process(store: Store) -> None:
    memory = [
        {
            "service": "api",
            "host": "h1",
            "pid": pid,
            "time_us": T0 + i,
            "rss_bytes": 1000 * i,
            "heap_blocks": None if i == 0 else 10 * i,
        }
        for pid in (1, 2)
        for i in range(3)
    ]
    leak = {
        "service": "api",
        "host": "h1",
        "pid": 2,
        "time_us": T0 + 1,
        "measure": "heap",
        "reason": "grew 5 times",
        "growth": 1.5,
        "unit": "blocks",
    }
    store.add(Decoded(memory=memory, leaks=[leak]))  # type: ignore[arg-type]
    store.add(Decoded(memory=memory[:2], leaks=[leak]))  # type: ignore[arg-type]
    processes = store.memory()["processes"]
    assert [(p["service"], p["pid"]) for p in processes] == [("api", 1), ("api", 2)]
    assert processes[0]["points"] == [
        {"time_us": T0, "rss_bytes": 0, "heap_blocks": None},
        {"time_us": T0 + 1, "rss_bytes": 1000, "heap_blocks": 10},
        {"time_us": T0 + 2, "rss_bytes": 2000, "heap_blocks": 20},
    ]
    assert processes[0]["leaks"] == [] and processes[1]["leaks"] == [leak]
    ranged = store.memory("api", T0 + 1, T0 + 1)["processes"]
    assert [len(p["points"]) for p in ranged] == [1, 1]
    assert store.memory("nobody") == {"processes": []}


def test_profiles_listed_newest_first_and_given_back_whole(store: Store) -> None:
    def profile(started: int, service: str) -> dict[str, Any]:
        return {
            "format": "tracer-profile",
            "reason": "manual",
            "service": service,
            "host": "h",
            "pid": 3,
            "started_at_us": started,
            "duration_s": 1.5,
            "samples": 120,
            "routes": ["/a"],
            "collapsed": "route /a;main;work 120",
            "top": [],
        }

    store.add(Decoded(profiles=[profile(T0, "api"), profile(T0 + 5, "web")]))
    store.add(Decoded(profiles=[profile(T0, "api")]))  # a retry
    listed = store.profiles()
    assert [p["service"] for p in listed] == ["web", "api"]
    assert set(listed[0]) == {
        "id",
        "service",
        "host",
        "pid",
        "started_at_us",
        "duration_s",
        "samples",
        "reason",
        "routes",
    }
    assert [p["service"] for p in store.profiles("api")] == ["api"]
    whole = store.profile(listed[1]["id"])
    assert whole == {"id": listed[1]["id"], **profile(T0, "api")}
    assert store.profile(10**9) is None


# -- retention -----------------------------------------------------------------------------------


def test_retention_deletes_whole_oldest_traces_and_keeps_the_file_under_the_cap(
    tmp_path: Path,
) -> None:
    cap = 400_000
    store = Store(tmp_path / "small.db", max_size=cap)
    store.check_every = 50
    try:
        padding = "x" * 300
        for batch in range(60):
            spans = []
            for i in range(10):
                trace = batch * 10 + i
                for span in _call(1000 + trace, T0 + trace * 1000, "web", "api", "/r", 200, 9):
                    span["attributes"] = {"pad": f"{trace}{padding}{os.urandom(40).hex()}"}
                    spans.append(span)
            store.add(Decoded(spans=spans))
            assert store.stats()["bytes"] <= cap + 150_000
        stats = store.stats()
        assert stats["bytes"] <= cap
        kept = store.search(limit=10_000)
        assert 0 < len(kept) < 600
        # The newest stayed, the oldest went, and no trace lost part of itself.
        assert kept[0]["trace_id"] == f"{1000 + 599:032x}"
        numbers = sorted(int(t["trace_id"], 16) for t in kept)
        assert numbers == list(range(numbers[0], 1600))
        assert all(t["spans"] == 3 for t in kept)
        assert stats["spans"] == 3 * len(kept)
        assert store.trace(f"{1000:032x}") is None
    finally:
        store.close()


# -- reopening, concurrency, hostile input -------------------------------------------------------


def test_reopening_the_file_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "kept.db"
    store = Store(path)
    spans = _call(5, T0, "web", "api", "/k", 200, 100)
    store.add(
        Decoded(
            spans=spans,
            histograms=[_point(T0 + 1, [2, 0, 0, 0])],
            memory=[
                {
                    "service": "api",
                    "host": "h",
                    "pid": 1,
                    "time_us": T0,
                    "rss_bytes": 5,
                    "heap_blocks": 6,
                }
            ],
            profiles=[{"service": "api", "host": "h", "pid": 1, "started_at_us": T0}],
        )
    )
    before = (
        store.search(),
        store.dependencies(),
        store.dashboard("api"),
        store.memory(),
        store.profiles(),
        store.stats(),
        store.services(),
    )
    store.close()
    store = Store(path)
    try:
        after = (
            store.search(),
            store.dependencies(),
            store.dashboard("api"),
            store.memory(),
            store.profiles(),
            store.stats(),
            store.services(),
        )
        assert after == before
        assert store.trace(f"{5:032x}") == sorted(spans, key=lambda s: s["start_us"])
        # The histogram's last point survived too: the next one adds its delta only.
        store.add(Decoded(histograms=[_point(T0 + 2, [3, 0, 0, 0])]))
        assert sum(store.dashboard("api")["series"][0]["rpm"].values()) == 3
        # And a span sent again after the restart is still a duplicate.
        store.add(Decoded(spans=spans))
        assert store.stats()["spans"] == 3
    finally:
        store.close()


def test_a_writer_and_readers_at_once(store: Store) -> None:
    errors: list[BaseException] = []
    done = threading.Event()

    def write() -> None:
        try:
            for i in range(150):
                store.add(Decoded(spans=_call(5000 + i, T0 + i, "web", "api", "/c", 200, 10)))
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    def read() -> None:
        try:
            while not done.is_set():
                for found in store.search(service="api", limit=5):
                    # A trace is all there or not yet there: one transaction per add.
                    assert found["spans"] == 3
                    assert len(store.trace(found["trace_id"]) or []) == 3
                store.dependencies()
                store.dashboard("api")
                store.stats()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write)] + [threading.Thread(target=read) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert store.stats()["traces"] == 150


HOSTILE = [
    "<script>alert(1)</script>",
    "javascript:alert(document.cookie)",
    "\"'; DROP TABLE spans; --",
    "\x00nul\x01ctrl\u2028line\\back",
    "\ud800 lone surrogate",
    "emoji \U0001f525 and 中文",
    "x" * 5000,
]


def test_hostile_strings_are_stored_and_returned_verbatim(store: Store) -> None:
    spans = []
    for i, text in enumerate(HOSTILE):
        spans.append(
            _span(
                77,
                i + 1,
                None if i == 0 else 1,
                text,
                text,
                T0 + i,
                10,
                kind=text,
                host=text,
                tags={text: text},
                attributes={"a": text},
                annotations=[{"time_us": T0, "data": {text: [text]}}],
                error={"type": text, "message": text, "stack": text},
            )
        )
    # Fields of odd types and missing fields come back as they came.
    spans.append(
        _span(
            77,
            99,
            1,
            "odd",
            "odd",
            T0 + 50,
            10,
            start_us=1.5,
            duration_us="10",
            pid=None,
            events=[{"type": "sr", "time_us": T0, "extra": 1}],
        )
    )
    del spans[-1]["host"]
    store.add(Decoded(spans=spans))
    got = store.trace(f"{77:032x}")
    assert got is not None
    assert sorted(got, key=lambda s: s["span_id"]) == sorted(spans, key=lambda s: s["span_id"])
    for text in HOSTILE:
        assert text in store.services()
        assert _ids(store.search(service=text, operation=text)) == _t(77)
        assert _ids(store.search(tags=[(text, text)])) == _t(77)
        assert _ids(store.search(tags=[("error.type", text)])) == _t(77)
    assert store.search(tags=[("a", HOSTILE[0] + "x")]) == []
    assert store.operations(HOSTILE[0]) == [{"name": HOSTILE[0], "kind": HOSTILE[0]}]


def test_a_closed_store_refuses_and_close_is_idempotent(tmp_path: Path) -> None:
    store = Store(tmp_path / "c.db")
    store.close()
    store.close()
    with pytest.raises(RuntimeError):
        store.search()
    with pytest.raises(RuntimeError):
        store.add(Decoded())


def test_a_file_of_another_format_is_refused(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID")
    conn.execute("INSERT INTO meta VALUES ('format', '99')")
    conn.commit()
    conn.close()
    with pytest.raises(ValueError, match="format 99"):
        Store(path)


def test_the_name_caches_stay_bounded_and_right(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tracer.serve import store as module

    monkeypatch.setattr(module, "_NAMES_KEPT", 8)
    for i in range(40):
        store.add(Decoded(spans=[_span(900 + i, 1, None, "svc", f"GET /items/{i}", T0 + i, 5)]))
    assert len(store._ids) <= 8 and len(store._names) <= 8
    names = [s["root_name"] for s in store.search(limit=100)]
    assert names == [f"GET /items/{i}" for i in reversed(range(40))]
    assert (store.trace(f"{905:032x}") or [{}])[0]["name"] == "GET /items/5"
