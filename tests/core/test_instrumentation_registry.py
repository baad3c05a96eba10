"""Adding an instrumentation is adding one file: the installer finds it by itself.

Three ways in: a module of the ``tracer.instrumentation`` package, an entry point of the group
``tracer.instrumentation`` in another distribution, and ``register()``.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import reporters
import tracer
from tests.conftest import ROOT, subprocess_env
from tracer import installer
from tracer.instrumentation import base
from tracer.instrumentation.base import Instrumentation
from tracer.patching import is_ours

BUILTIN = {
    "aiohttp.client",
    "aiohttp.server",
    "asyncpg",
    "django",
    "fastapi",
    "flask",
    "http.client",
    "http.server",
    "httpx",
    "psycopg",
    "psycopg2",
    "redis",
    "requests",
    "sqlite3",
    "starlette",
    "threads",
    "urllib3",
    "uvicorn",
    "wsgiref",
}


def instrumentation_source(name: str, target: str) -> str:
    """An instrumentation that makes an internal span around ``target.hello()``."""
    return textwrap.dedent(
        f'''
        """A made-up instrumentation, in a file of its own."""

        import types

        from tracer.instrumentation.base import Instrumentation
        from tracer.span import INTERNAL


        class GreetingInstrumentation(Instrumentation):
            name = {name!r}
            module = {target!r}

            def _install(self, module: types.ModuleType) -> None:
                runtime = self.runtime

                def hello(wrapped, instance, args, kw):
                    span = runtime.child_span(INTERNAL, "hello")
                    try:
                        return wrapped(*args, **kw)
                    finally:
                        span.finish()

                self.wrap(module, "hello", hello)
        '''
    )


def test_the_shipped_instrumentations_are_found() -> None:
    assert {i.name for i in installer.available_instrumentations()} == BUILTIN


def run_copy(copy: Path, code: str) -> dict[str, Any]:
    env = subprocess_env()
    # Only the copy: this checkout's tracer must not be importable.
    env["PYTHONPATH"] = str(copy)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env, cwd=copy
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout.splitlines()[-1])
    return result


def test_a_module_dropped_into_the_package_is_installed(tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(
        Path(ROOT) / "tracer", copy / "tracer", ignore=shutil.ignore_patterns("__pycache__")
    )
    # The one new file, and the library it patches; nothing else is edited.
    (copy / "tracer" / "instrumentation" / "greeting.py").write_text(
        instrumentation_source("greeting", "greeting_target")
    )
    (copy / "greeting_target.py").write_text("def hello():\n    return 'hi'\n")
    code = textwrap.dedent(
        """
        import json
        import tracer
        from tracer import installer, reporters

        memory = reporters.create("memory")
        options = json.loads(OPTIONS)
        tracer.install(app_name="drop-in", reporter=memory, flush_interval=0.02, **options)
        import greeting_target

        assert greeting_target.hello() == "hi"
        assert tracer.flush(10)
        print(json.dumps({
            "tracer": tracer.__file__,
            "installed": [i.name for i in installer._instrumentations],
            "spans": [s["name"] for s in memory.spans],
        }))
        """
    )
    everything = run_copy(copy, code.replace("OPTIONS", "'{}'"))
    assert everything["tracer"].startswith(str(copy))
    assert set(everything["installed"]) == {*BUILTIN, "greeting"}
    assert everything["spans"] == ["hello"]
    # The instrument option knows it by its name.
    only = run_copy(copy, code.replace("OPTIONS", '\'{"instrument": ["greeting"]}\''))
    assert only["installed"] == ["greeting"] and only["spans"] == ["hello"]


def make_distribution(site: Path, entry_points: str, files: dict[str, str]) -> None:
    """What installing a package with ``[project.entry-points."tracer.instrumentation"]``
    leaves in site-packages: its modules and a dist-info with entry_points.txt."""
    info = site / "tracer_greeting-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tracer-greeting\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{base.ENTRY_POINT_GROUP}]\n{entry_points}")
    for name, text in files.items():
        (site / name).write_text(text)


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    for name in ("tracer_greeting", "greeting_plugin_target"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    return site


def test_an_entry_point_of_another_package_is_installed(site: Path) -> None:
    make_distribution(
        site,
        "greeting = tracer_greeting:GreetingInstrumentation\n",
        {
            "tracer_greeting.py": instrumentation_source("greeting", "greeting_plugin_target"),
            "greeting_plugin_target.py": "def hello():\n    return 'hi'\n",
        },
    )
    memory = reporters.create("memory")
    tracer.install(app_name="plugin", reporter=memory, flush_interval=0.02)
    assert "greeting" in [i.name for i in installer._instrumentations]
    # Imported after install: patched on import, like tracer's own.
    import greeting_plugin_target  # type: ignore[import-not-found]

    assert greeting_plugin_target.hello() == "hi"
    assert tracer.flush(10)
    assert [s["name"] for s in memory.spans] == ["hello"]
    # Uninstalled with the rest: the original function is back.
    tracer.uninstall()
    assert not is_ours(greeting_plugin_target.hello)
    assert greeting_plugin_target.hello() == "hi"
    assert len(memory.spans) == 1


def test_a_broken_entry_point_is_left_out_with_a_warning(
    site: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make_distribution(
        site,
        "missing = tracer_greeting_missing:Nothing\nplain = tracer_greeting:NOT_A_CLASS\n",
        {"tracer_greeting.py": "NOT_A_CLASS = 1\n"},
    )
    with caplog.at_level(logging.WARNING, logger="tracer"):
        found = {i.name for i in installer.available_instrumentations()}
    assert found == BUILTIN
    messages = "\n".join(r.getMessage() for r in caplog.records)
    assert "tracer_greeting_missing:Nothing" in messages
    assert "tracer_greeting:NOT_A_CLASS" in messages


class Registered(Instrumentation):
    """A test's own instrumentation, patching a method of a class defined here."""

    name = "test.registered"
    module = __name__

    def _install(self, module: Any) -> None:
        runtime = self.runtime
        assert runtime is not None

        def greet(wrapped: Any, instance: Any, args: Any, kw: Any) -> Any:
            span = runtime.child_span("internal", "greet")
            try:
                return wrapped(*args, **kw)
            finally:
                span.finish()

        self.wrap(Greeter, "greet", greet)


class Greeter:
    def greet(self) -> str:
        return "hello"


def test_a_registered_class_is_installed_until_unregistered() -> None:
    base.register(Registered)
    try:
        memory = reporters.create("memory")
        tracer.install(app_name="registered", reporter=memory, flush_interval=0.02)
        assert Greeter().greet() == "hello"
        assert tracer.flush(10)
        assert [s["name"] for s in memory.spans] == ["greet"]
        tracer.uninstall()
    finally:
        base.unregister(Registered.name)
    assert "test.registered" not in {i.name for i in installer.available_instrumentations()}


def test_a_second_class_of_a_taken_name_is_not_used(caplog: pytest.LogCaptureFixture) -> None:
    class Impostor(Instrumentation):
        name = "requests"
        module = "requests"

    base.register(Impostor)
    try:
        with caplog.at_level(logging.WARNING, logger="tracer"):
            found = [type(i) for i in installer.available_instrumentations()]
    finally:
        base.unregister("requests")
    assert Impostor not in found
    assert "two instrumentations are named 'requests'" in caplog.text
