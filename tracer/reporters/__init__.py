"""Built-in reporters and ``create(type, **options)``.

``from tracer import reporters`` is the name that always works; the top-level ``reporters``
package is the same modules under a shorter name, for config files (``import reporters``).

Each built-in module offers ``create(**options)``; ``reporters.create("logstash", host=...)`` is the
same as ``reporters.logstash.create(host=...)``. Any object with ``send(data, callback)`` is a
reporter too (see :mod:`tracer.reporters.base`). Nothing here imports tracer's other modules
but :mod:`tracer.encoding` (the JSON encoder, and a peer's text made safe for the log), which
imports none: only plain dicts cross.
"""

from __future__ import annotations

import importlib
from typing import Any

from tracer.reporters.base import Batch, Callback, DeliveryError, Reporter

# Type name -> module name; modules are imported on first use so an unused reporter costs nothing.
BUILTIN: dict[str, str] = {
    "stdout": "tracer.reporters.stdout",
    "memory": "tracer.reporters.memory",
    "logstash": "tracer.reporters.logstash",
    "http": "tracer.reporters.http",
    "otlp": "tracer.reporters.otlp",
    "zipkin": "tracer.reporters.zipkin",
}

__all__ = ["BUILTIN", "Batch", "Callback", "DeliveryError", "Reporter", "create"]


def create(type: str, /, **options: Any) -> Any:
    """Create a built-in reporter by type name (``stdout``, ``memory``, ``logstash``, ``http``,
    ``otlp``, ``zipkin``).

    ``type`` is positional-only, so that options may carry their own ``type``:
    ``create("logstash", type="beats", host=...)``.
    """
    try:
        module_name = BUILTIN[type]
    except KeyError:
        known = ", ".join(sorted(BUILTIN))
        raise ValueError(f"unknown reporter type {type!r} (known: {known})") from None
    module = importlib.import_module(module_name)
    return module.create(**options)


def __getattr__(name: str) -> Any:
    # `reporters.logstash.create(...)` in a config file works after a bare `import reporters`.
    if name in BUILTIN:
        return importlib.import_module(BUILTIN[name])
    raise AttributeError(f"module 'reporters' has no attribute {name!r}")
