"""Keep secrets and hostile bytes out of span records: URLs, paths, header values; size caps."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

MAX_PATH = 2048
MAX_URL = 4096
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
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HOST = re.compile(r"[A-Za-z0-9.\-:\[\]_]{1,255}")


def clean_text(value: str, limit: int) -> str:
    """``value`` cut to ``limit`` characters with control characters escaped (no CR/LF/NUL)."""
    if len(value) > limit:
        value = value[:limit]
    if _CONTROL.search(value):
        value = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", value)
    return value


def clean_host(value: str | None) -> str | None:
    """An inbound Host header if it looks like one, else None."""
    if value is None or len(value) > 255:
        return None
    value = value.strip()
    return value if _HOST.fullmatch(value) else None


def redact_query(query: str, keys: frozenset[str] = SENSITIVE_QUERY_KEYS) -> str:
    """Replace the values of sensitive query keys by ``REDACTED``."""
    if not query:
        return query
    parts = query.split("&")
    for i, part in enumerate(parts):
        name, eq, _ = part.partition("=")
        if eq and name.lower() in keys:
            parts[i] = f"{name}=REDACTED"
    return "&".join(parts)


def redact_url(url: str, keys: frozenset[str] = SENSITIVE_QUERY_KEYS) -> str:
    """``url`` with credentials replaced by ``REDACTED:REDACTED@`` and secret query values cut."""
    url = clean_text(url, MAX_URL)
    if "@" not in url and "?" not in url:
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
