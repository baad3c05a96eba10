"""The reporter contract.

A reporter is any object with ``send(data, callback)``. ``data`` is one batch, a plain dict::

    {"service": str, "host": str, "pid": int, "sent_at_us": int, "spans": [span_record, ...]}

(metrics batches carry ``"metrics"`` instead of ``"spans"``). The reporter calls ``callback(None)``
once the batch is delivered, or ``callback(error)`` when it is not. A batch counts as delivered only
then; an exception, an error or no callback within the pipeline's timeout means retry with backoff,
then spool. A second callback is ignored.

Reporters may also offer ``flush(timeout: float) -> bool`` and ``close() -> None``; the pipeline
calls them when present. The reporters import nothing of tracer's outside ``tracer.reporters``
but :mod:`tracer.encoding` (the JSON encoder, and ``clean_text``, which escapes a peer's text for
the log), a foundation module that imports nothing of tracer's: only plain dicts cross.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

Callback = Callable[[BaseException | None], None]
Batch = dict[str, Any]


@runtime_checkable
class Reporter(Protocol):
    """What the pipeline needs of a reporter: ``send(data, callback)``."""

    def send(self, data: Batch, callback: Callback) -> None:
        """Deliver one batch, then call ``callback(None)``, or ``callback(error)`` on failure."""


class DeliveryError(Exception):
    """A failed delivery, with what the pipeline needs to decide between retry and drop.

    ``retryable`` is False when sending the same batch again cannot succeed (a 400, say): the
    pipeline drops such a batch with a counted reason instead of retrying it. ``retry_after`` is the
    number of seconds the receiver asked us to wait (HTTP ``Retry-After``), if it said so.
    """

    def __init__(
        self, message: str, *, retryable: bool = True, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class ConnectionReporter:
    """What the network reporters share: one connection, a lock that survives ``os.fork()``,
    and ``flush``/``close``. A subclass writes ``_drop_connection()``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._closed = False

    def flush(self, timeout: float) -> bool:
        """Nothing is buffered here: ``send`` returns only once the batch left, so this is True."""
        return True

    def close(self) -> None:
        """Close the connection; later sends fail with a retryable ``DeliveryError``."""
        with self._locked():
            self._closed = True
            self._drop_connection()

    def _locked(self) -> threading.Lock:
        """This process's lock; in a forked child, also forget the parent's connection."""
        pid = os.getpid()
        if pid != self._pid:
            # The parent may have been inside send() on another thread at the fork, which leaves
            # the child's copy of the lock held forever. The connection is the parent's: writing
            # to it from here would interleave with the parent's traffic. Closing the child's
            # copy of the descriptor sends nothing while the parent keeps its own.
            self._lock = threading.Lock()
            self._pid = pid
            self._drop_connection()
        return self._lock

    def _drop_connection(self) -> None:
        raise NotImplementedError
