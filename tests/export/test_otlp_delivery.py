"""The OTLP reporter's delivery, per the OTLP/HTTP specification, against a real receiver: which
statuses are retried, ``Retry-After``, ``partial_success`` (delivered, counted, logged once, never
retried), large batches, and a 5 s 503 outage through the pipeline, delivered exactly once."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2")

import tracer
from reporters import otlp
from reporters.base import DeliveryError
from tests.conftest import refused_port
from tests.delivery.helpers import Outcomes
from tests.export.conftest import install
from tests.export.receiver import OtlpReceiver, OtlpRequest, partial_success

CONTENT_TYPES = {"http/protobuf": "application/x-protobuf", "http/json": "application/json"}


def record(n: int, **extra: Any) -> dict[str, Any]:
    return {
        "trace_id": f"{n + 1:032x}",
        "span_id": f"{n + 1:016x}",
        "parent_id": None,
        "request_id": f"req-{n}",
        "kind": "internal",
        "name": f"job {n}",
        "start_us": 1_714_564_800_000_000 + n,
        "duration_us": 10,
        "annotations": [],
        "tags": {},
        "sampled": True,
        **extra,
    }


def batch(count: int = 2, **extra: Any) -> dict[str, Any]:
    return {
        "service": "svc",
        "host": "web-1",
        "pid": 4242,
        "sent_at_us": 1_714_564_800_000_000,
        "spans": [record(n, **extra) for n in range(count)],
    }


def send(reporter: otlp.OtlpReporter, data: dict[str, Any] | None = None) -> Outcomes:
    outcomes = Outcomes()
    reporter.send(batch() if data is None else data, outcomes)
    return outcomes


def span_ids(requests: list[OtlpRequest]) -> list[str]:
    return [
        span.span_id.hex()
        for request in requests
        for rs in request.message.resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
    ]


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_retryable_statuses(receiver: OtlpReceiver, status: int) -> None:
    receiver.plan = [(status, {"Retry-After": "3"}, b"")]
    reporter = otlp.create(receiver.endpoint)
    error = send(reporter).error()
    assert error.retryable is True
    assert error.retry_after == 3.0
    assert f"HTTP {status}" in str(error)
    assert len(receiver.refused) == 1
    reporter.close()


@pytest.mark.parametrize("status", [400, 401, 403, 404, 408, 413, 500, 501])
def test_every_other_status_is_not_retried(receiver: OtlpReceiver, status: int) -> None:
    # The specification: only 429, 502, 503 and 504 are retried, "all other 4xx or 5xx response
    # status codes MUST NOT be retried" (408 and 500 included, which the plain HTTP reporter
    # retries).
    receiver.plan = [(status, {}, b"")]
    reporter = otlp.create(receiver.endpoint)
    error = send(reporter).error()
    assert error.retryable is False
    assert f"HTTP {status}" in str(error)
    reporter.close()


def test_error_answers_give_their_status_message(receiver: OtlpReceiver, protocol: str) -> None:
    status_pb2 = pytest.importorskip("google.rpc.status_pb2")
    body = (
        b'{"code": 3, "message": "span 7 has no name"}'
        if protocol == "http/json"
        else status_pb2.Status(code=3, message="span 7 has no name").SerializeToString()
    )
    receiver.plan = [(400, {"Content-Type": CONTENT_TYPES[protocol]}, body)]
    reporter = otlp.create(receiver.endpoint, protocol=protocol)
    error = send(reporter).error()
    assert str(error).endswith(": span 7 has no name")
    reporter.close()


def test_connection_refused_is_retryable() -> None:
    with refused_port() as port:
        reporter = otlp.create(f"http://127.0.0.1:{port}")
        error = send(reporter).error()
    assert error.retryable is True
    assert "ConnectionRefusedError" in str(error)


def test_a_receiver_gone_without_answer_is_retryable(receiver: OtlpReceiver) -> None:
    receiver.drop_connection = 1
    reporter = otlp.create(receiver.endpoint)
    assert send(reporter).error().retryable is True
    assert send(reporter).only is None
    assert len(receiver.requests) == 1
    reporter.close()


def test_keep_alive_connection_is_reused(receiver: OtlpReceiver) -> None:
    reporter = otlp.create(receiver.endpoint)
    assert send(reporter).only is None
    assert send(reporter).only is None
    first, second = receiver.requests
    assert first.client_port == second.client_port
    reporter.close()


def test_partial_success_is_delivered_counted_and_logged_once(
    receiver: OtlpReceiver, protocol: str, caplog: pytest.LogCaptureFixture
) -> None:
    content_type = CONTENT_TYPES[protocol]
    answer = (
        200,
        {"Content-Type": content_type},
        partial_success(3, "3 spans have no name", content_type),
    )
    receiver.plan = [answer, answer]
    reporter = otlp.create(receiver.endpoint, protocol=protocol)
    with caplog.at_level(logging.WARNING, logger="tracer"):
        assert send(reporter, batch(5)).only is None
        assert send(reporter, batch(5)).only is None
    assert reporter.rejected_spans == 6
    # One line: the second answer within 10 s is counted, not logged again.
    (line,) = [r.getMessage() for r in caplog.records if "OTLP receiver" in r.getMessage()]
    assert "rejected 3 spans" in line and "3 spans have no name" in line
    assert "rejected_spans=3" in line
    # Never retried: each batch went out once.
    assert len(receiver.requests) == 2
    reporter.close()


def test_partial_success_with_nothing_rejected_is_a_warning(
    receiver: OtlpReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    content_type = CONTENT_TYPES["http/protobuf"]
    body = partial_success(0, "attribute values were truncated", content_type)
    receiver.plan = [(200, {"Content-Type": content_type}, body)]
    reporter = otlp.create(receiver.endpoint)
    with caplog.at_level(logging.WARNING, logger="tracer"):
        assert send(reporter).only is None
    assert reporter.rejected_spans == 0
    assert any("attribute values were truncated" in r.getMessage() for r in caplog.records)
    reporter.close()


def test_a_batch_without_spans_sends_nothing(receiver: OtlpReceiver) -> None:
    reporter = otlp.create(receiver.endpoint)
    assert send(reporter, batch(0)).only is None
    assert send(reporter, {"service": "svc", "metrics": {"x": 1}}).only is None
    assert receiver.requests == [] and receiver.refused == []
    reporter.close()


def test_records_without_usable_ids_are_left_out_and_counted(receiver: OtlpReceiver) -> None:
    data = batch(3)
    data["spans"][0]["trace_id"] = "not hex at all, not hex at all!!"
    data["spans"][1]["span_id"] = "0" * 16
    reporter = otlp.create(receiver.endpoint)
    assert send(reporter, data).only is None
    assert span_ids(receiver.requests) == [data["spans"][2]["span_id"]]
    assert reporter.rejected_spans == 2
    reporter.close()


def test_a_batch_over_max_request_bytes_goes_in_several_requests(
    receiver: OtlpReceiver, protocol: str
) -> None:
    data = batch(40, tags={"payload": "x" * 300})
    reporter = otlp.create(receiver.endpoint, protocol=protocol, max_request_bytes=4096)
    assert send(reporter, data).only is None
    assert len(receiver.requests) > 1
    assert all(len(request.body) <= 4096 for request in receiver.requests)
    assert sorted(span_ids(receiver.requests)) == sorted(s["span_id"] for s in data["spans"])
    reporter.close()


def test_compression_none_and_headers(receiver: OtlpReceiver) -> None:
    reporter = otlp.create(
        receiver.endpoint, compression="none", headers={"x-api-key": "k1", "X-Tenant": "t"}
    )
    assert send(reporter).only is None
    (request,) = receiver.requests
    assert "Content-Encoding" not in request.headers
    assert request.raw == request.body
    assert request.headers["x-api-key"] == "k1" and request.headers["X-Tenant"] == "t"
    assert request.headers["Content-Type"] == "application/x-protobuf"
    assert request.headers["User-Agent"].startswith("tracer-otlp/")
    reporter.close()


def test_send_after_close_is_retryable(receiver: OtlpReceiver) -> None:
    reporter = otlp.create(receiver.endpoint)
    reporter.close()
    error = send(reporter).error()
    assert isinstance(error, DeliveryError) and error.retryable is True
    assert receiver.requests == []


# -- through the pipeline ------------------------------------------------------------------


def spans(count: int) -> set[str]:
    made = set()
    for n in range(count):
        with tracer.span(f"job {n}") as span:
            assert span is not None
            made.add(span.span_id)
    return made


def test_partial_success_through_the_pipeline(receiver: OtlpReceiver) -> None:
    content_type = CONTENT_TYPES["http/protobuf"]
    answer = (200, {"Content-Type": content_type}, partial_success(1, "one bad", content_type))
    receiver.plan = [answer] * 50
    reporter = otlp.create(receiver.endpoint)
    install(reporter, instrument=[])
    made = spans(5)
    assert tracer.flush(10)
    stats = tracer.stats()
    assert stats["created"] == stats["delivered"] == 5 and stats["dropped"] == 0
    assert sorted(span_ids(receiver.requests)) == sorted(made)
    assert reporter.rejected_spans == len(receiver.requests)
    # The reporter's count reaches tracer.stats(), while the spans stay delivered.
    assert stats["partial_rejected"] == reporter.rejected_spans


def test_400_through_the_pipeline_is_dropped_as_rejected(receiver: OtlpReceiver) -> None:
    receiver.plan = [(400, {}, b"bad")] * 50
    install(otlp.create(receiver.endpoint), instrument=[])
    spans(5)
    assert tracer.flush(10)
    stats = tracer.stats()
    assert stats["delivered"] == 0
    assert stats["dropped_by_reason"] == {"rejected": 5}
    assert receiver.requests == []


def test_a_5s_503_outage_delivers_every_span_exactly_once(receiver: OtlpReceiver) -> None:
    install(otlp.create(receiver.endpoint), instrument=[], max_backoff=1.0)
    made = spans(5)
    assert tracer.flush(10)
    receiver.outage_until = time.monotonic() + 5.0
    # Spans keep coming during the outage: one every 50 ms, for 6 s.
    deadline = time.monotonic() + 6.0
    while time.monotonic() < deadline:
        made |= spans(1)
        time.sleep(0.05)
    assert tracer.flush(30)

    received = span_ids(receiver.requests)
    assert len(receiver.refused) > 0
    assert len(received) == len(set(received)), "a span was delivered twice"
    assert set(received) == made
    stats = tracer.stats()
    assert stats["created"] == stats["delivered"] == len(made)
    assert stats["dropped"] == 0 and stats["spooled"] == 0 and stats["pending"] == 0
