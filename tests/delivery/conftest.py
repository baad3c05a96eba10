from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import HttpSink, LineServer


@pytest.fixture
def line_server() -> Iterator[LineServer]:
    server = LineServer()
    yield server
    server.close()


@pytest.fixture
def http_sink() -> Iterator[HttpSink]:
    sink = HttpSink().start()
    yield sink
    sink.stop()


@pytest.fixture
def spool_path(tmp_path: Path) -> Path:
    return tmp_path / "spool" / "svc.sqlite"
