"""The base class of every instrumentation, and the registry that finds them.

``install()`` and ``uninstall()`` are idempotent; a subclass writes only ``_install(module)`` and,
when it does more than :meth:`wrap`, ``_uninstall()``. A library that is not imported yet is
patched when it is imported (a wrapt post-import hook); one that is never imported costs nothing.

Adding an instrumentation is adding one file. :func:`discover` finds, by name:

* every module of the ``tracer.instrumentation`` package (found with :mod:`pkgutil`), and in it
  each :class:`Instrumentation` subclass the module defines itself;
* the entry points of the group ``tracer.instrumentation`` (:data:`ENTRY_POINT_GROUP`), for
  instrumentations that other packages ship, the way OpenTelemetry finds its instrumentors::

      [project.entry-points."tracer.instrumentation"]
      flask = "tracer_flask:FlaskInstrumentation"

* classes given to :func:`register` (an application's own, a test's).

``install()`` applies all of them, or those the ``instrument`` option names (the ``name`` of each
class: ``"requests"``, ``"aiohttp.server"``, ...). When two have the same name, the first found
in that order is used.
"""

from __future__ import annotations

import importlib
import logging
import os
import pkgutil
import sys
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import wrapt

from tracer import patching, safety

if TYPE_CHECKING:
    from tracer.runtime import Runtime
    from tracer.span import Span

log = logging.getLogger("tracer")

#: Whether an instrumentation may take its private fast path (a library's internals, on the
#: versions it was verified with); read at each install. Off, or with ``TRACER_PUBLIC_HOOKS=1``
#: in the environment, every instrumentation uses the library's public hooks only, as it does on
#: versions outside the verified range: a troubleshooting switch.
fast_paths = True


def version_tuple(text: str) -> tuple[int, ...]:
    """``"3.8.2"`` -> ``(3, 8, 2)``; a part that is not a number (``"0rc1"``) ends it."""
    out: list[int] = []
    for part in text.split(".")[:3]:
        digits = ""
        for char in part:
            if not char.isdigit():
                break
            digits += char
        if not digits:
            break
        out.append(int(digits))
        if len(digits) != len(part):
            break
    return tuple(out)


def fast_path(name: str, version: str, lowest: tuple[int, ...], below: tuple[int, ...]) -> bool:
    """Whether ``name``'s private fast path may be used with the library at ``version``: the
    switch :data:`fast_paths` is on and ``lowest <= version < below``, the range it was verified
    with. Outside it the public hooks are used (logged at debug level)."""
    public = os.environ.get("TRACER_PUBLIC_HOOKS", "").strip().lower()
    if not fast_paths or public not in ("", "0", "false", "no", "off"):
        log.debug("tracer: %s uses public hooks (TRACER_PUBLIC_HOOKS)", name)
        return False
    if lowest <= version_tuple(version) < below:
        return True
    log.debug("tracer: %s %s is outside the verified range; it uses public hooks", name, version)
    return False


def call_failed(
    span: Span, exc: BaseException, network_errors: tuple[type[BaseException], ...], where: str
) -> None:
    """End the client span of a call that raised ``exc``: a network error (one of
    ``network_errors``: no answer came) or any other exception. Either way the span failed, so
    the collector keeps its trace; an error of tracer's own is counted under ``where``."""
    try:
        if isinstance(exc, network_errors):
            span.record_network_error(exc)
        else:
            span.record_exception(exc)
        span.finish()
    except Exception as inner:
        safety.internal_error(where, inner)


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


# -- the registry ---------------------------------------------------------------------------------

#: The entry-point group in which other packages name their instrumentation classes.
ENTRY_POINT_GROUP = "tracer.instrumentation"

_PACKAGE = __name__.rpartition(".")[0]
# Classes given to register(), by name.
_registered: dict[str, type[Instrumentation]] = {}


def register(cls: type[Instrumentation]) -> type[Instrumentation]:
    """Have ``install()`` apply ``cls`` too (usable as a class decorator); returns ``cls``.

    For an instrumentation that is neither a module of ``tracer.instrumentation`` nor an entry
    point. A second class of the same name replaces the first; :func:`unregister` removes it.
    """
    if not (isinstance(cls, type) and issubclass(cls, Instrumentation) and cls.name):
        raise TypeError(f"not an Instrumentation subclass with a name: {cls!r}")
    _registered[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    """Forget the class :func:`register` was given under ``name`` (nothing if there is none)."""
    _registered.pop(name, None)


def discover() -> list[type[Instrumentation]]:
    """Every instrumentation class, one per name: this package's, then entry points, then those
    given to :func:`register` (see the module docstring).

    A third-party entry point that cannot be loaded, or is not an :class:`Instrumentation`
    subclass, is left out with a warning; it never stops ``install()``.
    """
    found: dict[str, type[Instrumentation]] = {}
    for cls in [*_package_classes(), *_entry_point_classes(), *_registered.values()]:
        if cls.name not in found:
            found[cls.name] = cls
        elif found[cls.name] is not cls:
            log.warning(
                "tracer: two instrumentations are named %r (%s.%s and %s.%s); the first is used",
                cls.name,
                found[cls.name].__module__,
                found[cls.name].__qualname__,
                cls.__module__,
                cls.__qualname__,
            )
    return list(found.values())


def _package_classes() -> list[type[Instrumentation]]:
    """The instrumentations defined in the modules of this package, in module-name order."""
    package = sys.modules[_PACKAGE]
    out: list[type[Instrumentation]] = []
    for info in pkgutil.iter_modules(package.__path__, f"{_PACKAGE}."):
        if info.name == __name__:
            continue
        # tracer's own modules import none of the libraries they patch at module level.
        module = importlib.import_module(info.name)
        out.extend(defined_in(module))
    return out


def defined_in(module: types.ModuleType) -> list[type[Instrumentation]]:
    """The :class:`Instrumentation` subclasses with a name that ``module`` itself defines
    (imported ones are another module's), in the order they were defined."""
    return [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type)
        and issubclass(obj, Instrumentation)
        and obj.__module__ == module.__name__
        and obj.name
    ]


def _entry_point_classes() -> list[type[Instrumentation]]:
    from importlib.metadata import entry_points

    out: list[type[Instrumentation]] = []
    try:
        points = list(entry_points(group=ENTRY_POINT_GROUP))
    except Exception as exc:
        log.warning("tracer: could not read the %r entry points: %r", ENTRY_POINT_GROUP, exc)
        return out
    for point in points:
        try:
            obj = point.load()
        except Exception as exc:
            log.warning(
                "tracer: instrumentation entry point %r failed to load: %r", point.value, exc
            )
            continue
        if isinstance(obj, type) and issubclass(obj, Instrumentation) and obj.name:
            out.append(obj)
        else:
            log.warning(
                "tracer: instrumentation entry point %r is not an Instrumentation subclass with "
                "a name",
                point.value,
            )
    return out
