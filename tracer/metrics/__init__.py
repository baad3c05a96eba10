"""Request, runtime and tracer-health metrics, exposed for Prometheus and sent to reporters."""

from __future__ import annotations

from typing import Any


def install(runtime: Any) -> None:
    """Start metrics for the installed ``runtime`` (called by ``tracer.install()``)."""


def uninstall() -> None:
    """Stop what :func:`install` started (called by ``tracer.uninstall()``)."""


def after_fork_in_child() -> None:
    """Give a forked child its own metrics state."""
