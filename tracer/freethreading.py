"""Counters the GIL keeps exact, kept exact without it.

Some of tracer's bookkeeping counts with a plain ``+=`` on shared ints, lists and dicts (the span
processors' counters and histogram buckets, the sampler's traffic count, the invalid-header
counts): with the GIL each such step runs whole before another thread's, and a lock would only
add cost. A free-threaded build (``sys._is_gil_enabled()`` is False) runs them at once and loses
increments. So the functions that count are wrapped by :func:`serialized` when tracer installs:
unchanged with the GIL, behind a lock without it. Tests set :data:`force_locks` to take the
locked path on a build with the GIL.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

#: Take the locked paths even with the GIL (tests).
force_locks = False


class ForkSafeLock:
    """A lock that a forked child gets anew: another thread may have held it at the fork."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._renew)

    def _renew(self) -> None:
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


#: What :func:`serialized` makes its locks with (tests count acquisitions through it).
make_lock: Callable[[], Any] = ForkSafeLock


def gil_enabled() -> bool:
    """False only on a free-threaded build running without the GIL."""
    check = getattr(sys, "_is_gil_enabled", None)
    return True if check is None else bool(check())


def locks_needed() -> bool:
    """Whether counting functions must take a lock (read when tracer installs)."""
    return force_locks or not gil_enabled()


def serialized(function: F, lock: Any = None) -> F:
    """``function`` itself when the GIL keeps its counters exact, else ``function`` called under
    ``lock`` (a new one by default; pass one to serialize several functions together)."""
    if not locks_needed():
        return function
    held = make_lock() if lock is None else lock

    def locked(*args: Any, **kw: Any) -> Any:
        with held:
            return function(*args, **kw)

    locked.__wrapped__ = function  # type: ignore[attr-defined]
    return locked  # type: ignore[return-value]
