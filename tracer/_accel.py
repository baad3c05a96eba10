"""The compiled accelerator (``tracer._speedups``), when it was built and is wanted.

``pip install`` builds it from ``tracer/_speedups.c`` when a C compiler and Python's headers are
there, and installs tracer without it otherwise. Every function it has has a pure-Python twin,
which is what runs without it, on a free-threaded Python (the extension is not declared safe
without the GIL), or with ``TRACE_PURE_PYTHON=1``. Read at import: the choice holds for the
process.
"""

from __future__ import annotations

import importlib
import os
import sysconfig
from types import ModuleType


def _wanted() -> bool:
    value = os.environ.get("TRACE_PURE_PYTHON", "").strip().lower()
    if value not in ("", "0", "false", "no", "off"):
        return False
    return not sysconfig.get_config_var("Py_GIL_DISABLED")


def _load() -> ModuleType | None:
    if not _wanted():
        return None
    try:
        return importlib.import_module("tracer._speedups")
    except ImportError:
        return None


#: The accelerator module, or None: tracer then runs on its pure-Python code alone.
speedups: ModuleType | None = _load()


def build() -> str:
    """Which build this process runs: ``"compiled"`` or ``"pure"``."""
    return "compiled" if speedups is not None else "pure"
