"""Patch targets as data: wrap and unwrap attributes, keeping the originals in one registry.

Our wrappers are instances of :class:`TracerWrapper`, so patching twice is impossible and
``unwrap_all()`` puts back the very same object that was there (tests assert ``is``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import wrapt

Wrapper = Callable[[Callable[..., Any], Any, tuple[Any, ...], dict[str, Any]], Any]


class TracerWrapper(wrapt.FunctionWrapper):  # type: ignore[type-arg]
    """Marks a wrapper as ours."""


_lock = threading.Lock()
# (owner, attribute) -> the raw attribute that was there before we patched it.
_originals: dict[tuple[Any, str], Any] = {}


def wrap(owner: Any, attribute: str, wrapper: Wrapper) -> None:
    """Replace ``owner.attribute`` by a wrapper that calls ``wrapper(wrapped, instance, a, kw)``."""
    with _lock:
        key = (owner, attribute)
        if key in _originals:
            return
        # The raw class attribute (not the bound/descriptor result) is what must be restored.
        raw = owner.__dict__[attribute] if isinstance(owner, type) else getattr(owner, attribute)
        if isinstance(raw, TracerWrapper):
            return
        setattr(owner, attribute, TracerWrapper(raw, wrapper))
        _originals[key] = raw


def unwrap(owner: Any, attribute: str) -> None:
    """Put back what was at ``owner.attribute`` before :func:`wrap`."""
    with _lock:
        raw = _originals.pop((owner, attribute), None)
        if raw is not None:
            setattr(owner, attribute, raw)


def unwrap_all() -> None:
    """Restore every attribute we patched."""
    with _lock:
        items = list(_originals.items())
        _originals.clear()
    for (owner, attribute), raw in reversed(items):
        setattr(owner, attribute, raw)


def patched() -> list[tuple[Any, str]]:
    """The (owner, attribute) pairs currently patched."""
    with _lock:
        return list(_originals)
