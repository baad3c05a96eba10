"""HeapDiff: memwatch's shape, counts and order, allocation sites."""

from __future__ import annotations

import sys
import tracemalloc
from typing import Any

import pytest

from tracer.memory import HeapDiff, alloc
from tracer.memory.heapdiff import human

KEPT: list[Any] = []


class Grown:
    """Allocated between the two samples."""


class Freed:
    """Freed between the two samples."""


@pytest.fixture(autouse=True)
def _clean() -> Any:
    alloc.reset()
    yield
    alloc.reset()
    KEPT.clear()
    if tracemalloc.is_tracing():
        tracemalloc.stop()


def test_shape_counts_and_order() -> None:
    doomed = [Freed() for _ in range(50)]
    hd = HeapDiff()
    KEPT.extend(Grown() for _ in range(1234))
    del doomed
    diff = hd.end()

    assert set(diff) == {"before", "after", "change"}
    for sample in (diff["before"], diff["after"]):
        assert set(sample) == {"nodes", "size_bytes", "size"}
        assert sample["size"] == human(sample["size_bytes"])
    change = diff["change"]
    assert set(change) == {
        "size_bytes",
        "size",
        "freed_nodes",
        "allocated_nodes",
        "details",
        "allocation_sites",
    }
    details = change["details"]
    assert all(set(d) == {"what", "size_bytes", "size", "+", "-"} for d in details)
    by_name = {d["what"]: d for d in details}
    grown = by_name[f"{__name__}.Grown"]
    assert (grown["+"], grown["-"]) == (1234, 0)
    assert grown["size_bytes"] == 1234 * sys.getsizeof(KEPT[0])
    freed = by_name[f"{__name__}.Freed"]
    assert (freed["+"], freed["-"]) == (0, 50)
    assert details[0] is grown  # the largest growth first
    sizes = [d["size_bytes"] for d in details]
    assert sizes == sorted(sizes, reverse=True)
    assert change["allocated_nodes"] == sum(d["+"] for d in details)
    assert change["freed_nodes"] == sum(d["-"] for d in details)
    assert diff["after"]["nodes"] - diff["before"]["nodes"] == (
        change["allocated_nodes"] - change["freed_nodes"]
    )
    assert change["size_bytes"] == diff["after"]["size_bytes"] - diff["before"]["size_bytes"]
    assert change["allocation_sites"] == []


def test_nothing_between_the_samples_is_nearly_nothing() -> None:
    HeapDiff().end()  # first use: lazy imports and caches
    diff = HeapDiff().end()
    assert diff["change"]["allocated_nodes"] <= 5, diff["change"]["details"]


def test_end_twice_raises() -> None:
    hd = HeapDiff()
    hd.end()
    with pytest.raises(RuntimeError):
        hd.end()


def test_sites_when_tracemalloc_traces() -> None:
    tracemalloc.start(1)
    hd = HeapDiff()
    KEPT.extend(bytearray(700) for _ in range(400))  # the site
    line = sys._getframe().f_lineno - 1
    sites = hd.end()["change"]["allocation_sites"]
    assert (sites[0]["file"], sites[0]["line"]) == (__file__, line)
    assert sites[0]["size_bytes"] >= 700 * 400 and sites[0]["size"] == human(sites[0]["size_bytes"])


def test_sites_from_a_trace_during_the_diff() -> None:
    from tracer.memory import trace

    hd = HeapDiff()
    with trace(seconds=60):
        KEPT.extend(bytearray(900) for _ in range(300))  # the site
        line = sys._getframe().f_lineno - 1
    assert not tracemalloc.is_tracing()
    sites = hd.end()["change"]["allocation_sites"]
    assert (sites[0]["file"], sites[0]["line"]) == (__file__, line)


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0 bytes"), (1023, "1023 bytes"), (1536, "1.50 kb"), (-3 * 2**20, "-3.00 mb")],
)
def test_human(n: int, text: str) -> None:
    assert human(n) == text
