"""A metrics batch as the stdout reporter prints it in its ``pretty`` format."""

from __future__ import annotations

from typing import Any

from tracer.reporters.encoding import encode_json


def render(data: dict[str, Any]) -> str:
    """Readable lines for one metrics batch (``{"service", ..., "metrics": {...}}``)."""
    return "metrics " + encode_json(data.get("metrics")).decode()
