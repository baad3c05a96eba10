"""Patch targets as data: wrap and unwrap attributes, keeping the originals in one registry.

Every wrapper we install is recognisable by :func:`is_ours`, so patching twice is impossible, and
``unwrap()`` puts back the very same object that was there (tests assert ``is``).

A plain function defined on a class (the common case: ``Session.send``, aiohttp's request
handling, http.server's handler methods) is replaced by a plain function that calls our wrapper:
one more Python call, where a ``wrapt.FunctionWrapper`` also binds a proxy object on every
attribute access, which adds up on a path taken several times per request. Anything else
(builtins, descriptors, module-level callables) gets a ``wrapt.FunctionWrapper`` subclass, which
handles every kind of callable correctly. wrapt also provides the post-import hooks (see
``instrumentation.base``).
"""

from __future__ import annotations

import functools
import threading
import types
from collections.abc import Callable
from typing import Any

import wrapt

Wrapper = Callable[[Callable[..., Any], Any, tuple[Any, ...], dict[str, Any]], Any]

_MARK = "__tracer_original__"


class TracerWrapper(wrapt.FunctionWrapper):  # type: ignore[type-arg]
    """Marks a wrapt-based wrapper as ours."""


def is_ours(obj: Any) -> bool:
    """True for a wrapper that :func:`wrap` installed."""
    return isinstance(obj, TracerWrapper) or (
        isinstance(obj, types.FunctionType) and _MARK in obj.__dict__
    )


def _method_wrapper(raw: types.FunctionType, wrapper: Wrapper) -> types.FunctionType:
    def patched(self: Any, *args: Any, **kwargs: Any) -> Any:
        return wrapper(raw.__get__(self), self, args, kwargs)

    functools.update_wrapper(patched, raw)
    patched.__dict__[_MARK] = raw
    return patched  # type: ignore[return-value]


_lock = threading.Lock()
# (owner, attribute) -> the raw attribute that was there before we patched it.
_originals: dict[tuple[Any, str], Any] = {}


def _patch(owner: Any, attribute: str, build: Callable[[Any], Any]) -> None:
    """Put ``build(raw)`` at ``owner.attribute`` and remember ``raw``, once, never over ours.

    ``raw`` is the class attribute itself (not the bound or descriptor result): that is what
    :func:`unwrap` must put back. A missing attribute raises, so the instrumentation reports it.
    """
    with _lock:
        key = (owner, attribute)
        if key in _originals:
            return
        raw = owner.__dict__[attribute] if isinstance(owner, type) else getattr(owner, attribute)
        if is_ours(raw):
            return
        setattr(owner, attribute, build(raw))
        _originals[key] = raw


def wrap(owner: Any, attribute: str, wrapper: Wrapper) -> None:
    """Replace ``owner.attribute`` by a wrapper that calls ``wrapper(wrapped, instance, a, kw)``."""

    def build(raw: Any) -> Any:
        if isinstance(owner, type) and isinstance(raw, types.FunctionType):
            return _method_wrapper(raw, wrapper)
        return TracerWrapper(raw, wrapper)

    _patch(owner, attribute, build)


def replace(
    owner: type, attribute: str, make: Callable[[Callable[..., Any]], types.FunctionType]
) -> None:
    """Replace the method ``owner.attribute`` by ``make(original)``.

    For the few methods on a server's per-request path: the replacement calls ``original(self,
    ...)`` itself, with the library's own signature, so no generic ``(wrapped, instance, args,
    kwargs)`` layer runs per call. When the attribute is not a plain function (another tool
    wrapped it first, say with a wrapt proxy), ``original`` binds it afresh on each call through
    the descriptor protocol, which works for any callable attribute.
    """

    def build(raw: Any) -> types.FunctionType:
        original: Callable[..., Any]
        # type(), not isinstance(): a wrapt proxy passes isinstance() checks for what it wraps,
        # but called unbound it would hand its wrapper no instance.
        plain = type(raw) is types.FunctionType
        if plain:
            original = raw
        else:

            def original(self: Any, *args: Any, **kwargs: Any) -> Any:
                return raw.__get__(self, type(self))(*args, **kwargs)

        replacement = make(original)
        if plain:
            functools.update_wrapper(replacement, raw)
        replacement.__dict__[_MARK] = raw
        return replacement

    _patch(owner, attribute, build)


def unwrap(owner: Any, attribute: str) -> None:
    """Put back what was at ``owner.attribute`` before :func:`wrap`."""
    with _lock:
        raw = _originals.pop((owner, attribute), None)
        if raw is not None:
            setattr(owner, attribute, raw)
