"""Waiting for an event: poll a condition until it holds.

The timeout is a deadline for a failure, not a guess at how long the event takes: a loaded
machine may take many times longer than an idle one, so the defaults are generous and a test
that passes returns as soon as the event happened.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

#: How long a wait may last before the test fails.
DEADLINE = 60.0


def wait_until(check: Callable[[], T], timeout: float = DEADLINE, step: float = 0.05) -> T:
    """Call ``check`` until it returns something true, at most ``timeout`` seconds; its last
    value (false when the deadline passed)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(step)


def eventually(
    check: Callable[[], T], timeout: float = DEADLINE, step: float = 0.05, what: str = ""
) -> T:
    """:func:`wait_until`, failing the test when ``check`` never became true."""
    value = wait_until(check, timeout, step)
    assert value, f"timed out after {timeout} s waiting for {what or check!r}"
    return value
