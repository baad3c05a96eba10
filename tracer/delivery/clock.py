"""The time the sender and the pipeline read and wait by: real time, unless a test passes its own.

A :class:`Clock` is all they know of time, so a test can hand the pipeline a clock of its own
whose ``wait`` moves a simulated time on instead of sleeping, and watch a backoff schedule of
minutes play out in milliseconds. The reporter's own calls (``send_timeout``), the worker and
the spool's file locks keep to real time whatever the clock is.
"""

from __future__ import annotations

import threading
import time


class Clock:
    """Real time: :func:`time.monotonic` and :meth:`threading.Event.wait`."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""
        return time.monotonic()

    def wait(self, event: threading.Event, seconds: float) -> bool:
        """Wait until ``event`` is set or ``seconds`` passed; True when it was set."""
        return event.wait(seconds)


REAL = Clock()
