"""A callee's ``x-must-collect`` makes the caller keep a trace its sampler dropped."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable

import httpx
import pytest
import urllib3

import reporters
import tracer
from tests.clients.conftest import clients
from tests.conftest import Server


def with_httpx(url: str) -> None:
    httpx.get(url)


def with_urllib3(url: str) -> None:
    urllib3.PoolManager().request("GET", url)


def with_urllib(url: str) -> None:
    with urllib.request.urlopen(url, timeout=10) as answer:
        answer.read()


@pytest.mark.parametrize("call", [with_httpx, with_urllib3, with_urllib])
def test_the_callees_must_collect_keeps_the_call(echo: Server, call: Callable[[str], None]) -> None:
    memory = reporters.create("memory")
    tracer.install(app_name="s", reporter=memory, sample_rate=0.0, flush_interval=0.02)
    call(f"{echo.url}/plain")
    call(f"{echo.url}/must")
    tracer.flush()
    assert [c["http"]["path"] for c in clients(memory.spans)] == ["/must"]
