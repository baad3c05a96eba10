"""Pieces of the delivery tests: a callback that records outcomes, spans and batches to send.

The listeners they send to are in :mod:`tests.support.receivers`."""

from __future__ import annotations

from typing import Any

from reporters.base import DeliveryError

# The listeners, certificates and child helpers that tests import from here.
from tests.support.children import wait_child as wait_child
from tests.support.receivers import HttpSink as HttpSink
from tests.support.receivers import LineServer as LineServer
from tests.support.receivers import Received as Received
from tests.support.servers import strict_loads as strict_loads
from tests.support.tls import Certs as Certs
from tests.support.tls import make_certs as make_certs


class Outcomes:
    """A reporter callback that records every call."""

    def __init__(self) -> None:
        self.calls: list[BaseException | None] = []

    def __call__(self, error: BaseException | None) -> None:
        self.calls.append(error)

    @property
    def only(self) -> BaseException | None:
        assert len(self.calls) == 1, f"callback called {len(self.calls)} times: {self.calls}"
        return self.calls[0]

    def error(self) -> DeliveryError:
        error = self.only
        assert isinstance(error, DeliveryError), f"expected a DeliveryError, got {error!r}"
        return error


# A span record and a batch as the pipeline hands them to a reporter, for the reporter tests.
START_US = 1_714_564_800_123_456  # 2024-05-01T12:00:00.123456Z


def span(**fields: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "trace_id": "a" * 32,
        "span_id": "b" * 16,
        "parent_id": None,
        "kind": "server",
        "name": "GET /",
        "start_us": START_US,
        "duration_us": 1500,
    }
    record.update(fields)
    return record


def batch(*spans: dict[str, Any]) -> dict[str, Any]:
    return {
        "service": "checkout",
        "host": "web-1",
        "pid": 4242,
        "sent_at_us": START_US + 5_000_000,
        "spans": list(spans),
    }


def send(reporter: Any, data: dict[str, Any]) -> Outcomes:
    outcomes = Outcomes()
    reporter.send(data, outcomes)
    return outcomes
