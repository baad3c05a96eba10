"""HeapDiff: memwatch's shape, counts and order, allocation sites."""

from __future__ import annotations

import sys
import tracemalloc
from typing import Any, ClassVar

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


class Held:
    """Instances held by the module-level containers below."""


class Registry:
    """A class attribute and an instance attribute, each holding instances."""

    entries: ClassVar[list[Held]] = []

    def __init__(self) -> None:
        self.items: dict[str, Held] = {}


REGISTRY = Registry()
TRIPPED: list[str] = []


class Proxy:
    """A module-level object whose attributes run code: the census must not touch them."""

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        TRIPPED.append("__class__")
        raise RuntimeError("working outside of a context")

    @property
    def __dict__(self) -> dict[str, Any]:  # type: ignore[override]
        TRIPPED.append("__dict__")
        raise RuntimeError("working outside of a context")

    def __getattr__(self, name: str) -> Any:
        TRIPPED.append(name)
        raise RuntimeError("working outside of a context")


class Strict(dict):  # type: ignore[type-arg]
    """A dict whose Python-level methods refuse to run."""

    def values(self) -> Any:
        TRIPPED.append("values")
        raise RuntimeError("no")

    def __iter__(self) -> Any:
        TRIPPED.append("__iter__")
        raise RuntimeError("no")

    def __len__(self) -> int:
        TRIPPED.append("__len__")
        raise RuntimeError("no")


PROXY = Proxy()
STRICT = Strict(a=Held(), b=Held())


def test_census_names_the_holders_of_each_type() -> None:
    from tracer.memory.heapdiff import census

    TRIPPED.clear()  # pytest's collection looked at PROXY's attributes
    KEPT.extend(Held() for _ in range(30))
    Registry.entries.extend(Held() for _ in range(20))
    REGISTRY.items.update((str(i), Held()) for i in range(10))
    try:
        counted = census(largest=20, holders=True)
    finally:
        Registry.entries.clear()
        REGISTRY.items.clear()
    assert TRIPPED == []
    held = {h["held_by"]: h for h in counted.holders[f"{__name__}.Held"]}
    assert next(iter(held)) == f"{__name__}.KEPT"  # most instances first
    assert (held[f"{__name__}.KEPT"]["what"], held[f"{__name__}.KEPT"]["count"]) == ("list", 30)
    assert held[f"{__name__}.KEPT"]["len"] == 30
    assert len(held) == 3  # at most three per type: STRICT (2) is the fourth
    assert held[f"{__name__}.Registry.entries"]["count"] == 20
    # An instance's attributes come unnamed: naming them would mean asking for its __dict__,
    # which creates one where attributes are stored inline.
    items = held[f"an attribute of {__name__}.REGISTRY"]
    assert (items["what"], items["len"], items["count"]) == ("dict", 10, 10)
    # Without asking, no holders (HeapDiff's census stays as cheap as it was).
    assert census().holders == {}


def test_holders_of_a_long_list_are_estimated_from_items_across_it() -> None:
    from tracer.memory.heapdiff import census

    # The old items at the front, the growth at the end, as a leak fills a list.
    KEPT.extend(Held() for _ in range(5000))
    KEPT.extend(Grown() for _ in range(5000))
    counted = census(holders=True)
    for cls in (Held, Grown):
        held = {h["held_by"]: h for h in counted.holders[f"{__name__}.{cls.__name__}"]}
        kept = held[f"{__name__}.KEPT"]
        assert kept["len"] == 10_000 and kept["count"] == 5000


def test_looking_for_holders_leaves_nothing_behind() -> None:
    from tracer.memory.heapdiff import census

    census(holders=True)  # first use: lazy imports and caches
    hd = HeapDiff()
    census(largest=20, holders=True)
    diff = hd.end()
    assert diff["change"]["allocated_nodes"] <= 5, diff["change"]["details"]
