"""Installs tracer in a Python process that ``tracer run`` started, directly or not.

``tracer run`` puts this folder first on ``PYTHONPATH`` and sets ``TRACER_BOOTSTRAP=1`` (and
``TRACE_CONFIG_PATH`` when it found a config file), so every Python interpreter started from it,
a server's spawned workers included, imports this module at start-up, as Python imports any
``sitecustomize``, and installs tracer with the same configuration. A ``sitecustomize`` that
would have run without this one (later on the path) still runs, after it.
"""

from __future__ import annotations

import importlib
import os
import sys


def _bootstrap() -> None:
    if os.environ.get("TRACER_BOOTSTRAP") == "1":
        try:
            try:
                import tracer
            except ImportError:
                # tracer run from a source tree: the folder that holds the tracer package.
                sys.path.append(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
                import tracer

            tracer.install()
        except Exception as exc:
            # A configuration mistake is reported, and the program runs untraced.
            print(f"tracer: not installed in process {os.getpid()}: {exc}", file=sys.stderr)


def _chain() -> None:
    """Import the ``sitecustomize`` this one hides, if there is one."""
    here = os.path.dirname(os.path.abspath(__file__))
    saved = sys.path[:]
    this = sys.modules.pop(__name__, None)
    try:
        sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
        importlib.import_module("sitecustomize")
    except ImportError:
        pass
    finally:
        sys.path[:] = saved
        if this is not None:
            sys.modules[__name__] = this


_bootstrap()
_chain()
