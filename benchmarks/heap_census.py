"""What a heap census costs: ``python -m benchmarks.heap_census [--millions 1 2] [--repeat 3]``.

A heap snapshot and each HeapDiff sample start with a full collection and then count every
object the collector tracks. Both hold the GIL, so every thread of the process waits meanwhile.
For heaps of N million tracked objects (a service-like mix: instances of a class, their dicts,
lists, tuples, sets), this prints per run, in ms and in ms per million objects:

- ``gc``: a full collection alone (``gc.collect()``), which every census starts with;
- ``census``: the whole census (collection included), as ``HeapDiff`` and snapshots take it;
- ``snapshot``: ``tracer.memory.snapshot()``, the census plus JSON and gzip of the file;
- ``longest stall``: the longest time another thread, asking for the GIL every 0.5 ms, waited
  during the census: what a request in flight on another thread can be held up by.

The median of ``--repeat`` runs is printed. The heap is built once per size in this process.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import statistics
import sys
import tempfile
import threading
import time
from typing import Any

from tracer.memory.heapdiff import census


class Item:
    """A service-like object: a few attributes, one of them a container."""

    def __init__(self, i: int) -> None:
        self.id = i
        self.name = f"item-{i}"
        self.tags = [i]


def build(millions: float) -> list[Any]:
    """About ``millions`` million tracked objects: Item + its list, a dict, a tuple, a set."""
    groups = int(millions * 1_000_000 / 5)
    heap: list[Any] = []
    for i in range(groups):
        heap.append(Item(i))
        heap.append({"k": [i]})
        heap.append((i, [i]))
        heap.append({i, (i,)})
    return heap


class Watcher:
    """A thread that asks for the GIL every 0.5 ms and keeps the longest wait."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        last = time.perf_counter()
        while not self._stop.is_set():
            time.sleep(0.0005)
            now = time.perf_counter()
            self.longest = max(self.longest, now - last)
            last = now

    def __enter__(self) -> Watcher:
        self._thread.start()
        time.sleep(0.01)
        self.longest = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def measure(repeat: int) -> dict[str, Any]:
    snapshot = importlib.import_module("tracer.memory.snapshot").snapshot
    gcs, censuses, snaps, stalls = [], [], [], []
    nodes = 0
    with tempfile.TemporaryDirectory() as folder:
        for i in range(repeat):
            started = time.perf_counter()
            gc.collect()
            gcs.append(time.perf_counter() - started)
            with Watcher() as w:
                counted = census(largest=20)
            censuses.append(counted.seconds)
            stalls.append(w.longest)
            nodes = counted.nodes
            started = time.perf_counter()
            snapshot(os.path.join(folder, f"s{i}.json.gz"))
            snaps.append(time.perf_counter() - started)
    return {
        "nodes": nodes,
        "gc": statistics.median(gcs),
        "census": statistics.median(censuses),
        "snapshot": statistics.median(snaps),
        "stall": statistics.median(stalls),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.heap_census")
    parser.add_argument("--millions", type=float, nargs="+", default=[1.0, 2.0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"Python {sys.version.split()[0]}, median of {args.repeat} runs")
    print(
        f"{'objects':>10} {'gc ms':>9} {'census ms':>10} {'snapshot ms':>12} {'stall ms':>9}"
        f"   per million: {'gc':>6} {'census':>7} {'snapshot':>9}"
    )
    heap: list[Any] = []
    for millions in sorted(args.millions):
        heap.clear()
        gc.collect()
        heap = build(millions)
        r = measure(args.repeat)
        per = 1e6 / r["nodes"] * 1000
        print(
            f"{r['nodes']:>10,} {r['gc'] * 1000:>9.0f} {r['census'] * 1000:>10.0f}"
            f" {r['snapshot'] * 1000:>12.0f} {r['stall'] * 1000:>9.1f}"
            f"   {' ' * 13}{r['gc'] * per:>6.0f} {r['census'] * per:>7.0f}"
            f" {r['snapshot'] * per:>9.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
