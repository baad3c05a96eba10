"""Heap snapshot files: the format, snapshots on a leak (rate limit, max files), trace()."""

from __future__ import annotations

import gc
import importlib
import os
import sys
import time
import tracemalloc
from typing import Any

import pytest

import tracer
from tests.memory.heap_helpers import Discard

snapshot_module = importlib.import_module("tracer.memory.snapshot")
alloc = importlib.import_module("tracer.memory.alloc")
load = importlib.import_module("tracer.memory.cli").load

LEAK = {"start": 1.0, "end": 2.0, "growth": 1000, "reason": "heap growth (test)"}


class Kept:
    """Instances the snapshots must count."""


HELD: list[Kept] = []


@pytest.fixture(autouse=True)
def _no_trace_left() -> Any:
    alloc.reset()
    yield
    alloc.reset()
    if tracemalloc.is_tracing():
        tracemalloc.stop()
    HELD.clear()


def test_snapshot_document(tmp_path: Any) -> None:
    HELD.extend(Kept() for _ in range(4321))
    path = snapshot_module.snapshot(str(tmp_path / "one.json.gz"))
    assert path == str(tmp_path / "one.json.gz")
    assert sorted(os.listdir(tmp_path)) == ["one.json.gz"]  # no temporary file left
    doc = load(path)
    assert doc["format"] == "tracer-heap-snapshot" and doc["version"] == 1
    assert doc["reason"] == "manual" and doc["leak"] is None
    assert doc["process"]["pid"] == os.getpid()
    assert abs(doc["time_us"] / 1e6 - time.time()) < 600
    types = {t["what"]: t for t in doc["census"]["types"]}
    kept = types[f"{__name__}.Kept"]
    assert kept["count"] == 4321
    assert kept["size_bytes"] == 4321 * sys.getsizeof(HELD[0])
    sizes = [t["size_bytes"] for t in doc["census"]["types"]]
    assert sizes == sorted(sizes, reverse=True)
    assert doc["census"]["nodes"] == sum(t["count"] for t in doc["census"]["types"])
    held = [c for c in doc["containers"] if c["held_by"] == f"{__name__}.HELD"]
    assert held and held[0]["what"] == "list" and held[0]["len"] == 4321
    assert doc["memory"]["rss_bytes"] > 0 and doc["memory"]["allocated_blocks"] > 0
    assert doc["gc"]["thresholds"] == list(gc.get_threshold())
    assert doc["allocation_sites"] is None


def test_plain_json_when_the_name_has_no_gz(tmp_path: Any) -> None:
    import json

    path = snapshot_module.snapshot(str(tmp_path / "plain.json"))
    with open(path, encoding="utf-8") as f:
        assert json.load(f)["format"] == "tracer-heap-snapshot"


def test_snapshot_without_a_path_uses_the_configured_dir(tmp_path: Any) -> None:
    folder = tmp_path / "snaps"
    tracer.install(
        app_name="my service/x", reporter=Discard(), memory_watch=False, heap_snapshot_dir=folder
    )
    path = snapshot_module.snapshot()
    assert os.path.dirname(path) == str(folder)
    name = os.path.basename(path)
    assert name.startswith(f"heap-my_service_x-{os.getpid()}-") and name.endswith(".json.gz")
    assert load(path)["process"]["service"] == "my service/x"


def _install(tmp_path: Any, **options: Any) -> str:
    folder = str(tmp_path / "snaps")
    tracer.install(
        app_name="leaky",
        reporter=Discard(),
        memory_watch=False,
        heap_snapshot_signal=None,
        heap_snapshot_dir=folder,
        **options,
    )
    return folder


def test_on_leak_writes_one_per_min_interval(tmp_path: Any) -> None:
    folder = _install(tmp_path, heap_snapshot_min_interval=3600.0)
    first = snapshot_module.on_leak(LEAK)
    assert first is not None and os.path.dirname(first) == folder
    doc = load(first)
    assert doc["reason"] == "leak" and doc["leak"] == LEAK
    assert snapshot_module.on_leak(LEAK) is None
    assert len(os.listdir(folder)) == 1


def test_on_leak_keeps_max_files_and_only_its_own(tmp_path: Any) -> None:
    folder = _install(tmp_path, heap_snapshot_min_interval=0.0, heap_snapshot_max_files=2)
    os.makedirs(folder, exist_ok=True)
    others = [
        "notes.txt",
        "heap-old.json.gz",
        "heap-x-1-bad.json.gz",
        # Another service's snapshot: its own limit, not this one's.
        "heap-other-1-20260101T000000.000000Z.json.gz",
    ]
    for name in others:
        with open(os.path.join(folder, name), "w") as f:
            f.write("not ours")
    written = [snapshot_module.on_leak(LEAK) for _ in range(4)]
    assert all(written)
    names = sorted(os.listdir(folder))
    assert names == sorted(others + [os.path.basename(str(p)) for p in written[-2:]])


def test_on_leak_off_and_after_uninstall(tmp_path: Any) -> None:
    folder = _install(tmp_path, heap_snapshot_on_leak=False)
    assert snapshot_module.on_leak(LEAK) is None
    tracer.uninstall()
    assert snapshot_module.on_leak(LEAK) is None
    assert not os.path.exists(folder)


def test_a_folder_that_cannot_be_written_never_raises(tmp_path: Any) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the folder should be")
    tracer.install(
        reporter=Discard(),
        memory_watch=False,
        heap_snapshot_signal=None,
        heap_snapshot_dir=str(blocker / "snaps"),
        heap_snapshot_min_interval=0.0,
    )
    assert snapshot_module.on_leak(LEAK) is None
    with pytest.raises(OSError):
        snapshot_module.snapshot()


def test_trace_turns_tracemalloc_off_by_itself_and_names_the_line(tmp_path: Any) -> None:
    assert not tracemalloc.is_tracing()
    handle = alloc.trace(seconds=0.3, frames=3)
    assert tracemalloc.is_tracing() and handle.active
    assert alloc.trace() is handle  # one at a time
    held = [bytearray(512) for _ in range(1000)]  # the site
    line = sys._getframe().f_lineno - 1
    assert handle.wait(30)
    assert not tracemalloc.is_tracing() and not handle.active
    path = snapshot_module.snapshot(str(tmp_path / "traced.json.gz"))
    sites = load(path)["allocation_sites"]
    assert sites["source"] == "trace" and sites["frames"] == 3
    top = sites["sites"][0]
    assert (top["file"], top["line"]) == (__file__, line)
    assert "bytearray(512)" in top["code"] and top["size_bytes"] >= 512 * 1000
    assert len(held) == 1000


def test_trace_leaves_a_tracemalloc_started_by_the_application_on() -> None:
    tracemalloc.start()
    with alloc.trace(seconds=60) as handle:
        assert handle.active
    assert not handle.active and handle.snapshot is not None
    assert tracemalloc.is_tracing()


def test_uninstall_ends_a_running_trace() -> None:
    tracer.install(reporter=Discard(), memory_watch=False)
    handle = alloc.trace(seconds=600)
    tracer.uninstall()
    assert not handle.active and not tracemalloc.is_tracing()


def test_trace_arguments() -> None:
    with pytest.raises(ValueError):
        alloc.trace(seconds=0)
    with pytest.raises(ValueError):
        alloc.trace(frames=0)
    assert not tracemalloc.is_tracing()


def test_a_trace_entered_twice_ends_with_the_outer_block() -> None:
    with tracer.memory.trace(30) as outer:
        with tracer.memory.trace(30) as inner:
            assert inner is outer
        assert outer.active
    assert not outer.active
