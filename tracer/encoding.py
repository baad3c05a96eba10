"""How tracer writes what others read: the one JSON encoder and log-safe text.

:func:`encode_json` is the encoder of everything tracer writes as JSON (held and spooled batches,
reporters' output). It gives compact UTF-8 JSON that is always valid and never raises:

* NaN and infinities (which JSON lacks) become ``null``;
* an object JSON cannot represent becomes its ``str()`` (its ``repr()``, or a placeholder, when
  that raises too);
* a non-string key becomes the string ``json.dumps`` would make of it (``str()`` for others);
* a cycle becomes ``"<cycle>"``, nesting deeper than :data:`MAX_DEPTH` a string;
* a lone surrogate (text decoded with ``surrogateescape``) becomes ``?``.

Text inside strings is never touched: values are replaced in a copy of the data, never by
rewriting the encoded text, so a record holding NaN keeps its ``"BaNaNa"``.

The usual record costs one ``json.dumps`` call; the sanitising copy is made only when that fails.

:func:`clean_text` makes a peer's or a record's text safe in a log line (no CR, LF or other
control character, no lone surrogate, a bounded length).

Nothing here imports tracer's other modules: the reporters, which may use only this module of
tracer's outside their own package, see plain data.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

__all__ = ["MAX_DEPTH", "clean_text", "encode_json"]

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


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def clean_text(value: str, limit: int) -> str:
    """``value`` cut to ``limit`` characters, control characters escaped (no CR/LF/NUL) and lone
    surrogates replaced, so it is safe in a log line and encodes as UTF-8."""
    if len(value) > limit:
        value = value[:limit]
    if value.isascii() and value.isprintable():
        # The usual case, settled in C: printable ASCII has no control character to escape.
        return value
    if _CONTROL.search(value):
        value = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", value)
    if not value.isascii() and _SURROGATE.search(value):
        value = _SURROGATE.sub("\ufffd", value)
    return value
