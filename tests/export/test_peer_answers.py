"""What the HTTP, OTLP, Zipkin and Logstash-http reporters do with a receiver's odd answers.

A retryable status stays retryable whatever its headers say (an odd ``Retry-After`` is the normal
backoff, a long one waits at most ``max_backoff``); an answer that is not HTTP is retried; a 2xx
is delivered whatever its body does. Each span arrives exactly once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import tracer
from reporters import http as http_reporter
from reporters.base import DeliveryError
from tests.export.conftest import install
from tests.export.raw_receiver import (
    KINDS,
    Planned,
    RawReceiver,
    answer,
    delivered_once,
    make,
    make_spans,
)

# -- item: a retryable status stays retryable -------------------------------------------------

ODD_RETRY_AFTER = {
    # A digit to str.isdigit() and not to int().
    "superscript-two": "\u00b2",
    # Past int()'s limit on the digits it converts.
    "5000-digits": "9" * 5000,
    # An int() too large for a float.
    "400-digits": "9" * 400,
    # A date whose year datetime cannot hold.
    "year-99999": "Wed, 21 Oct 99999 07:28:00 GMT",
}


@pytest.mark.parametrize("value", list(ODD_RETRY_AFTER.values()), ids=list(ODD_RETRY_AFTER))
@pytest.mark.parametrize("kind", KINDS)
def test_an_odd_retry_after_falls_back_to_the_backoff(
    kind: str, value: str, peer: RawReceiver
) -> None:
    retry_after = f"Retry-After: {value}"
    peer.plan = [
        Planned(answer("429 Too Many Requests", retry_after)),
        Planned(answer("503 Service Unavailable", retry_after)),
    ]
    install(make(kind, peer.url), instrument=[], max_backoff=0.2)
    made = make_spans(5)
    assert tracer.flush(15)
    delivered_once(kind, peer, made)
    assert len(peer.requests) >= 3


@pytest.mark.parametrize("kind", KINDS)
def test_a_long_retry_after_waits_at_most_max_backoff(kind: str, peer: RawReceiver) -> None:
    # Ten digits: a number a server may send, centuries long; the pause is max_backoff.
    peer.plan = [Planned(answer("503 Service Unavailable", "Retry-After: 9999999999"))]
    install(make(kind, peer.url), instrument=[], max_backoff=0.2)
    made = make_spans(3)
    assert tracer.flush(15)
    delivered_once(kind, peer, made)


@pytest.mark.parametrize(
    "value",
    ["\u00b2", "9" * 5000, "9" * 400, "99999999999", "\u0663", "+5", "1e3", "0x10", "1_0",
     "Wed, 21 Oct 99999 07:28:00 GMT", "Wed, 99 Oct 2015 07:28:00 GMT", "x" * 10_000],
)  # fmt: skip
def test_parse_retry_after_never_raises_and_believes_no_odd_value(value: str) -> None:
    assert http_reporter.parse_retry_after(value, now=1445412420.0) is None


def test_parse_retry_after_still_reads_what_servers_send() -> None:
    now = 1445412420.0  # Wed, 21 Oct 2015 07:27:00 GMT
    assert http_reporter.parse_retry_after("120", now=now) == 120.0
    assert http_reporter.parse_retry_after("9999999999", now=now) == 9999999999.0
    assert http_reporter.parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=now) == 60.0


# -- the rest of an answer: status line, headers, body ----------------------------------------

ODD_ANSWERS: dict[str, Planned] = {
    # Not HTTP at all: the request's fate is unknown, so it is sent again.
    "garbage-status-line": Planned(b"garbage\r\n\r\n"),
    "status-not-a-number": Planned(b"HTTP/1.1 2OO OK\r\nContent-Length: 0\r\n\r\n"),
    # An interim answer where the final one belongs says nothing about the batch.
    "interim-1xx-only": Planned(b"HTTP/1.1 199 Interim\r\n\r\n"),
    # A 2xx is delivered whatever its body does: these were taken, and must not come twice.
    "200-huge-content-length": Planned(
        b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n{}", accepted=True
    ),
    "200-content-length-not-a-number": Planned(
        b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n{}", accepted=True
    ),
    "202-negative-content-length": Planned(
        b"HTTP/1.1 202 Accepted\r\nContent-Length: -5\r\n\r\n", accepted=True
    ),
    "200-truncated-chunked-body": Planned(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", accepted=True
    ),
}


@pytest.mark.parametrize("planned", list(ODD_ANSWERS.values()), ids=list(ODD_ANSWERS))
@pytest.mark.parametrize("kind", KINDS)
def test_an_odd_answer_loses_nothing_and_duplicates_nothing(
    kind: str, planned: Planned, peer: RawReceiver
) -> None:
    peer.plan = [planned]
    install(make(kind, peer.url), instrument=[], max_backoff=0.2)
    made = make_spans(4)
    assert tracer.flush(15)
    delivered_once(kind, peer, made)


def test_a_retry_after_past_a_float_is_the_backoff() -> None:
    class Huge:
        """A reporter of the application's own that asks for a wait no float can hold."""

        def __init__(self) -> None:
            self.calls = 0

        def send(self, data: Any, callback: Callable[[BaseException | None], None]) -> None:
            self.calls += 1
            if self.calls == 1:
                callback(DeliveryError("busy", retry_after=10**400))
            else:
                callback(None)

    reporter = Huge()
    install(reporter, instrument=[], max_backoff=0.2)
    make_spans(2)
    assert tracer.flush(15)
    assert tracer.stats()["delivered"] == 2
    assert reporter.calls >= 2
