"""Where the config file is found (``TRACE_CONFIG_PATH``, the working directory, then next to
the script or module that ``tracer run`` starts), what is said about it, and ``tracer init``."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

from tests.cli.conftest import Venv, spans_in, tracer_cmd
from tests.conftest import ROOT

SCRIPT = "import tracer\nwith tracer.span('work'):\n    pass\n"


def config(app_name: str) -> str:
    return textwrap.dedent(
        f"""
        from tracer import reporters
        app_name = {app_name!r}
        reporter = reporters.stdout.create(format="json")
        """
    )


def services(stdout: str) -> list[str]:
    return [s["service"] for s in spans_in(stdout)]


def test_the_config_next_to_the_script_is_found(tmp_path: Path) -> None:
    service = tmp_path / "service"
    service.mkdir()
    (service / "back.py").write_text(SCRIPT)
    (service / "trace.config.py").write_text(config("next-to-script"))
    out = tracer_cmd("run", "service/back.py", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert services(out.stdout) == ["next-to-script"]
    # Which file was used is said in one line.
    assert str(service / "trace.config.py") in out.stderr


def test_the_config_next_to_the_module_is_found(tmp_path: Path) -> None:
    package = tmp_path / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "app.py").write_text(SCRIPT)
    (package / "trace.config.py").write_text(config("next-to-module"))
    out = tracer_cmd("run", "-m", "mypkg.app", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert services(out.stdout) == ["next-to-module"]
    assert str(package / "trace.config.py") in out.stderr


def test_the_working_directory_comes_before_the_script_and_the_variable_before_both(
    tmp_path: Path,
) -> None:
    service = tmp_path / "service"
    service.mkdir()
    (service / "back.py").write_text(SCRIPT)
    (service / "trace.config.py").write_text(config("next-to-script"))
    (tmp_path / "trace.config.py").write_text(config("working-directory"))
    (tmp_path / "named.py").write_text(config("named"))
    out = tracer_cmd("run", "service/back.py", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert services(out.stdout) == ["working-directory"]
    assert str(tmp_path / "trace.config.py") in out.stderr
    out = tracer_cmd("run", "service/back.py", cwd=tmp_path, TRACE_CONFIG_PATH="named.py")
    assert out.returncode == 0, out.stderr
    assert services(out.stdout) == ["named"]
    assert str(tmp_path / "named.py") in out.stderr


def test_without_a_config_the_notice_says_where_it_looked(tmp_path: Path) -> None:
    service = tmp_path / "service"
    service.mkdir()
    (service / "back.py").write_text(SCRIPT)
    out = tracer_cmd("run", "service/back.py", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    (notice,) = [line for line in out.stderr.splitlines() if line.startswith("tracer:")]
    assert str(tmp_path) in notice and str(service) in notice and "'back'" in notice


def test_the_template_is_the_example() -> None:
    from tracer.config import template

    example = Path(ROOT) / "trace.config.example.py"
    assert template().encode() == example.read_bytes()


def test_init_writes_the_example_and_never_overwrites(tmp_path: Path) -> None:
    example = (Path(ROOT) / "trace.config.example.py").read_text()
    out = tracer_cmd("init", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    written = tmp_path / "trace.config.py"
    assert written.read_text() == example
    assert str(written) in out.stdout
    # The file it wrote is a working configuration.
    (tmp_path / "back.py").write_text(SCRIPT)
    run = tracer_cmd("run", "back.py", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert services(run.stdout) == ["back"]
    # A second init leaves the file alone and says why.
    written.write_text("app_name = 'mine'\n")
    again = tracer_cmd("init", cwd=tmp_path)
    assert again.returncode == 1
    assert "already exists" in again.stderr and str(written) in again.stderr
    assert "Traceback" not in again.stderr
    assert written.read_text() == "app_name = 'mine'\n"


def test_init_on_a_plain_install(plain_install: Venv, tmp_path: Path) -> None:
    example = (Path(ROOT) / "trace.config.example.py").read_text()
    out = plain_install.run("-m", "tracer", "init", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "trace.config.py").read_text() == example
    # The console script too, and it refuses to overwrite.
    script = str(plain_install.path / "bin" / "tracer")
    again = subprocess.run(
        [script, "init"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env=plain_install.env(),
    )
    assert again.returncode == 1 and "already exists" in again.stderr
    (tmp_path / "back.py").write_text(SCRIPT)
    run = plain_install.run("-m", "tracer", "run", "back.py", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert services(run.stdout) == ["back"]
