"""Memory-leak hunting in production: memwatch-style events, heap diffs and snapshots."""

from __future__ import annotations

from typing import Any


def install(runtime: Any) -> None:
    """Start the memory watcher for the installed ``runtime`` (called by ``tracer.install()``)."""


def uninstall() -> None:
    """Stop what :func:`install` started (called by ``tracer.uninstall()``)."""


def after_fork_in_child() -> None:
    """Give a forked child its own watcher state."""
