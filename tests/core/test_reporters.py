"""Reporters: stdout (JSON lines and trees), memory, custom send(data, callback), create()."""

from __future__ import annotations

import io
import json
import threading
import time
from typing import Any

import pytest
import requests

import reporters
import tracer
from tests.conftest import Server


def test_create_known_and_unknown_types() -> None:
    assert type(reporters.create("memory")).__name__ == "MemoryReporter"
    assert type(reporters.create("stdout", format="json")).__name__ == "StdoutReporter"
    with pytest.raises(ValueError, match="unknown reporter type 'nope'"):
        reporters.create("nope")
    with pytest.raises(ValueError, match="format"):
        reporters.create("stdout", format="xml")


def test_stdout_json_lines_one_per_span(server: Server) -> None:
    stream = io.StringIO()
    reporter = reporters.create("stdout", format="json", stream=stream)
    tracer.install(app_name="json-out", reporter=reporter, flush_interval=0.02)
    requests.get(f"{server.url}/j", timeout=10)
    with tracer.span("after"):
        pass
    tracer.uninstall()
    lines = stream.getvalue().splitlines()
    records = [json.loads(line) for line in lines]
    assert {r["kind"] for r in records} >= {"client", "internal"}
    assert all(r["service"] == "json-out" for r in records)


def test_stdout_json_is_valid_even_with_nan() -> None:
    stream = io.StringIO()
    reporter = reporters.create("stdout", format="json", stream=stream)
    reporter.send({"spans": [{"x": float("nan"), "y": object()}]}, lambda e: None)
    assert json.loads(stream.getvalue())["x"] is None


def test_stdout_pretty_prints_a_tree_when_the_root_arrives() -> None:
    stream = io.StringIO()
    reporter = reporters.create("stdout", format="pretty", stream=stream)
    tracer.install(app_name="pretty", reporter=reporter, flush_interval=0.02)
    with tracer.span("root"):
        with tracer.span("child"):
            with tracer.span("grandchild"):
                pass
    tracer.flush()
    out = stream.getvalue()
    assert "(3 spans, services: pretty)" in out
    lines = out.splitlines()
    root = next(i for i, line in enumerate(lines) if "internal root" in line)
    assert "internal child" in lines[root + 1] and "└─" in lines[root + 1]
    assert "internal grandchild" in lines[root + 2]
    assert lines[root + 2].index("└─") > lines[root + 1].index("└─")


def test_stdout_default_format_follows_tty() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert reporters.create("stdout", stream=Tty()).format == "pretty"
    assert reporters.create("stdout", stream=io.StringIO()).format == "json"


class Recording:
    """A custom reporter that calls back from another thread, as a network client might."""

    def __init__(self) -> None:
        self.batches: list[dict[str, Any]] = []
        self.done = threading.Event()

    def send(self, data: dict[str, Any], callback: Any) -> None:
        self.batches.append(data)
        threading.Thread(target=callback, args=(None,)).start()


def test_custom_reporter_contract() -> None:
    reporter = Recording()
    tracer.install(app_name="custom", reporter=reporter, flush_interval=0.02)
    for i in range(3):
        with tracer.span(f"op{i}"):
            pass
    assert tracer.flush()
    batch = reporter.batches[0]
    assert set(batch) == {"service", "host", "pid", "sent_at_us", "spans"}
    assert batch["service"] == "custom"
    assert sum(len(b["spans"]) for b in reporter.batches) == 3
    json.dumps(reporter.batches)  # plain, JSON-serialisable dicts only
    assert tracer.stats()["delivered"] == 3


@pytest.mark.parametrize("spool", [True, False])
def test_reporter_that_raises_never_reaches_the_application(spool: bool) -> None:
    class Broken:
        def send(self, data: dict[str, Any], callback: Any) -> None:
            raise ConnectionError("backend down")

    tracer.install(
        app_name="b",
        reporter=Broken(),
        flush_interval=0.01,
        send_timeout=0.1,
        max_retries=1,
        spool=spool,
    )
    with tracer.span("x"):
        pass
    # flush() retries until its timeout; then the batch is spooled (or dropped without a spool).
    assert not tracer.flush(timeout=1)
    deadline = time.monotonic() + 10
    while tracer.stats()["pending"] and time.monotonic() < deadline:
        time.sleep(0.01)
    stats = tracer.stats()
    if spool:
        assert stats["spooled"] == 1 and stats["dropped"] == 0
    else:
        assert stats["dropped_by_reason"] == {"reporter_error": 1}
    assert stats["created"] == stats["delivered"] + stats["dropped"] + stats["spooled"]
    assert stats["pending"] == 0
