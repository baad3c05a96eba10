"""The package as users install it: its name, what the wheel holds, and a project's own
``reporters`` package next to it."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from .conftest import Venv


def test_the_distribution_has_its_own_name_and_the_import_name_is_tracer(
    plain_install: Venv, tmp_path: Path
) -> None:
    out = plain_install.run(
        "-c",
        "import importlib.metadata as m, tracer, reporters;"
        "print(m.version('dapper-tracer'), tracer.__name__, reporters.__name__)",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0.1.0", "tracer", "reporters"]
    script = plain_install.path / "bin" / "tracer"
    assert script.exists(), "the tracer console script is installed"


def test_every_subpackage_is_in_the_wheel(plain_install: Venv, tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import pkgutil, tracer, json
        print(json.dumps(sorted(m.name for m in pkgutil.walk_packages(tracer.__path__, "tracer."))))
        """
    )
    out = plain_install.run("-c", code, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    installed = set(json.loads(out.stdout))
    here = Path(__file__).resolve().parents[2] / "tracer"
    expected = set()
    for path in here.rglob("*.py"):
        parts = path.relative_to(here).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts and parts != ("__main__",):
            expected.add(".".join(("tracer", *parts)))
    missing = expected - installed
    assert not missing, f"not in the installed package: {sorted(missing)}"


def test_a_project_with_its_own_reporters_package(plain_install: Venv, tmp_path: Path) -> None:
    """tracer's own code never imports the top-level ``reporters``: a project's package of that
    name (a common one) is the project's, and the config file reaches tracer's reporters as
    ``from tracer import reporters``."""
    project = tmp_path / "project"
    (project / "reporters").mkdir(parents=True)
    (project / "reporters" / "__init__.py").write_text("OWN = True\n")
    (project / "trace.config.py").write_text(
        textwrap.dedent(
            """
            from tracer import reporters
            app_name = "own-reporters"
            reporter = reporters.create("memory")
            """
        )
    )
    code = textwrap.dedent(
        """
        import reporters, tracer, json
        assert reporters.OWN
        tracer.install()
        with tracer.span("x"):
            pass
        assert tracer.flush(10)
        rt = tracer.installer.runtime
        print(json.dumps({"delivered": tracer.stats()["delivered"],
                          "reporter": type(rt.config.reporter).__module__}))
        """
    )
    out = plain_install.run("-c", code, cwd=project)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1]) == {
        "delivered": 1,
        "reporter": "tracer.reporters.memory",
    }


def test_the_short_reporters_name_is_the_same_modules(plain_install: Venv, tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import reporters, reporters.base, reporters.logstash
        from reporters.base import DeliveryError
        import tracer.reporters.base, tracer.reporters.logstash
        assert reporters.base is tracer.reporters.base
        assert reporters.logstash is tracer.reporters.logstash
        assert DeliveryError is tracer.reporters.base.DeliveryError
        assert reporters.http.create is tracer.reporters.http.create
        print("ok")
        """
    )
    out = plain_install.run("-c", code, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


BUILD = "from tracer import _accel, ids; ids.new_ids(); print(_accel.build())"


def test_the_installed_package_has_its_accelerator(plain_install: Venv, tmp_path: Path) -> None:
    from tests.core.test_accelerator import _compiler

    if not _compiler():
        pytest.skip("no C compiler or no Python headers here")
    out = plain_install.run("-c", BUILD, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "compiled"


@pytest.mark.slow
def test_without_a_compiler_tracer_installs_pure_python(
    no_compiler_install: Venv, tmp_path: Path
) -> None:
    out = no_compiler_install.run("-c", BUILD, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "pure"
