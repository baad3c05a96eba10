"""The memory watcher in this process: events, the stats dict, reports, install/uninstall, fork,
and the leak rule on known sequences."""

from __future__ import annotations

import gc
import json
import os
import threading
import time
import urllib.request
from typing import Any

import pytest

import tracer
import tracer.memory
from tests.support.waiting import wait_until
from tracer import gchook, safety
from tracer.memory import watch
from tracer.memory.watch import Base
from tracer.reporters import memory_text

STATS_FIELDS = {
    "num_full_gc",
    "num_inc_gc",
    "current_base",
    "estimated_base",
    "usage_trend",
    "min",
    "max",
    "rss",
    "rss_bytes",
    "allocated_blocks",
    "gc_pause_seconds",
    "uncollectable",
    "time",
    "trigger",
    "leaks",
}


class Recorder:
    """A user reporter that keeps the batches it gets."""

    def __init__(self) -> None:
        self.batches: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def send(self, data: dict[str, Any], callback: Any) -> None:
        with self.lock:
            self.batches.append(data)
        callback(None)

    def reports(self, kind: str) -> list[dict[str, Any]]:
        with self.lock:
            return [b for b in self.batches if kind in b]


def memory_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "tracer-memory"]


def hooks() -> list[Any]:
    return [cb for cb in gc.callbacks if isinstance(getattr(cb, "__self__", None), watch.GcHook)]


def wait(predicate: Any, seconds: float = 10.0) -> bool:
    return bool(wait_until(predicate, seconds, step=0.01))


@pytest.fixture
def events() -> Any:
    got: dict[str, list[dict[str, Any]]] = {"stats": [], "leak": []}
    fns = {event: got[event].append for event in got}
    for event, fn in fns.items():
        tracer.memory.on(event, fn)
    yield got
    for event, fn in fns.items():
        tracer.memory.off(event, fn)


def test_a_full_collection_gives_a_stats_event_with_memwatchs_fields(events: Any) -> None:
    tracer.install(app_name="watch", reporter=Recorder(), memory_interval=60.0)
    gc.collect()
    assert wait(lambda: events["stats"])
    stats = events["stats"][0]
    assert set(stats) == STATS_FIELDS
    assert stats["trigger"] == "full_gc" and stats["num_full_gc"] >= 1
    assert stats["current_base"] == stats["allocated_blocks"] > 0
    assert stats["gc_pause_seconds"] > 0
    if os.path.exists("/proc/self/statm"):
        assert stats["rss_bytes"] == stats["rss"]["current_base"] > 1 << 20
    json.dumps(stats)


def test_gc_runs_a_full_collection_and_returns_the_stats(events: Any) -> None:
    tracer.install(app_name="watch", reporter=Recorder(), memory_interval=60.0)
    first = tracer.memory.gc()
    second = tracer.memory.gc()
    assert second["num_full_gc"] >= first["num_full_gc"] + 1
    assert set(second) == STATS_FIELDS
    # The listeners saw the same observations, on the watcher's thread.
    assert wait(lambda: len(events["stats"]) >= 2)
    assert events["stats"][-1]["num_full_gc"] == second["num_full_gc"]


def test_gc_without_the_watcher_still_returns_the_stats() -> None:
    stats = tracer.memory.gc()
    assert set(stats) == STATS_FIELDS and stats["num_full_gc"] >= 1
    assert hooks() == [] and memory_threads() == []


def test_the_timer_gives_stats_when_no_full_collection_comes(events: Any) -> None:
    tracer.install(app_name="watch", reporter=Recorder(), memory_interval=0.05)
    assert wait(lambda: any(s["trigger"] == "timer" for s in events["stats"]))


def test_off_stops_a_listener() -> None:
    got: list[dict[str, Any]] = []
    tracer.memory.on("stats", got.append)
    tracer.memory.off("stats", got.append)
    tracer.memory.off("stats", got.append)  # a second off is ignored
    tracer.install(app_name="watch", reporter=Recorder(), memory_interval=60.0)
    tracer.memory.gc()
    assert got == []
    with pytest.raises(ValueError):
        tracer.memory.on("grow", got.append)
    with pytest.raises(TypeError):
        tracer.memory.on("stats", None)  # type: ignore[arg-type]


@pytest.mark.parametrize("error", [RuntimeError, SystemExit])
def test_a_failing_listener_is_counted_and_the_others_still_run(
    events: Any, error: type[BaseException]
) -> None:
    def broken(stats: dict[str, Any]) -> None:
        raise error("listener bug")

    tracer.memory.on("stats", broken)
    try:
        tracer.install(app_name="watch", reporter=Recorder(), memory_interval=60.0)
        tracer.memory.gc()
        tracer.memory.gc()
        assert len(events["stats"]) >= 2
        errors = safety.take_strict_errors()
        assert errors and all(str(e) == "listener bug" for e in errors)
        assert memory_threads()[0].is_alive()
    finally:
        tracer.memory.off("stats", broken)


def test_stats_reach_the_reporter_at_most_once_per_interval(events: Any) -> None:
    reporter = Recorder()
    interval = 0.2
    started = time.monotonic()
    tracer.install(app_name="watch", reporter=reporter, memory_interval=interval)
    assert wait(lambda: len(reporter.reports("memory")) >= 3)
    # Full collections in between give listeners more events, not more batches. The watcher
    # observes them on its own thread, so the test collects until one has been observed.

    def collected_more_than_sent() -> bool:
        gc.collect()
        return len(events["stats"]) > len(reporter.reports("memory"))

    assert wait(collected_more_than_sent)
    # The batches first, then the time: a batch that arrives between the two is then counted
    # in the time, never in the batches only.
    batches = reporter.reports("memory")
    elapsed = time.monotonic() - started
    assert all(b["memory"]["event"] == "stats" for b in batches)
    assert len(batches) <= elapsed / interval + 1
    body = batches[0]["memory"]
    assert set(body) == STATS_FIELDS | {"event"}
    assert tracer.stats()["reports"]["memory"]["created"] >= 3


def test_uninstall_removes_the_gc_callback_and_the_thread() -> None:
    before = list(gc.callbacks)
    tracer.install(app_name="watch", reporter=Recorder())
    assert len(hooks()) == 1 and len(memory_threads()) == 1
    tracer.uninstall()
    assert gc.callbacks == before
    assert wait(lambda: memory_threads() == [])
    tracer.install(app_name="watch", reporter=Recorder())
    assert len(hooks()) == 1 and len(memory_threads()) == 1


def test_memory_watch_off_starts_nothing(events: Any) -> None:
    tracer.install(app_name="watch", reporter=Recorder(), memory_watch=False)
    # The gc hook may be in for the metrics' pause histogram, but not for the watcher.
    assert "memory" not in gchook.HOOK.users and memory_threads() == []
    gc.collect()
    time.sleep(0.05)
    assert events["stats"] == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
@pytest.mark.filterwarnings("ignore:This process")
def test_a_forked_child_has_its_own_watcher(events: Any) -> None:
    tracer.install(app_name="watch", reporter=Recorder(), memory_interval=60.0)
    for _ in range(3):
        tracer.memory.gc()
    parent = tracer.memory.gc()
    assert parent["num_full_gc"] >= 4
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read)
            child = tracer.memory.gc()
            out = {
                "num_full_gc": child["num_full_gc"],
                "min": child["min"],
                "hooks": len(hooks()),
                "threads": [t.is_alive() for t in memory_threads()],
                "listened": len(events["stats"]),
            }
            os.write(write, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        out = json.loads(f.read())
    os.waitpid(pid, 0)
    # Counted from the fork: one collection, too few observations for min/max.
    assert out["num_full_gc"] == 1 and out["min"] is None
    assert out["hooks"] == 1 and out["threads"] == [True]
    assert out["listened"] > len(events["stats"]) - 1  # the listeners came along
    assert tracer.memory.gc()["num_full_gc"] == parent["num_full_gc"] + 1


def test_the_metrics_collector_exposes_leaks_and_bases() -> None:
    prometheus_client = pytest.importorskip("prometheus_client")
    tracer.install(app_name="watch", reporter=Recorder(), memory_interval=60.0)
    tracer.memory.gc()
    registry = prometheus_client.CollectorRegistry()
    registry.register(tracer.memory._Collector())
    text = prometheus_client.generate_latest(registry).decode()
    assert 'tracer_memory_leaks_total{measure="heap"} 0.0' in text
    assert 'tracer_memory_leaks_total{measure="rss"} 0.0' in text
    assert "tracer_memory_heap_base_blocks " in text
    if os.path.exists("/proc/self/statm"):
        assert "tracer_memory_rss_base_bytes " in text


def test_a_scrape_of_tracers_metrics_shows_the_memory_metrics() -> None:
    from tests.aioserver import AioServer
    from tracer import metrics

    if getattr(metrics, "add_collector", None) is None:
        pytest.skip("tracer.metrics has no add_collector")
    tracer.install(app_name="watch", reporter=Recorder(), memory_interval=60.0)
    tracer.memory.gc()
    server = AioServer(handler=metrics.aiohttp_handler())
    try:
        with urllib.request.urlopen(server.url + "/metrics", timeout=10) as response:
            text = response.read().decode()
        assert 'tracer_memory_leaks_total{measure="heap"} 0.0' in text
        assert "tracer_memory_heap_base_blocks " in text
        tracer.uninstall()
        with urllib.request.urlopen(server.url + "/metrics", timeout=10) as response:
            assert "tracer_memory_" not in response.read().decode()
    finally:
        server.close()
    assert tracer.memory._collector is None


def test_the_public_names_are_what_they_should_be() -> None:
    assert set(tracer.memory.__all__) == {
        "EVENTS",
        "HeapDiff",
        "gc",
        "off",
        "on",
        "snapshot",
        "trace",
    }
    for name in tracer.memory.__all__:
        assert getattr(tracer.memory, name) is not None
    assert callable(tracer.memory.snapshot) and callable(tracer.memory.trace)


# -- the leak rule ------------------------------------------------------------------------------


def feed(base: Base, values: list[int], start: float = 100.0) -> list[dict[str, Any]]:
    leaks = []
    for i, value in enumerate(values):
        leak = base.observe(value, start + i, full=True)
        if leak is not None:
            leaks.append(leak)
    return leaks


def test_five_consecutive_growths_are_a_leak() -> None:
    base = Base("heap", 5, 1000, 0.01, warmup_until=0)
    leaks = feed(base, [100_000, 101_000, 102_000, 103_000, 104_000, 105_000])
    (leak,) = leaks
    assert leak["growth"] == 5000 and leak["observations"] == 5
    assert leak["reason"] == "heap growth over 5 consecutive full GCs (5.0 s) - 3.60 M blocks/hr"
    assert leak["start"] < leak["end"] and leak["measure"] == "heap"
    assert base.leaks == 1


def test_four_growths_and_a_dip_are_not() -> None:
    base = Base("heap", 5, 1000, 0.01, warmup_until=0)
    assert feed(base, [100_000, 101_000, 102_000, 103_000, 104_000, 103_999, 105_000]) == []


def test_noise_that_only_climbs_back_to_a_level_seen_before_is_not_a_leak() -> None:
    base = Base("heap", 5, 1000, 0.01, warmup_until=0)
    # A high level, a dip, and five small rises that end barely above the earlier high.
    assert feed(base, [110_000, 100_000, 102_000, 104_000, 106_000, 108_000, 110_500]) == []


def test_observations_in_the_warm_up_set_the_level_only() -> None:
    base = Base("rss", 5, 1 << 20, 0.01, warmup_until=105.5)
    values = [i * (4 << 20) for i in range(10, 21)]
    leaks = feed(base, values)
    # Observations 0..5 are in the warm-up; the leak needs five growths after it.
    (leak,) = leaks
    assert leak["end"] == watch._iso(110.0) and leak["unit"] == "bytes"
    assert leak["reason"].startswith("RSS growth over 5 consecutive full GCs (5.0 s) - ")
    assert leak["reason"].endswith(" GB/hr")


def test_a_steady_leak_is_reported_once_per_window() -> None:
    base = Base("heap", 5, 1000, 0.01, warmup_until=0)
    leaks = feed(base, [100_000 + 2000 * i for i in range(16)])
    assert len(leaks) == 3


def test_memwatchs_estimated_base_and_trend() -> None:
    base = Base("heap", 5, 1000, 0.01, warmup_until=0)
    feed(base, [1000] * 9)
    fields = base.fields()
    assert fields["estimated_base"] == 1000 and fields["usage_trend"] == 0.0
    assert fields["min"] == fields["max"] == 1000
    feed(base, [2000] * 10, start=200)
    fields = base.fields()
    assert 1000 < fields["estimated_base"] < 2000
    assert fields["usage_trend"] > 0 and fields["max"] == 2000


def test_the_stdout_reporter_prints_memory_batches_readably() -> None:
    common = {"service": "shop", "host": "h", "pid": 7, "sent_at_us": 1}
    leak = {
        "event": "leak",
        "measure": "rss",
        "unit": "bytes",
        "growth": 2_500_000,
        "reason": "RSS growth over 5 consecutive observations (20 s) - 450.00 MB/hr",
        "start": "2026-01-01T00:00:00.000Z",
        "end": "2026-01-01T00:00:20.000Z",
    }
    text = memory_text.render({**common, "memory": leak})
    assert text.startswith("memory LEAK shop[7] rss: RSS growth over 5 consecutive")
    assert "(+2.50 MB, 2026-01-01T00:00:00.000Z .. 2026-01-01T00:00:20.000Z)" in text
    stats = tracer.memory.gc()
    line = memory_text.render({**common, "memory": {"event": "stats", **stats}})
    assert line.startswith("memory stats shop[7] heap ")
    assert f"{stats['current_base']:,} blocks" in line and "\n" not in line


def test_gc_returns_even_while_a_listener_holds_the_watchers_thread() -> None:
    release = threading.Event()
    entered = threading.Event()
    finished = threading.Event()

    def slow(stats: dict[str, Any]) -> None:
        entered.set()
        release.wait(10)
        finished.set()

    tracer.install(app_name="watch", reporter=Recorder(), memory_interval=60.0)
    tracer.memory.on("stats", slow)
    try:
        gc.collect()
        assert entered.wait(10)
        watcher = tracer.memory._watcher
        assert watcher is not None
        stats = watcher.collect(timeout=0.2)
        # It came back while the listener was still in its wait.
        assert not finished.is_set()
        assert set(stats) == STATS_FIELDS
    finally:
        release.set()
        tracer.memory.off("stats", slow)


def test_metrics_and_the_watcher_share_one_gc_callback() -> None:
    before = list(gc.callbacks)
    tracer.install(app_name="watch", reporter=Recorder())
    assert gchook.HOOK.users == {"metrics", "memory"}
    assert [cb for cb in gc.callbacks if cb not in before] == [gchook.HOOK.entry]
    tracer.uninstall()
    assert gc.callbacks == before and not gchook.HOOK.users


def feed_every(base: Base, values: list[int], step: float) -> list[dict[str, Any]]:
    leaks = []
    for i, value in enumerate(values):
        leak = base.observe(value, 1000.0 + i * step, full=True)
        if leak is not None:
            leaks.append(leak)
    return leaks


def sawtooth(cycles: int) -> list[int]:
    """Heap counts of a service that holds at most three bursts and collects often: a ramp of
    three bursts, then each new burst climbs while it is built and falls back when the oldest
    is let go."""
    values = [100_000 + 2_000 * i for i in range(16)]  # three bursts, built one after another
    for _ in range(cycles):
        values += [130_000 + 2_000 * i for i in range(1, 6)] + [130_000]
    return values


def test_a_bounded_sawtooth_at_a_fast_collection_rate_is_not_a_leak() -> None:
    # A full collection every 50 ms: memwatch's five in a row take a quarter of a second.
    base = Base("heap", 5, 1000, 0.01, warmup_until=0, span=60.0)
    assert feed_every(base, sawtooth(400), 0.05) == []
    assert base.leaks == 0


def test_growth_for_less_than_the_window_is_not_a_leak_and_for_longer_is() -> None:
    base = Base("heap", 5, 1000, 0.01, warmup_until=0, span=2.0)
    leaks = feed_every(base, [100_000 + 1_000 * i for i in range(60)], 0.05)
    # The first observation 2 s after the streak began completes it, not the fifth growth.
    first = leaks[0]
    assert first["observations"] == 40 and first["seconds"] == 2.0
    assert first["reason"].startswith("heap growth over 40 consecutive full GCs (2.0 s)")
    assert len(leaks) == 1


def test_with_observations_far_apart_the_count_decides() -> None:
    base = Base("heap", 5, 1000, 0.01, warmup_until=0, span=300.0)
    (leak,) = feed_every(base, [100_000 + 5_000 * i for i in range(7)], 60.0)
    assert leak["observations"] == 5 and leak["seconds"] == 300.0


def test_the_leak_options_reach_the_watcher() -> None:
    tracer.install(app_name="watch", reporter=Recorder(), leak_observations=7, leak_window=12.5)
    watcher = tracer.memory._watcher
    assert watcher is not None
    assert (watcher.heap.window, watcher.heap.span) == (7, 12.5)
    assert (watcher.rss.window, watcher.rss.span) == (7, 12.5)


@pytest.mark.parametrize(
    ("key", "value"), [("leak_window", -1), ("leak_window", "5"), ("leak_observations", 1)]
)
def test_the_leak_options_are_validated(key: str, value: object) -> None:
    with pytest.raises(tracer.ConfigError, match=key):
        tracer.install(app_name="watch", **{key: value})


def test_the_leak_window_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from tracer.config import load

    monkeypatch.setenv("TRACE_LEAK_WINDOW", "90")
    monkeypatch.setenv("TRACE_LEAK_OBSERVATIONS", "8")
    cfg = load(env=dict(os.environ))
    assert (cfg.leak_window, cfg.leak_observations) == (90.0, 8)
    monkeypatch.setenv("TRACE_LEAK_WINDOW", "a while")
    with pytest.raises(tracer.ConfigError, match="TRACE_LEAK_WINDOW"):
        load(env=dict(os.environ))
