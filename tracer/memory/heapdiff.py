"""HeapDiff: object counts and sizes by type between two moments, in memwatch's shape.

The census behind it (:func:`census`) is shared with heap snapshots. It counts what
``gc.get_objects()`` returns after a full collection: every object the garbage collector tracks
(instances of classes, dicts, lists, sets, tuples, functions, classes, modules...), with
``sys.getsizeof`` as each one's size. That size is shallow: a list's own array, not its items; a
dict's table, not its keys and values. Objects the collector does not track (str, bytes, int,
float, and dicts or tuples holding only such objects) are not counted on their own: they show in
the size of the containers that hold them, in RSS, and by source line with
:func:`tracer.memory.trace`.

The counting loops run in C (``map``, ``zip``, ``Counter``) over slices of the object list, and
the GIL is released between slices, so other threads run during a long census; the full
collection before it cannot be split.
"""

from __future__ import annotations

import gc
import heapq
import itertools
import os
import sys
import threading
import time
import tracemalloc
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# Objects per slice of the census: each slice holds the GIL for a few milliseconds.
_SLICE = 100_000
# The container types whose largest instances a snapshot lists.
_CONTAINERS = (list, dict, set, frozenset, tuple, bytearray)
# Smaller containers are never "largest": only objects above it reach the Python-level loop.
_MIN_CONTAINER = 1024
# Never two censuses at once: each one holds a reference to every object in the heap.
_census_lock = threading.Lock()


def _after_fork_in_child() -> None:
    # A census running on another thread at fork time left the lock held in the child.
    global _census_lock
    _census_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)

# Counter.update asks whether its argument is a Mapping; the first time for a type, the ABC
# caches the answer in new objects. Asked here, so the first census does not count them.
Counter().update(zip())


def human(size_bytes: float) -> str:
    """``size_bytes`` as memwatch writes sizes: ``"512 bytes"``, ``"1.21 kb"``, ``"-3.4 mb"``."""
    magnitude = abs(size_bytes)
    for unit, scale in (("gb", 1 << 30), ("mb", 1 << 20), ("kb", 1 << 10)):
        if magnitude >= scale:
            return f"{size_bytes / scale:.2f} {unit}"
    return f"{int(size_bytes)} bytes"


def type_name(cls: type) -> str:
    """The qualified name of ``cls``: ``module.QualName``, builtins without their module."""
    module = getattr(cls, "__module__", None)
    qualname = getattr(cls, "__qualname__", None)
    if not isinstance(qualname, str):
        qualname = getattr(cls, "__name__", "?")
    if not isinstance(module, str) or module == "builtins":
        return str(qualname)
    return f"{module}.{qualname}"


@dataclass
class Census:
    """One count of the heap: per type name, objects and shallow bytes."""

    counts: dict[str, int]
    sizes: dict[str, int]
    nodes: int
    size_bytes: int
    seconds: float
    collected: int
    largest: list[dict[str, Any]] = field(default_factory=list)


def _sizeof(obj: object) -> int:
    try:
        return sys.getsizeof(obj, 0)
    except Exception:
        # A class whose __sizeof__ is broken counts as nothing rather than stopping the census.
        return 0


def census(largest: int = 0) -> Census:
    """A full collection, then counts and shallow sizes by type of every tracked object.

    ``largest``: also describe that many of the largest containers (type, len, size, and the
    module-level name holding each one when there is one).
    """
    with _census_lock:
        started = time.perf_counter()
        collected = gc.collect()
        objects = gc.get_objects()
        pairs: Counter[tuple[type, int]] = Counter()
        top: list[tuple[int, int, Any]] = []
        tie = itertools.count()
        try:
            for start in range(0, len(objects), _SLICE):
                part = objects[start : start + _SLICE]
                try:
                    sizes = list(map(sys.getsizeof, part))
                except Exception:
                    sizes = [_sizeof(obj) for obj in part]
                pairs.update(zip(map(type, part), sizes, strict=True))
                if largest:
                    floor = top[0][0] if len(top) >= largest else _MIN_CONTAINER - 1
                    for obj in itertools.compress(part, map(floor.__lt__, sizes)):
                        if isinstance(obj, _CONTAINERS):
                            entry = (_sizeof(obj), next(tie), obj)
                            if len(top) < largest:
                                heapq.heappush(top, entry)
                            elif entry[0] > top[0][0]:
                                heapq.heapreplace(top, entry)
                del part, sizes
                # Let the application's threads run between slices.
                time.sleep(0)
            nodes = len(objects)
        finally:
            del objects
        counts: dict[str, int] = {}
        total: dict[str, int] = {}
        for (cls, size), n in pairs.items():
            name = type_name(cls)
            counts[name] = counts.get(name, 0) + n
            total[name] = total.get(name, 0) + size * n
        described = _describe(sorted(top, reverse=True)) if top else []
        del top
        return Census(
            counts=counts,
            sizes=total,
            nodes=nodes,
            size_bytes=sum(total.values()),
            seconds=time.perf_counter() - started,
            collected=collected,
            largest=described,
        )


def _describe(top: list[tuple[int, int, Any]]) -> list[dict[str, Any]]:
    """The largest containers as plain dicts; the module global that holds each, if any."""
    wanted = {id(obj): i for i, (_, _, obj) in enumerate(top)}
    holders: dict[int, str] = {}
    for module_name, module in list(sys.modules.items()):
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        index = wanted.get(id(namespace))
        if index is not None:
            holders[index] = f"{module_name}.__dict__"
        for name, value in list(namespace.items()):
            index = wanted.get(id(value))
            if index is not None and index not in holders:
                holders[index] = f"{module_name}.{name}"
    out = []
    for i, (size, _, obj) in enumerate(top):
        try:
            length = len(obj)
        except Exception:
            length = None
        out.append(
            {
                "what": type_name(type(obj)),
                "len": length,
                "size_bytes": size,
                "size": human(size),
                "held_by": holders.get(i),
            }
        )
    return out


def site_stats(
    snap: tracemalloc.Snapshot, base: tracemalloc.Snapshot | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """Allocation sites by source line: what ``snap`` holds, or what grew since ``base``."""
    import linecache

    rows: list[tuple[int, int, Any]] = []
    if base is None:
        for stat in snap.statistics("lineno"):
            rows.append((stat.size, stat.count, stat.traceback))
    else:
        for diff in snap.compare_to(base, "lineno"):
            if diff.size_diff > 0:
                rows.append((diff.size_diff, diff.count_diff, diff.traceback))
    rows.sort(key=lambda row: row[0], reverse=True)
    out = []
    for size, count, traceback in rows[:limit]:
        frame = traceback[0]
        out.append(
            {
                "file": frame.filename,
                "line": frame.lineno,
                "code": linecache.getline(frame.filename, frame.lineno).strip(),
                "size_bytes": size,
                "size": human(size),
                "count": count,
            }
        )
    return out


def tracemalloc_snapshot() -> tracemalloc.Snapshot | None:
    """A tracemalloc snapshot of the allocations traced now, without tracer's and tracemalloc's
    own; None when tracemalloc is not tracing."""
    if not tracemalloc.is_tracing():
        return None
    return tracemalloc.take_snapshot().filter_traces(_FILTERS)


_FILTERS = (
    # Allocations made by tracer's memory tools themselves (the census, the trace's thread).
    tracemalloc.Filter(
        False, os.path.join(os.path.dirname(os.path.abspath(__file__)), "*"), all_frames=True
    ),
    tracemalloc.Filter(False, tracemalloc.__file__),
    tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
    tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
    tracemalloc.Filter(False, "<unknown>"),
)


class HeapDiff:
    """Object counts and sizes by type between now and :meth:`end`, as node-memwatch's HeapDiff.

    ``hd = HeapDiff(); ...; diff = hd.end()``. Each of the two samples starts with a full
    collection. ``"+"`` and ``"-"`` per type are the growth and shrinkage of its count between
    the two samples (an object freed and another of the same type allocated in between cancel
    out), so the diff costs memory per type, not per object. When tracemalloc traces at both
    moments, or :func:`tracer.memory.trace` took its snapshot in between, ``change`` also has
    ``allocation_sites``: the source lines whose allocations grew, largest first.

    Each sample pauses the process for about as long as a full collection plus the census: see
    the heap snapshot figures in the README.
    """

    def __init__(self) -> None:
        self._started_at = time.time()
        self._tracemalloc = tracemalloc_snapshot()
        self._ended = False
        # Kept as plain dicts of str -> int, which the collector does not track: the first
        # sample adds nothing to the second.
        first = census()
        self._counts, self._sizes = first.counts, first.sizes
        self._before = _sample(first)
        del first

    def end(self) -> dict[str, Any]:
        """The second sample and the difference, as ``{before, after, change}``.

        Raises RuntimeError when called a second time, as memwatch does.
        """
        if self._ended:
            raise RuntimeError("HeapDiff.end() was already called")
        self._ended = True
        after = census()
        counts, sizes = self._counts, self._sizes
        details: list[dict[str, Any]] = []
        for name in counts.keys() | after.counts.keys():
            grown = after.sizes.get(name, 0) - sizes.get(name, 0)
            delta = after.counts.get(name, 0) - counts.get(name, 0)
            if grown or delta:
                details.append(
                    {
                        "what": name,
                        "size_bytes": grown,
                        "size": human(grown),
                        "+": max(delta, 0),
                        "-": max(-delta, 0),
                    }
                )
        details.sort(key=lambda d: (-d["size_bytes"], -d["+"], d["what"]))
        grown_bytes = after.size_bytes - self._before["size_bytes"]
        return {
            "before": self._before,
            "after": _sample(after),
            "change": {
                "size_bytes": grown_bytes,
                "size": human(grown_bytes),
                "freed_nodes": sum(d["-"] for d in details),
                "allocated_nodes": sum(d["+"] for d in details),
                "details": details,
                "allocation_sites": self._sites(),
            },
        }

    def _sites(self) -> list[dict[str, Any]]:
        now = tracemalloc_snapshot()
        if now is not None and self._tracemalloc is not None:
            return site_stats(now, self._tracemalloc, limit=20)
        from tracer.memory import alloc

        kept = alloc.last_snapshot()
        if kept is None or kept.taken_at < self._started_at:
            return []
        if self._tracemalloc is not None:
            return site_stats(kept.snapshot, self._tracemalloc, limit=20)
        if kept.started_at >= self._started_at:
            # tracemalloc started after the first sample: all it saw was allocated since.
            return site_stats(kept.snapshot, limit=20)
        return []


def _sample(c: Census) -> dict[str, Any]:
    return {"nodes": c.nodes, "size_bytes": c.size_bytes, "size": human(c.size_bytes)}
