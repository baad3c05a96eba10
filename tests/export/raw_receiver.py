"""The four HTTP reporters against :class:`tests.support.receivers.RawReceiver`, an HTTP
receiver whose answers are raw bytes, for the tests of what the reporters do with odd answers.

``make`` builds each of the four HTTP reporters for it, ``batch_of`` a batch to send, ``answer``
an answer to plan, and ``delivered_once`` checks that every span made arrived exactly once.
"""

from __future__ import annotations

from typing import Any

import tracer
from reporters import http as http_reporter
from reporters import logstash, otlp, zipkin

# The receiver itself, and what plans its answers, as the tests import them from here.
from tests.support.receivers import OK as OK
from tests.support.receivers import Planned as Planned
from tests.support.receivers import RawReceiver, Request
from tests.support.receivers import answer as answer

KINDS = ("http", "otlp", "zipkin", "logstash")
# Where each reporter posts spans, below the receiver's URL.
PATHS = {"http": "/spans", "otlp": "/v1/traces", "zipkin": "/api/v2/spans", "logstash": "/"}


def make(kind: str, url: str, **options: Any) -> Any:
    if kind == "http":
        return http_reporter.create(url + PATHS[kind], **options)
    if kind == "otlp":
        return otlp.create(url, protocol="http/json", env={}, **options)
    if kind == "zipkin":
        return zipkin.create(url + PATHS[kind], env={}, **options)
    return logstash.create(url=url + PATHS[kind], **options)


def batch_of(count: int) -> dict[str, Any]:
    return {
        "service": "svc",
        "host": "web-1",
        "pid": 4242,
        "sent_at_us": 1_714_564_800_000_000,
        "spans": [
            {
                "trace_id": f"{n + 1:032x}",
                "span_id": f"{n + 1:016x}",
                "name": f"job {n}",
                "kind": "internal",
                "start_us": 1_714_564_800_000_000,
                "duration_us": 10,
            }
            for n in range(count)
        ],
    }


def span_ids(kind: str, request: Request) -> list[str]:
    """The span ids one request carried, in the reporter's own encoding."""
    document = request.json()
    if kind == "http":
        return [s["span_id"] for s in document.get("spans", [])]
    if kind == "otlp":
        return [
            span["spanId"]
            for rs in document["resourceSpans"]
            for ss in rs["scopeSpans"]
            for span in ss["spans"]
        ]
    if kind == "zipkin":
        return [s["id"] for s in document]
    return [event["span_id"] for event in document if "span_id" in event]


def make_spans(count: int) -> list[str]:
    made = []
    for n in range(count):
        with tracer.span(f"job {n}") as span:
            assert span is not None
            made.append(span.span_id)
    return made


def delivered_once(kind: str, peer: RawReceiver, made: list[str]) -> None:
    """Every span made reached the receiver in an accepted request, each exactly once."""
    got = [sid for r in peer.accepted(PATHS[kind]) for sid in span_ids(kind, r)]
    assert sorted(got) == sorted(made)
    stats = tracer.stats()
    assert stats["delivered"] == stats["created"] == len(made), stats
    assert stats["dropped"] == 0, stats["dropped_by_reason"]
