"""The base class of every instrumentation.

``install()`` and ``uninstall()`` are idempotent; a subclass writes only ``_install(module)`` and,
when it does more than :meth:`wrap`, ``_uninstall()``. A library that is not imported yet is
patched when it is imported (a wrapt post-import hook); one that is never imported costs nothing.
"""

from __future__ import annotations

import logging
import sys
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import wrapt

from tracer import patching, safety

if TYPE_CHECKING:
    from tracer.runtime import Runtime

log = logging.getLogger("tracer")


class Instrumentation:
    """Patches one library. Subclasses set ``name`` and ``module`` and write ``_install``."""

    name: str = ""
    module: str = ""

    def __init__(self) -> None:
        self.runtime: Runtime | None = None
        self.installed = False
        self._wanted = False
        self._hooked = False
        self._targets: list[tuple[Any, str]] = []

    def install(self, runtime: Runtime) -> None:
        """Patch the library now if it is imported, else as soon as it is."""
        self.runtime = runtime
        self._wanted = True
        module = sys.modules.get(self.module)
        if module is not None:
            self._apply(module)
        elif not self._hooked:
            # Hooks cannot be removed from wrapt's registry, so one is registered per process
            # and it checks `_wanted` to know whether tracer is still installed.
            wrapt.register_post_import_hook(self._on_import, self.module)
            self._hooked = True

    def uninstall(self) -> None:
        """Put back every original object."""
        self._wanted = False
        if not self.installed:
            return
        try:
            self._uninstall()
        except Exception as exc:
            safety.internal_error(f"{self.name}.uninstall", exc)
        for owner, attribute in self._targets:
            patching.unwrap(owner, attribute)
        self._targets.clear()
        self.installed = False

    def wrap(self, owner: Any, attribute: str, wrapper: patching.Wrapper) -> None:
        """Patch ``owner.attribute``; undone by :meth:`uninstall`."""
        patching.wrap(owner, attribute, wrapper)
        self._targets.append((owner, attribute))

    def replace(
        self,
        owner: type,
        attribute: str,
        make: Callable[[Callable[..., Any]], types.FunctionType],
    ) -> None:
        """Replace the function ``owner.attribute`` by ``make(original)``; undone by
        :meth:`uninstall`."""
        patching.replace(owner, attribute, make)
        self._targets.append((owner, attribute))

    def _on_import(self, module: types.ModuleType) -> None:
        if self._wanted and not self.installed:
            self._apply(module)

    def _apply(self, module: types.ModuleType) -> None:
        if self.installed:
            return
        try:
            self._install(module)
            self.installed = True
            log.debug("tracer: instrumented %s", self.name)
        except Exception as exc:
            # A library version we cannot patch must not stop the application.
            for owner, attribute in self._targets:
                patching.unwrap(owner, attribute)
            self._targets.clear()
            safety.internal_error(f"{self.name}.install", exc)

    def _install(self, module: types.ModuleType) -> None:
        raise NotImplementedError

    def _uninstall(self) -> None:
        """Undo what ``_install`` did beyond :meth:`wrap` (nothing by default)."""
