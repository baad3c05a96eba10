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
import types
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

# Objects per slice of the census: each slice holds the GIL for a few milliseconds.
_SLICE = 100_000
# The container types whose largest instances a snapshot lists.
_CONTAINERS = (list, dict, set, frozenset, tuple, bytearray)
# Smaller containers are never "largest": only objects above it reach the Python-level loop.
_MIN_CONTAINER = 1024
# Holders: the containers a snapshot looks into, each read through its own C methods so that a
# subclass's Python overrides never run during a census; the items looked at per container, and
# the holders kept per type (most instances first).
_HOLDERS = (list, tuple, dict, set, frozenset, deque)
_SAMPLE = 1000
_HOLDERS_PER_TYPE = 3
# The attributes looked at per module-level instance.
_ATTRIBUTES = 64
# Never two censuses at once: each one holds a reference to every object in the heap.
_census_lock = threading.Lock()


def _after_fork_in_child() -> None:
    # A census running on another thread at fork time left the lock held in the child.
    global _census_lock
    _census_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)

# Counter.update asks whether its argument is a Mapping; the first time for a type, the ABC
# caches the answer in new objects (a weak reference per ABC that subclasses Mapping). Asked
# here for the types a census passes, so the first census does not count them.
Counter().update(zip())
Counter().update([])


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
    holders: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def _sizeof(obj: object) -> int:
    try:
        return sys.getsizeof(obj, 0)
    except Exception:
        # A class whose __sizeof__ is broken counts as nothing rather than stopping the census.
        return 0


def census(largest: int = 0, holders: bool = False) -> Census:
    """A full collection, then counts and shallow sizes by type of every tracked object.

    ``largest``: also describe that many of the largest containers (type, len, size, and the
    module-level name holding each one when there is one). ``holders``: also, per type, the
    module-level containers that hold its instances (see :func:`_find_holders`).
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
        held = _find_holders(counts) if holders else {}
        return Census(
            counts=counts,
            sizes=total,
            nodes=nodes,
            size_bytes=sum(total.values()),
            seconds=time.perf_counter() - started,
            collected=collected,
            largest=described,
            holders=held,
        )


def _describe(top: list[tuple[int, int, Any]]) -> list[dict[str, Any]]:
    """The largest containers as plain dicts; the module global that holds each, if any."""
    wanted = {id(obj): i for i, (_, _, obj) in enumerate(top)}
    holders: dict[int, str] = {}
    for module_name, namespace in _namespaces():
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


def _namespaces() -> Iterator[tuple[str, dict[str, Any]]]:
    """``(module name, namespace)`` of every module in ``sys.modules``, read without running
    code of the module's (an object standing in for a module may compute ``__dict__``)."""
    for module_name, module in list(sys.modules.items()):
        if not isinstance(module_name, str) or not issubclass(type(module), types.ModuleType):
            continue
        namespace = _MODULE_DICT(module)
        if isinstance(namespace, dict):
            yield module_name, namespace


_TYPE_DICT = type.__dict__["__dict__"].__get__
_MODULE_DICT = _TYPE_DICT(types.ModuleType)["__dict__"].__get__


def _attributes(value: Any) -> Iterator[tuple[str | None, Any]]:
    """The attributes of a class or an instance found at module level: a class's by name, an
    instance's unnamed. Read without running code of the application's (no property,
    ``__getattr__`` or proxy) and without creating anything: asking an instance for its
    ``__dict__`` would create one where its attributes are stored inline (Python 3.11 and
    later), and the next census would count it. So an instance's attributes are what the
    collector sees of it: its values, or its dict (then also the values in that dict, which a
    dict-valued attribute cannot be told apart from)."""
    cls = type(value)
    if issubclass(cls, type):
        yield from _TYPE_DICT(value).items()
        return
    if issubclass(cls, (types.ModuleType, types.FunctionType, *_HOLDERS)):
        return
    for ref in gc.get_referents(value):
        if ref is cls:
            continue
        yield None, ref
        if type(ref) is dict:
            for inner in itertools.islice(dict.values(ref), _ATTRIBUTES):
                yield None, inner


def _look_inside(container: Any) -> tuple[str, int, Counter[type]] | None:
    """The type, length and item types (of at most ``_SAMPLE`` items, spread across a list or
    tuple) of a container, through the base type's C methods; None for anything else."""
    cls = type(container)
    for base in _HOLDERS:
        if issubclass(cls, base):
            break
    else:
        return None
    length: int = base.__len__(container)
    if not length:
        return None
    items: Any
    if base is dict:
        items = itertools.islice(dict.values(container), _SAMPLE)
    elif base in (list, tuple) and length > _SAMPLE:
        # Across the whole sequence: a leak appends, so the newest items are at the end.
        step = -(-length // _SAMPLE)
        items = base.__getitem__(container, slice(None, None, step))
    else:
        items = itertools.islice(base.__iter__(container), _SAMPLE)
    # A list, not the map itself: the Mapping check above was made for lists at import.
    seen: Counter[type] = Counter(list(map(type, items)))
    return type_name(cls), length, seen


def _find_holders(counts: dict[str, int]) -> dict[str, list[dict[str, Any]]]:
    """Per type name, the containers holding its instances that a name leads to: module
    globals and the attributes of classes and instances that are module globals (a module-level
    list, a class attribute, a singleton's dict: the usual leaks), the ones holding the most
    instances first. A container with more than ``_SAMPLE`` items is estimated from a sample.

    Containers held only by other objects, or by local variables, are not found: that would
    need a walk of every reference in the heap.
    """
    found: dict[str, list[tuple[int, str, str, int]]] = {}
    seen: set[int] = set()
    names: dict[type, str | None] = {}

    def look(value: Any, where: str) -> None:
        # issubclass of the type, not isinstance: isinstance may ask a proxy for __class__.
        if not issubclass(type(value), _HOLDERS) or id(value) in seen:
            return
        sample = _look_inside(value)
        if sample is None:
            return
        seen.add(id(value))
        what, length, item_types = sample
        looked_at = sum(item_types.values())
        for cls, n in item_types.items():
            name = names.get(cls, "")
            if name == "":
                name = names[cls] = type_name(cls) if type_name(cls) in counts else None
            if name is not None:
                estimate = n if looked_at == length else round(n * length / looked_at)
                found.setdefault(name, []).append((estimate, where, what, length))

    for module_name, namespace in _namespaces():
        for name, value in list(namespace.items()):
            if not isinstance(name, str):
                continue
            where = f"{module_name}.{name}"
            look(value, where)
            for attribute, inner in list(_attributes(value)):
                if attribute is None:
                    look(inner, f"an attribute of {where}")
                elif isinstance(attribute, str) and not attribute.startswith("__"):
                    look(inner, f"{where}.{attribute}")
    out: dict[str, list[dict[str, Any]]] = {}
    for name, entries in found.items():
        best = heapq.nsmallest(_HOLDERS_PER_TYPE, entries, key=lambda e: (-e[0], e[1]))
        out[name] = [
            {"held_by": where, "what": what, "len": length, "count": count}
            for count, where, what, length in best
        ]
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
    the heap census figures in benchmarks/README.md.
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
