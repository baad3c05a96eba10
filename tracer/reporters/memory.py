"""An in-memory reporter: the test double that ships (batches and spans kept in lists)."""

from __future__ import annotations

import threading
import time
from typing import Any

from tracer.reporters.base import Batch, Callback


class MemoryReporter:
    """Keeps every batch it is sent; thread-safe. Use :meth:`wait_for` in tests."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self.batches: list[Batch] = []
        self.spans: list[dict[str, Any]] = []

    def send(self, data: Batch, callback: Callback) -> None:
        with self._lock:
            self.batches.append(data)
            self.spans.extend(data.get("spans", ()))
            self._lock.notify_all()
        callback(None)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Wait until at least ``count`` spans arrived (or the timeout); return a copy."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self.spans) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._lock.wait(left)
            return list(self.spans)

    def find(self, **match: Any) -> list[dict[str, Any]]:
        """The spans whose fields equal every given value, e.g. ``find(kind="server")``."""
        with self._lock:
            return [s for s in self.spans if all(s.get(k) == v for k, v in match.items())]

    def clear(self) -> None:
        """Forget everything received so far."""
        with self._lock:
            self.batches.clear()
            self.spans.clear()


def create(**options: Any) -> MemoryReporter:
    """A new in-memory reporter (takes no options)."""
    if options:
        raise TypeError(f"memory reporter takes no options, got {sorted(options)}")
    return MemoryReporter()
