"""Keep secrets and hostile bytes out of span records: URLs, paths, headers; size caps.

What is redacted:

- header values of ``Authorization``, ``Cookie``, ``Set-Cookie``, ``Proxy-Authorization``,
  ``X-Api-Key`` and any name in the ``redact_headers`` option become ``[REDACTED]``;
- credentials in a URL become ``REDACTED:REDACTED@``;
- values of the query keys ``sig``, ``signature``, ``token``, ``access_token``, ``password``,
  ``AWSAccessKeyId``, ``X-Goog-Signature`` and any key in ``redact_query_keys`` become
  ``REDACTED`` (keys compare case-insensitively, also when percent-encoded).

What is bounded: a path to 2 KB, a URL to 4 KB, each annotation or tag string to 1 KB, all
annotations of a span together to about 32 KB and its tags to about 8 KB, an error message to
2 KB and its stack to 8 KB, so one record stays under 64 KB of JSON. Records are always valid
JSON: control characters in recorded text are escaped, NaN and infinities become strings, lone
surrogates become U+FFFD, and anything that is not a JSON type becomes its bounded ``repr``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

# clean_text lives with the encoder, which the reporters may import; it stays importable here.
from tracer.encoding import clean_text as clean_text

MAX_PATH = 2048
MAX_URL = 4096
MAX_VALUE = 1024
MAX_ANNOTATIONS = 32 * 1024
MAX_TAGS = 8 * 1024
MAX_MESSAGE = 2048
MAX_STACK = 8192
MAX_ITEMS = 100
MAX_DEPTH = 8
MAX_HEADERS = 64
MAX_HEADER_VALUE = 512
REDACTED = "[REDACTED]"

SENSITIVE_HEADERS = frozenset(
    ("authorization", "cookie", "set-cookie", "proxy-authorization", "x-api-key")
)
SENSITIVE_QUERY_KEYS = frozenset(
    k.lower()
    for k in (
        "sig",
        "signature",
        "token",
        "access_token",
        "password",
        "AWSAccessKeyId",
        "X-Goog-Signature",
    )
)
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_HOST = re.compile(r"[A-Za-z0-9.\-:\[\]_]{1,255}")
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~\-]{1,64}")
_METHOD = re.compile(r"[A-Za-z]{1,20}")
METHODS = frozenset(
    ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
)


def clean_host(value: str | None) -> str | None:
    """An inbound Host header if it looks like one, else None."""
    if value is None or len(value) > 300:
        return None
    value = value.strip(" \t")
    return value if _HOST.fullmatch(value) else None


def clean_method(value: str) -> str:
    """An HTTP method fit to record: a known one, another short alphabetic token, or ``_OTHER``."""
    if value in METHODS:
        return value
    return value if len(value) <= 20 and _METHOD.fullmatch(value) else "_OTHER"


def query_keys(extra: Iterable[str] = ()) -> frozenset[str]:
    """The sensitive query keys plus ``extra``, lowercased."""
    return SENSITIVE_QUERY_KEYS | frozenset(k.lower() for k in extra)


def header_names(extra: Iterable[str] = ()) -> frozenset[str]:
    """The sensitive header names plus ``extra``, lowercased."""
    return SENSITIVE_HEADERS | frozenset(h.lower() for h in extra)


def redact_query(query: str, keys: frozenset[str] = SENSITIVE_QUERY_KEYS) -> str:
    """Replace the values of sensitive query keys by ``REDACTED``."""
    if not query:
        return query
    parts = query.split("&")
    for i, part in enumerate(parts):
        name, eq, _ = part.partition("=")
        if not eq:
            continue
        key = name.lower()
        if "%" in key or "+" in key:
            key = unquote(key.replace("+", " "))
        if key in keys:
            parts[i] = f"{name}=REDACTED"
    return "&".join(parts)


def redact_url(url: str, keys: frozenset[str] = SENSITIVE_QUERY_KEYS) -> str:
    """``url`` with credentials replaced by ``REDACTED:REDACTED@`` and secret query values cut.

    The fragment is dropped: it is never sent to a server and may hold client-side secrets.
    """
    url = clean_text(url, MAX_URL)
    if "@" not in url and "?" not in url and "#" not in url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return "[UNPARSABLE URL]"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "REDACTED:REDACTED@" + netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, redact_query(parts.query, keys), ""))


def split_path(target: str) -> tuple[str, str]:
    """A request target -> (clean path, raw query)."""
    path, _, query = target.partition("?")
    return clean_text(path, MAX_PATH), query


def redact_headers(
    items: Iterable[tuple[str, str]], names: frozenset[str] = SENSITIVE_HEADERS
) -> dict[str, str]:
    """Headers fit to record: names lowercased, sensitive values ``[REDACTED]``, all bounded.

    At most 64 headers are kept; a name that is not an HTTP token is skipped; each value is cut
    to 512 characters with control characters escaped; repeated names are joined with ``, ``.
    """
    out: dict[str, str] = {}
    for count, (raw_name, raw_value) in enumerate(items):
        if count >= MAX_HEADERS * 2 or len(out) >= MAX_HEADERS:
            break
        if not isinstance(raw_name, str) or len(raw_name) > 64:
            continue
        if _HEADER_NAME.fullmatch(raw_name) is None:
            continue
        name = raw_name.lower()
        if name in names:
            value = REDACTED
        else:
            text = raw_value if isinstance(raw_value, str) else str(raw_value)
            value = clean_text(text[: MAX_HEADER_VALUE + 64].strip(" \t"), MAX_HEADER_VALUE)
        if name in out and value != REDACTED:
            value = clean_text(f"{out[name]}, {value}", MAX_HEADER_VALUE)
        out[name] = value
    return out


# -- JSON-safe, bounded values ------------------------------------------------------------------


def safe_text(value: str, limit: int = MAX_VALUE) -> str:
    """``value`` cut to ``limit`` with lone surrogates replaced; control characters are kept,
    since JSON escapes them."""
    if len(value) > limit:
        value = value[:limit]
    if not value.isascii() and _SURROGATE.search(value):
        value = _SURROGATE.sub("\ufffd", value)
    return value


def bounded(value: Any, budget: int) -> Any:
    """A JSON-safe copy of ``value`` costing at most about ``budget`` characters of JSON.

    Strings are cut to 1 KB, containers to 100 items and 8 levels; NaN and infinities become
    strings; other objects become their bounded ``repr``. Once the budget is spent, what is left
    is replaced by ``"[TRUNCATED]"``.
    """
    left = [budget]
    return _bounded(value, left, 0)


def _bounded(value: Any, left: list[int], depth: int) -> Any:
    if left[0] <= 0:
        return "[TRUNCATED]"
    if value is None or isinstance(value, bool):
        left[0] -= 5
        return value
    if isinstance(value, int):
        if value.bit_length() > 64:
            value = str(value)[:40]
        left[0] -= 20
        return value
    if isinstance(value, float):
        left[0] -= 24
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        text = safe_text(value, min(MAX_VALUE, max(left[0], 16)))
        left[0] -= len(text) + 2
        return text
    if depth >= MAX_DEPTH:
        left[0] -= 12
        return "[TOO DEEP]"
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for i, (k, v) in enumerate(value.items()):
            if i >= MAX_ITEMS or left[0] <= 0:
                out["[TRUNCATED]"] = len(value) - i
                break
            key = safe_text(k if isinstance(k, str) else _repr(k), 128)
            left[0] -= len(key) + 4
            out[key] = _bounded(v, left, depth + 1)
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        items: list[Any] = []
        for i, v in enumerate(value):
            if i >= MAX_ITEMS or left[0] <= 0:
                items.append("[TRUNCATED]")
                break
            items.append(_bounded(v, left, depth + 1))
        return items
    if isinstance(value, (bytes, bytearray)):
        return _bounded(bytes(value[:MAX_VALUE]).decode("utf-8", "replace"), left, depth)
    return _bounded(_repr(value), left, depth)


def _repr(value: Any) -> str:
    try:
        return repr(value)[:MAX_VALUE]
    except Exception:
        return f"<unrepresentable {type(value).__name__}>"


def bounded_error(error: dict[str, Any]) -> dict[str, Any]:
    """An error dict with its type, message and stack bounded and JSON-safe."""
    out: dict[str, Any] = {}
    for key, value in error.items():
        if key == "stack" and isinstance(value, str):
            out[key] = safe_text(value[-MAX_STACK:], MAX_STACK)
        elif key == "message" and isinstance(value, str):
            # One line, control characters escaped: a message can quote inbound bytes (a
            # parser's error names the header it refused).
            out[key] = clean_text(safe_text(value, MAX_MESSAGE), MAX_MESSAGE)
        else:
            out[str(key)[:64]] = _bounded(value, [MAX_MESSAGE], 0)
    return out
