"""Metrics batches to reporters, every ``metrics_interval`` seconds, through the pipeline."""

from __future__ import annotations

from typing import Any


def start(runtime: Any, registry: Any) -> None:
    """Start sending a metrics batch every ``runtime.config.metrics_interval`` seconds."""


def stop() -> None:
    """Stop what :func:`start` started."""


def after_fork_in_child() -> None:
    """A forked child starts its own schedule, with nothing of the parent's counted."""
