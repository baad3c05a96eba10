"""Guard the tracer, never the application.

Our own bookkeeping runs inside ``try`` blocks that hand any exception to :func:`internal_error`:
it is counted, logged once per place, and swallowed, so instrumentation can never break the host
application. The application's own call is always made outside these blocks and its exceptions
propagate unchanged. Tests set :data:`STRICT` so that a swallowed internal error fails them.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter

log = logging.getLogger("tracer")

STRICT = os.environ.get("TRACER_STRICT", "") not in ("", "0", "false")

_lock = threading.Lock()
_counts: Counter[str] = Counter()
_seen: list[BaseException] = []


def internal_error(where: str, exc: BaseException) -> None:
    """Count and (the first time for ``where``) log an error raised inside tracer."""
    with _lock:
        first = where not in _counts
        _counts[where] += 1
        if STRICT:
            _seen.append(exc)
    if first:
        log.warning("tracer: internal error in %s (logged once): %r", where, exc, exc_info=exc)


def take_strict_errors() -> list[BaseException]:
    """The errors swallowed since the last call (recorded only in strict mode)."""
    with _lock:
        errors = list(_seen)
        _seen.clear()
        return errors
