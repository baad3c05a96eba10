"""A real leaking aiohttp service under load from another process (this one): the watcher's leak
event names the measure that grew, reaches the reporter, and a snapshot is written by itself;
the same service without the leak raises none; a leak outside the Python heap shows in RSS."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, subprocess_env
from tests.support.waiting import wait_until

# Bounds of every load run: requests and seconds.
MAX_REQUESTS = 200_000
MAX_SECONDS = 20.0
# A short leak_window keeps the real leaks quick to find; the bursty service gets the same one.
LEAK_WINDOW = 2.0
# Longer than the bursty service takes to fill up (three bursts, a second apart).
BURSTS_WINDOW = 10.0


class Service:
    """tests/memory/leak_service.py in a child process, and a load thread hitting it."""

    def __init__(
        self,
        out: Path,
        leak: str,
        interval: float = 0.25,
        pace: float = 0.0,
        leak_window: float = LEAK_WINDOW,
    ) -> None:
        self.out = out
        self.pace = pace
        env = subprocess_env(
            LEAK=leak,
            MEMORY_INTERVAL=str(interval),
            LEAK_OBSERVATIONS="5",
            LEAK_WINDOW=str(leak_window),
            OBSERVATIONS="1",
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.memory.leak_service", str(out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=ROOT,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.strip().isdigit(), self.proc.stderr.read().decode() if self.proc.stderr else ""
        self.port = int(line)
        self.requests = 0
        self.stop = threading.Event()
        self.loader = threading.Thread(target=self._load, daemon=True)

    def _load(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        deadline = time.monotonic() + MAX_SECONDS
        while not self.stop.is_set() and self.requests < MAX_REQUESTS:
            if time.monotonic() > deadline:
                break
            conn.request("GET", f"/orders/{self.requests}")
            response = conn.getresponse()
            assert response.read() == b"ok"
            self.requests += 1
            if self.pace:
                time.sleep(self.pace)
        conn.close()

    def events(self) -> list[dict[str, Any]]:
        path = self.out / "memory.jsonl"
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            batch = json.loads(line)
            assert batch["service"] == "leaky" and "spans" not in batch
            out.append(batch["memory"])
        return out

    def observations(self) -> list[dict[str, Any]]:
        path = self.out / "observations.jsonl"
        if not path.exists():
            return []
        # The last line may be half written.
        lines = path.read_text().splitlines()[:-1]
        return [json.loads(line) for line in lines]

    def leaks(self) -> list[dict[str, Any]]:
        return [e for e in self.events() if e["event"] == "leak"]

    def wait_for(self, predicate: Any, seconds: float) -> bool:
        return bool(wait_until(predicate, seconds))

    def close(self) -> str:
        self.stop.set()
        if self.loader.is_alive():
            self.loader.join(MAX_SECONDS)
        self.proc.terminate()
        _, err = self.proc.communicate(timeout=30)
        return err.decode(errors="replace")


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Any]:
    started: list[Service] = []

    def start(leak: str, **kwargs: Any) -> Service:
        svc = Service(tmp_path, leak, **kwargs)
        started.append(svc)
        svc.loader.start()
        return svc

    yield start
    for svc in started:
        err = svc.close()
        assert "internal error" not in err, err


def test_a_leaking_service_raises_a_heap_leak_and_a_snapshot_appears(service: Any) -> None:
    svc = service("heap")
    assert svc.wait_for(lambda: any(e["measure"] == "heap" for e in svc.leaks()), MAX_SECONDS)
    leak = next(e for e in svc.leaks() if e["measure"] == "heap")
    assert leak["unit"] == "blocks" and leak["observations"] >= 5
    assert leak["seconds"] >= LEAK_WINDOW
    assert leak["growth"] > 0 and leak["base"] > leak["growth"]
    assert leak["start"] < leak["end"]
    assert leak["reason"].startswith(f"heap growth over {leak['observations']} consecutive ")
    assert leak["reason"].endswith(" blocks/hr")
    # The stats batches came through the same pipeline, and say what grew.
    assert svc.wait_for(
        lambda: any(e["event"] == "stats" and e["leaks"]["heap"] >= 1 for e in svc.events()), 10
    )
    # heap_snapshot_on_leak: a snapshot file is written without anyone asking.
    snapshots = svc.out / "snapshots"
    assert svc.wait_for(lambda: snapshots.is_dir() and any(snapshots.iterdir()), 30)


def test_the_same_service_without_the_leak_raises_none(service: Any) -> None:
    svc = service("none")
    # Long enough for the heap leak above to have been reported several times over.
    assert svc.wait_for(lambda: len(svc.events()) >= 16, MAX_SECONDS)
    svc.stop.set()
    svc.loader.join(MAX_SECONDS)
    assert svc.requests > 1000
    assert svc.leaks() == []
    stats = [e for e in svc.events() if e["event"] == "stats"]
    assert stats[-1]["leaks"] == {"heap": 0, "rss": 0}


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="RSS is read from /proc")
def test_a_leak_outside_the_python_heap_is_caught_through_rss(service: Any) -> None:
    svc = service("rss", pace=0.005)
    assert svc.wait_for(lambda: any(e["measure"] == "rss" for e in svc.leaks()), MAX_SECONDS)
    leak = next(e for e in svc.leaks() if e["measure"] == "rss")
    assert leak["unit"] == "bytes" and leak["growth"] >= 1 << 20
    assert leak["reason"].startswith(f"RSS growth over {leak['observations']} consecutive ")
    assert leak["seconds"] >= LEAK_WINDOW
    assert leak["reason"].endswith("B/hr")
    # Each request keeps one small mmap object: the Python heap barely moves.
    assert not any(e["measure"] == "heap" for e in svc.leaks())


def test_a_service_that_holds_at_most_three_bursts_raises_no_leak(service: Any) -> None:
    # A burst of 60,000 objects a second, a full collection after each, at most three held: the
    # heap climbs for three seconds, then rises while a burst is built and falls when one is let
    # go. Counted in observations alone, that ramp was a leak; it is shorter than leak_window.
    svc = service("bursts", leak_window=BURSTS_WINDOW)
    fulls = lambda: sum(1 for o in svc.observations() if o["trigger"] == "full_gc")  # noqa: E731
    assert svc.wait_for(lambda: fulls() >= 15, 2 * MAX_SECONDS), fulls()
    svc.stop.set()
    svc.loader.join(MAX_SECONDS)
    assert svc.requests > 100
    assert svc.leaks() == []
