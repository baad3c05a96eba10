"""The one JSON encoder for everything tracer writes: held and spooled batches, reporters' output.

:func:`encode_json` gives compact UTF-8 JSON that is always valid and never raises:

* NaN and infinities (which JSON lacks) become ``null``;
* an object JSON cannot represent becomes its ``str()`` (its ``repr()``, or a placeholder, when
  that raises too);
* a non-string key becomes the string ``json.dumps`` would make of it (``str()`` for others);
* a cycle becomes ``"<cycle>"``, nesting deeper than :data:`MAX_DEPTH` a string;
* a lone surrogate (text decoded with ``surrogateescape``) becomes ``?``.

Text inside strings is never touched: values are replaced in a copy of the data, never by
rewriting the encoded text, so a record holding NaN keeps its ``"BaNaNa"``.

The usual record costs one ``json.dumps`` call; the sanitising copy is made only when that fails.
Nothing here imports tracer's other modules (reporters only see plain data).
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["MAX_DEPTH", "encode_json"]

#: Containers nested deeper than this are written as their ``str()``.
MAX_DEPTH = 64

_dumps = json.dumps


def encode_json(value: Any, *, ascii: bool = False) -> bytes:
    """``value`` as compact UTF-8 JSON that is always valid; never raises (see the module).

    ``ascii=True`` escapes every non-ASCII character (``\\u00e9``), for streams whose encoding
    may not be UTF-8, such as a terminal or a log file.
    """
    try:
        text = _dumps(
            value, separators=(",", ":"), ensure_ascii=ascii, allow_nan=False, default=str
        )
    except Exception:
        # allow_nan=False, a circular reference, a non-string key, a failing __str__, nesting
        # too deep for the C encoder (RecursionError): rebuild a plain copy json.dumps takes.
        try:
            text = _dumps(
                _sanitise(value, 0, set()),
                separators=(",", ":"),
                ensure_ascii=ascii,
                allow_nan=False,
            )
        except Exception as exc:
            # Not expected (the copy holds only JSON types), but this must not raise.
            text = _dumps(f"<unencodable: {_safe_str(exc)}>")
    return text.encode("utf-8", errors="replace")


def _sanitise(value: Any, depth: int, active: set[int]) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        # Past Python's limit on int-to-text conversion (4,300 digits) json.dumps would raise.
        return value if value.bit_length() <= 10_000 else _safe_str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if depth >= MAX_DEPTH:
        return _safe_str(value)
    if isinstance(value, (dict, list, tuple)):
        if id(value) in active:
            return "<cycle>"
        active.add(id(value))
        try:
            if isinstance(value, dict):
                return {_key(k): _sanitise(v, depth + 1, active) for k, v in list(value.items())}
            return [_sanitise(v, depth + 1, active) for v in list(value)]
        finally:
            active.discard(id(value))
    return _safe_str(value)


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, float) and not math.isfinite(key):
        return "null"
    if key is None or isinstance(key, (bool, int, float)):
        # The same spelling json.dumps would use for these keys.
        return _dumps(key)
    return _safe_str(key)


def _safe_str(value: Any) -> str:
    try:
        return str(value)
    except Exception:
        try:
            return repr(value)
        except Exception:
            return f"<unprintable {type(value).__name__}>"
