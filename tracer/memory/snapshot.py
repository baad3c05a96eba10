"""Heap snapshots: on a signal, on a leak, on demand."""

from __future__ import annotations

from typing import Any


def install(config: Any) -> None:
    """Install the snapshot signal handler (``heap_snapshot_signal``), from the main thread."""


def uninstall() -> None:
    """Put back the signal handler that was there before :func:`install`."""


def after_fork_in_child() -> None:
    """A forked child has its own snapshot state."""


def on_leak(leak: dict[str, Any]) -> str | None:
    """A ``leak`` event: write a snapshot when ``heap_snapshot_on_leak`` and the rate limit allow;
    the file's path, or None."""
    return None


def snapshot(path: str | None = None) -> str:
    """Write a heap snapshot file and return its path."""
    raise NotImplementedError
