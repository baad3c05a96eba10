"""One JSON encoder for every writer of records: held batches, Logstash, the HTTP reporter."""

from __future__ import annotations

import math
import sys
from typing import Any

import pytest

from reporters import http as http_reporter
from reporters import logstash
from tracer import encoding
from tracer.delivery.batches import Batch
from tracer.encoding import encode_json

from .helpers import HttpSink, LineServer, Outcomes, strict_loads


class Shown:
    def __str__(self) -> str:
        return "shown"


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def odd_record() -> dict[str, Any]:
    """A record with NaN and infinities next to strings that spell them."""
    return {
        "name": "BaNaNa",
        "tags": {"x": math.nan, "y": [math.inf, -math.inf], "z": "Infinity", "w": "-NaN"},
        "obj": Shown(),
    }


EXPECTED = {
    "name": "BaNaNa",
    "tags": {"x": None, "y": [None, None], "z": "Infinity", "w": "-NaN"},
    "obj": "shown",
}


def test_a_held_batch_keeps_strings_when_a_record_holds_a_nan() -> None:
    """A NaN that reaches a held batch by another way than the record builder (a record of a
    reporter's own, a future field) becomes null, and never rewrites text elsewhere."""
    batch = Batch([odd_record()], None, 1)
    batch.hold()
    assert batch.records is None and batch.blob is not None
    assert batch.spans() == [EXPECTED]


def test_logstash_writes_records_with_the_same_encoder(line_server: LineServer) -> None:
    reporter = logstash.create(host="127.0.0.1", port=line_server.port)
    outcomes = Outcomes()
    reporter.send(
        {"service": "s", "sent_at_us": 1_714_564_800_000_000, "spans": [odd_record()]}, outcomes
    )
    assert outcomes.only is None
    (line,) = line_server.get_lines(1)
    event = strict_loads(line)
    assert {k: event[k] for k in EXPECTED} == EXPECTED
    reporter.close()


def test_the_http_reporter_writes_batches_with_the_same_encoder(http_sink: HttpSink) -> None:
    reporter = http_reporter.create(f"http://127.0.0.1:{http_sink.port}/v1/spans", gzip=False)
    outcomes = Outcomes()
    reporter.send({"service": "s", "spans": [odd_record()]}, outcomes)
    assert outcomes.only is None
    (request,) = http_sink.received
    assert request.body == {"service": "s", "spans": [EXPECTED]}
    reporter.close()


def test_awkward_values_never_make_it_raise() -> None:
    cyclic: dict[str, Any] = {"a": 1}
    cyclic["self"] = cyclic
    deep: Any = "bottom"
    for _ in range(sys.getrecursionlimit() + 100):
        deep = [deep]
    huge = 10**5000
    value = {
        "cycle": cyclic,
        "deep": deep,
        "huge": huge,
        "unprintable": Unprintable(),
        (1, 2): "tuple key",
        None: "none key",
        math.nan: "nan key",
        "surrogate": b"/caf\xe9".decode("utf-8", errors="surrogateescape"),
    }
    decoded = strict_loads(encode_json(value).decode("utf-8"))
    assert decoded["cycle"] == {"a": 1, "self": "<cycle>"}
    assert decoded["huge"] == "<unprintable int>"
    assert decoded["unprintable"] == "<unprintable Unprintable>"
    assert decoded["(1, 2)"] == "tuple key"
    assert decoded["null"] in ("none key", "nan key")
    assert decoded["surrogate"] == "/caf?"
    depth = 0
    node = decoded["deep"]
    while isinstance(node, list):
        node, depth = node[0], depth + 1
    assert depth < encoding.MAX_DEPTH


def test_a_plain_record_costs_one_json_dumps(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sanitising copy is made only when json.dumps refuses the data as it is."""

    def no_copy(*args: Any) -> Any:
        raise AssertionError("the sanitising copy was made")

    monkeypatch.setattr(encoding, "_sanitise", no_copy)
    record = {"name": "GET /", "tags": {"n": 1.5, "obj": Shown()}, "events": [{"type": "sr"}]}
    assert strict_loads(encode_json(record)) == {
        "name": "GET /",
        "tags": {"n": 1.5, "obj": "shown"},
        "events": [{"type": "sr"}],
    }
