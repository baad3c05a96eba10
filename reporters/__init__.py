"""The built-in reporters under their short name: the very modules of :mod:`tracer.reporters`.

``import reporters`` in a ``trace.config.py`` keeps working; ``from tracer import reporters`` is
the name that works even in a project that has a ``reporters`` package of its own.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

import tracer.reporters as _reporters
from tracer.reporters import BUILTIN, Batch, Callback, DeliveryError, Reporter, create

__all__ = ["BUILTIN", "Batch", "Callback", "DeliveryError", "Reporter", "create"]

# The submodules that ``reporters.<name>`` reaches, as aliases of tracer's own (one module
# object under two names, so a class is the same class whichever name imported it).
SUBMODULES = ("base", "http", "logstash", "memory", "otlp", "stdout", "zipkin")


def alias(name: str) -> ModuleType:
    """``reporters.<name>`` as the module ``tracer.reporters.<name>`` itself."""
    module = importlib.import_module(f"{_reporters.__name__}.{name}")
    sys.modules[f"{__name__}.{name}"] = module
    return module


def __getattr__(name: str) -> ModuleType:
    # `reporters.logstash.create(...)` in a config file works after a bare `import reporters`.
    if name in SUBMODULES:
        module = alias(name)
        globals()[name] = module
        return module
    raise AttributeError(f"module 'reporters' has no attribute {name!r}")
