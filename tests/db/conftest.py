"""The database tests: one PostgreSQL per test process (tests.support.postgres), and tracer
installed with the in-memory reporter, every trace sampled."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import reporters
import tracer
from reporters.memory import MemoryReporter
from tests.support.postgres import postgres_server as postgres_server


@pytest.fixture
def traced() -> Iterator[MemoryReporter]:
    """tracer installed, every trace sampled, with an in-memory reporter."""
    reporter = reporters.create("memory")
    tracer.install(
        app_name="db-test",
        reporter=reporter,
        flush_interval=0.02,
        sample_rate=1,
        memory_watch=False,
        metrics_interval=None,
    )
    yield reporter
    tracer.uninstall()


def db_spans(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The database spans, in the order they started."""
    return sorted((s for s in spans if "db" in s), key=lambda s: int(s["start_us"]))
