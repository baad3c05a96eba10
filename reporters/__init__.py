"""The built-in reporters under their short name: the very modules of :mod:`tracer.reporters`.

``import reporters`` in a ``trace.config.py`` keeps working; ``from tracer import reporters`` is
the name that works even in a project that has a ``reporters`` package of its own.

Each ``reporters/<name>.py`` puts the module ``tracer.reporters.<name>`` in its own place in
``sys.modules``, so ``import reporters.otlp`` and ``from reporters.http import HttpReporter`` give
tracer's module and class, not a copy. That is the one aliasing mechanism; the ``__getattr__``
below only imports such a file on first use, so ``import reporters`` followed by
``reporters.logstash.create(...)`` works and an unused reporter costs nothing.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from tracer.reporters import BUILTIN, Batch, Callback, DeliveryError, Reporter, create

__all__ = ["BUILTIN", "Batch", "Callback", "DeliveryError", "Reporter", "create"]

#: The submodules ``reporters.<name>`` reaches: one file each in this package.
SUBMODULES = ("base", "http", "logstash", "memory", "otlp", "stdout", "zipkin")


def __getattr__(name: str) -> ModuleType:
    if name in SUBMODULES:
        # The import runs reporters/<name>.py, which puts tracer's module in its place; the
        # import system then sets it as this package's attribute, so this runs once per name.
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'reporters' has no attribute {name!r}")
