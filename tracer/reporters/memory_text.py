"""A memory batch (``stats`` and ``leak`` events) as the stdout reporter prints it in its
``pretty`` format."""

from __future__ import annotations

from typing import Any

from tracer.reporters.encoding import encode_json


def render(data: dict[str, Any]) -> str:
    """Readable lines for one memory batch (``{"service", ..., "memory": {...}}``)."""
    return "memory " + encode_json(data.get("memory")).decode()
