"""What a receiver says is checked before it is counted or logged: a ``partial_success`` count
is capped at what was sent (and anything but a whole number counts 0), a success answer that does
not decode is one warning, and text from a peer (a reason phrase, an error body, an
``error_message``, the error a reporter calls back with) reaches the log on one line, control
characters escaped, its length capped.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from typing import Any

import pytest

import tracer
from reporters import otlp
from tests.delivery.helpers import Outcomes
from tests.export.conftest import install
from tests.export.raw_receiver import (
    KINDS,
    Planned,
    RawReceiver,
    answer,
    batch_of,
    delivered_once,
    make,
    make_spans,
)

# -- partial_success: capped at what was sent -------------------------------------------------


def otlp_answer(partial: Any, content_type: str = "application/json") -> bytes:
    body = json.dumps({"partialSuccess": partial}).encode()
    return answer("200 OK", f"Content-Type: {content_type}", body=body)


@pytest.mark.parametrize(
    ("rejected", "counted"),
    [
        (5_000_000_000_000_000, 6),
        ("5000000000000000000000", 6),
        (2, 2),
        ("2", 2),
        (-3, 0),
        ("-3", 0),
        (1.5, 0),
        (True, 0),
        ("two", 0),
        (None, 0),
        ([3], 0),
        (1e400, 0),
    ],
)
def test_partial_success_is_capped_at_the_batch(
    rejected: Any, counted: int, peer: RawReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    partial = {"rejectedSpans": rejected, "errorMessage": "some were refused"}
    peer.plan = [Planned(otlp_answer(partial), accepted=True, close=False)]
    reporter = make("otlp", peer.url)
    install(reporter, instrument=[], flush_interval=10)
    with caplog.at_level(logging.WARNING, logger="tracer"):
        made = make_spans(6)
        assert tracer.flush(15)
    delivered_once("otlp", peer, made)
    assert reporter.rejected_spans == counted
    assert tracer.stats()["partial_rejected"] == counted
    # The receiver's message is said whatever its count was.
    assert any("some were refused" in r.getMessage() for r in caplog.records)


def test_partial_success_in_protobuf_is_capped_too(peer: RawReceiver) -> None:
    pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2")
    from tests.export.receiver import partial_success

    body = partial_success(2**63 - 1, "all of them", "application/x-protobuf")
    raw = answer("200 OK", "Content-Type: application/x-protobuf", body=body)
    peer.plan = [Planned(raw, accepted=True, close=False)]
    reporter = otlp.create(peer.url, protocol="http/protobuf", env={})
    install(reporter, instrument=[], flush_interval=10)
    made = make_spans(3)
    assert tracer.flush(15)
    assert tracer.stats()["delivered"] == 3
    assert reporter.rejected_spans == 3 == tracer.stats()["partial_rejected"]
    assert len(peer.accepted("/v1/traces")) == 1
    assert made


UNREADABLE_SUCCESS = {
    "not-json": (b"<html>fine</html>", "application/json", ""),
    "deeply-nested": (b"[" * 60_000, "application/json", ""),
    "not-protobuf": (b"\xff\xfe\xfd\xfc", "application/x-protobuf", ""),
    # 64 MiB of zeros in under 64 KiB: never decompressed past what is read of an answer.
    "gzip-bomb": (b"", "application/json", "gzip"),
}


@pytest.mark.parametrize("case", list(UNREADABLE_SUCCESS.values()), ids=list(UNREADABLE_SUCCESS))
def test_a_200_whose_body_cannot_be_read_is_delivered_with_one_warning(
    case: tuple[bytes, str, str], peer: RawReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    import gzip

    body, content_type, encoding = case
    headers = [f"Content-Type: {content_type}"]
    if encoding:
        body = gzip.compress(b"\0" * (64 * 1024 * 1024), compresslevel=9)
        assert len(body) < 64 * 1024
        headers.append("Content-Encoding: gzip")
    raw = answer("200 OK", *headers, body=body)
    peer.plan = [Planned(raw, accepted=True, close=False)] * 2
    reporter = make("otlp", peer.url)
    with caplog.at_level(logging.WARNING, logger="tracer"):
        for _ in range(2):
            outcomes = Outcomes()
            reporter.send(batch_of(2), outcomes)
            assert outcomes.only is None
    reporter.close()
    assert reporter.rejected_spans == 0
    lines = [r.getMessage() for r in caplog.records if "could not read" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in caplog.records]


# -- text from a peer in the log --------------------------------------------------------------

FORGED = "\ntracer: all spans delivered\r\n\x1b[2J\x00"


def assert_one_line_each(records: list[logging.LogRecord]) -> list[str]:
    messages = [r.getMessage() for r in records if r.name == "tracer"]
    for message in messages:
        assert not re.search(r"[\x00-\x1f\x7f]", message), repr(message)
        assert len(message) < 4096, len(message)
    return messages


@pytest.mark.parametrize("kind", KINDS)
def test_a_rejecting_peer_cannot_forge_log_lines(
    kind: str, peer: RawReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    reason = "Bad\x1b[31m Request" + "r" * 20_000
    body = (FORGED + "b" * 20_000).encode()
    peer.plan = [Planned(answer(f"400 {reason}", body=body))]
    install(make(kind, peer.url), instrument=[])
    with caplog.at_level(logging.WARNING, logger="tracer"):
        make_spans(2)
        assert tracer.flush(15)
    assert tracer.stats()["dropped_by_reason"] == {"rejected": 2}
    messages = assert_one_line_each(caplog.records)
    (line,) = [m for m in messages if "rejected" in m]
    assert "400" in line and "\\x0a" in line and "\\x1b" in line


@pytest.mark.parametrize("kind", KINDS)
def test_a_failing_peer_cannot_forge_log_lines(
    kind: str, peer: RawReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    peer.plan = [
        Planned(answer("503 Busy\x1b[2J", body=FORGED.encode())),
        Planned(b"HTTP/1.1 abc" + FORGED.encode() + b"\r\n\r\n"),
    ]
    install(make(kind, peer.url), instrument=[], max_backoff=0.2)
    with caplog.at_level(logging.WARNING, logger="tracer"):
        made = make_spans(2)
        assert tracer.flush(15)
    delivered_once(kind, peer, made)
    messages = assert_one_line_each(caplog.records)
    assert any("reporter failing" in m and "503" in m for m in messages), messages


def test_a_partial_success_message_cannot_forge_log_lines(
    peer: RawReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    partial = {"rejectedSpans": 1, "errorMessage": FORGED + "m" * 20_000}
    peer.plan = [Planned(otlp_answer(partial), accepted=True, close=False)]
    reporter = make("otlp", peer.url)
    with caplog.at_level(logging.WARNING, logger="tracer"):
        outcomes = Outcomes()
        reporter.send(batch_of(2), outcomes)
        assert outcomes.only is None
    reporter.close()
    messages = assert_one_line_each(caplog.records)
    (line,) = [m for m in messages if "OTLP receiver" in m]
    assert "\\x0a" in line


def test_the_error_a_reporter_calls_back_with_is_cleaned_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Refusing:
        """A reporter of the application's own whose error quotes a peer."""

        def send(self, data: Any, callback: Callable[[BaseException | None], None]) -> None:
            error = ValueError("refused: " + FORGED + "z" * 20_000)
            error.retryable = False  # type: ignore[attr-defined]
            callback(error)

    install(Refusing(), instrument=[])
    with caplog.at_level(logging.WARNING, logger="tracer"):
        make_spans(1)
        assert tracer.flush(15)
    messages = assert_one_line_each(caplog.records)
    assert any("rejected" in m and "\\x0a" in m for m in messages), messages
