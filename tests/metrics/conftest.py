"""A real Prometheus server for the metrics tests (Debian's ``prometheus`` package)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.metrics.helpers import AioService, HttpServer
from tests.support.children import ROOT, subprocess_env
from tracer import context

NOT_INSTALLED = (
    "PROMETHEUS IS NOT INSTALLED: no 'prometheus' (or 'promtool') command on PATH, so the tests "
    "against a real Prometheus did NOT run; install Debian's prometheus package (.ci/run does)"
)


def need(command: str) -> str:
    path = shutil.which(command) or (
        f"/usr/bin/{command}" if os.path.exists(f"/usr/bin/{command}") else None
    )
    if path is None:
        pytest.skip(NOT_INSTALLED)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Prometheus:
    """A Prometheus server on 127.0.0.1 scraping ``targets`` (job -> host:port) every second."""

    def __init__(self, tmp: Path, targets: dict[str, str]) -> None:
        binary = need("prometheus")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [target]}]}
                for job, target in targets.items()
            ],
        }
        path = tmp / "prometheus.yml"
        path.write_text(json.dumps(config))  # JSON is YAML
        self.log = open(tmp / "prometheus.log", "w+")
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={path}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while not self._ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.close()
                self.log.seek(0)
                raise RuntimeError(f"prometheus did not start: {self.log.read()[-2000:]}")
            time.sleep(0.1)

    def _ready(self) -> bool:
        try:
            with context.suppressed(), urllib.request.urlopen(f"{self.url}/-/ready", timeout=2):
                return True
        except OSError:
            return False

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The result vector of an instant query."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with context.suppressed(), urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def value(self, expr: str) -> float | None:
        """The single value of an instant query, or None when it has no result."""
        result = self.query(expr)
        return None if not result else float(result[0]["value"][1])

    def by(self, expr: str, label: str) -> dict[str, float]:
        return {r["metric"].get(label, ""): float(r["value"][1]) for r in self.query(expr)}

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.log.close()


class Service:
    """``tests.metrics.service_child`` in a process of its own."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.metrics.service_child", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=subprocess_env(**(env or {})),
        )
        self.lines: dict[str, list[str]] = {}
        assert self.process.stdout is not None
        self.port = int(self._read("port"))
        self.url = f"http://127.0.0.1:{self.port}"

    def _read(self, key: str) -> str:
        assert self.process.stdout is not None
        while key not in self.lines:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"service exited ({self.process.wait(10)}) before {key!r}")
            name, _, value = line.strip().partition(" ")
            self.lines.setdefault(name, []).append(value)
        return self.lines[key][0]

    def read_all(self, key: str, count: int) -> list[str]:
        assert self.process.stdout is not None
        while len(self.lines.get(key, [])) < count:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError("service exited early")
            name, _, value = line.strip().partition(" ")
            self.lines.setdefault(name, []).append(value)
        return self.lines[key]

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture
def service_factory() -> Iterator[Any]:
    made: list[Service] = []

    def make(*args: str, env: dict[str, str] | None = None) -> Service:
        service = Service(*args, env=env)
        made.append(service)
        return service

    yield make
    for service in made:
        service.close()


@pytest.fixture
def aio_service() -> Iterator[AioService]:
    """:class:`tests.metrics.helpers.AioService`, for the test's length."""
    srv = AioService()
    yield srv
    srv.close()


@pytest.fixture
def http_service() -> Iterator[HttpServer]:
    """:class:`tests.metrics.helpers.HttpServer`, for the test's length."""
    srv = HttpServer()
    yield srv
    srv.close()


@pytest.fixture
def service(http_service: HttpServer) -> str:
    """The URL of :func:`http_service`."""
    return http_service.url
