"""The reporter contract.

A reporter is any object with ``send(data, callback)``. ``data`` is one batch, a plain dict::

    {"service": str, "host": str, "pid": int, "sent_at_us": int, "spans": [span_record, ...]}

(metrics batches carry ``"metrics"`` instead of ``"spans"``). The reporter calls ``callback(None)``
once the batch is delivered, or ``callback(error)`` when it is not. A batch counts as delivered only
then; an exception, an error or no callback within the pipeline's timeout means retry with backoff,
then spool. A second callback is ignored.

Reporters may also offer ``flush(timeout: float) -> bool`` and ``close() -> None``; the pipeline
calls them when present. This module never imports ``tracer``: only plain dicts cross.
"""

from __future__ import annotations

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
