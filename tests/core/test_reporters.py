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


def test_reporters_import_nothing_of_tracers_but_the_encoding_module() -> None:
    # The reporter contract: only plain dicts cross, and the one neutral module of tracer's the
    # reporters may use is tracer.encoding (which imports nothing of tracer's itself).
    from tests.core.test_layering import MODULES, imports

    allowed = ("tracer.reporters", "tracer.encoding")
    found = [
        f"{module}:{line} imports {target}"
        for module, path in MODULES.items()
        if module in allowed or module.startswith("tracer.reporters.")
        for line, target in imports(module, path)
        if not any(target == name or target.startswith(name + ".") for name in allowed)
    ]
    assert found == []
    assert imports("tracer.encoding", MODULES["tracer.encoding"]) == []


# Every way a config file or a program may name a reporter module, each in a fresh interpreter
# (a module imported once is found in sys.modules whatever the way).
ALIAS_FORMS = {
    "attribute": "import reporters\nmodule = reporters.logstash\nname = 'logstash'",
    "from": "from reporters import otlp as module\nname = 'otlp'",
    "dotted": "import reporters.zipkin\nmodule = reporters.zipkin\nname = 'zipkin'",
    "dotted-then-attribute": "import reporters.otlp\nimport reporters\nmodule = reporters.otlp\n"
    "name = 'otlp'",
    "from-submodule": "from reporters.http import HttpReporter\nimport reporters.http as module\n"
    "import tracer.reporters.http\nassert HttpReporter is tracer.reporters.http.HttpReporter\n"
    "name = 'http'",
}


@pytest.mark.parametrize("form", sorted(ALIAS_FORMS))
def test_the_short_name_gives_tracers_own_module_objects(form: str) -> None:
    import subprocess
    import sys

    check = (
        ALIAS_FORMS[form] + "\nimport importlib, sys\n"
        "own = importlib.import_module('tracer.reporters.' + name)\n"
        "assert module is own, (module, own)\n"
        "assert sys.modules['reporters.' + name] is own\n"
        "assert getattr(sys.modules['reporters'], name) is own\n"
        "print('same')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.stdout.strip() == "same", out.stderr


def test_every_short_name_has_its_file_and_an_unknown_one_is_refused() -> None:
    from pathlib import Path

    files = {p.stem for p in Path(reporters.__file__).parent.glob("*.py")} - {"__init__"}
    assert set(reporters.SUBMODULES) == files
    assert set(tracer.reporters.BUILTIN) <= files
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = reporters.nope  # type: ignore[attr-defined]
