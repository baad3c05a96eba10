"""Fixtures for the export tests: an OTLP/HTTP receiver and a Zipkin receiver on 127.0.0.1, and
tracer installed to report to one of them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tracer

HERE = Path(__file__).resolve().parent
#: The receivers are http.server handlers in the test's own process: with tracer's http.server
#: instrumentation on, their requests must not become spans of the service under test.
RECEIVER_PATHS = ["/v1/traces", "/api/v2/spans"]


def install(reporter: Any, **options: Any) -> None:
    """tracer with ``reporter``, every trace sampled, batches flushed within 20 ms."""
    options.setdefault("app_name", "svc")
    options.setdefault("sample_rate", 1)
    options.setdefault("flush_interval", 0.02)
    options.setdefault("ignore_paths", RECEIVER_PATHS)
    tracer.install(reporter=reporter, **options)


@pytest.fixture(autouse=True)
def _no_otel_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    # The machine's own OpenTelemetry settings must not reach a test; each sets what it needs.
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)


@pytest.fixture
def receiver() -> Iterator[Any]:
    from tests.export.receiver import OtlpReceiver

    started = OtlpReceiver().start()
    yield started
    tracer.uninstall()
    started.stop()
    assert not started.errors, f"the receiver could not decode: {started.errors!r}"


@pytest.fixture
def zipkin_receiver() -> Iterator[Any]:
    from tests.export.receiver import ZipkinReceiver

    started = ZipkinReceiver().start()
    yield started
    tracer.uninstall()
    started.stop()


@pytest.fixture(params=["http/protobuf", "http/json"])
def protocol(request: pytest.FixtureRequest) -> str:
    """Each OTLP test that takes it runs once per encoding."""
    return str(request.param)


@pytest.fixture
def peer() -> Iterator[Any]:
    """A :class:`tests.export.raw_receiver.RawReceiver`, answering as each test plans."""
    from tests.export.raw_receiver import RawReceiver

    receiver = RawReceiver().start()
    yield receiver
    tracer.uninstall()
    receiver.stop()
