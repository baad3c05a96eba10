"""Under ``tracer run`` the default service name is the script's or the module's, not
``__main__``, so that two services get two names and two spool files."""

from __future__ import annotations

import textwrap
from pathlib import Path

from tests.cli.conftest import spans_in, tracer_cmd

# Records one span, and says which spool file its service would use.
SCRIPT = textwrap.dedent(
    """
    import sys
    import tracer
    from tracer import installer

    with tracer.span("work"):
        pass
    rt = installer.runtime
    print("SPOOL", installer._spool_path(rt.config), file=sys.stderr)
    """
)


def spool_of(stderr: str) -> str:
    return next(line.split(" ", 1)[1] for line in stderr.splitlines() if line.startswith("SPOOL"))


def test_a_script_is_named_after_its_file(tmp_path: Path) -> None:
    (tmp_path / "back.py").write_text(SCRIPT)
    (tmp_path / "front.py").write_text(SCRIPT)
    back = tracer_cmd("run", "back.py", cwd=tmp_path)
    front = tracer_cmd("run", "front.py", cwd=tmp_path)
    assert back.returncode == 0 and front.returncode == 0, back.stderr + front.stderr
    assert [s["service"] for s in spans_in(back.stdout)] == ["back"]
    assert [s["service"] for s in spans_in(front.stdout)] == ["front"]
    assert spool_of(back.stderr) != spool_of(front.stderr)
    # The one-line notice says which name, why, and where it looked for a config file.
    (notice,) = [line for line in back.stderr.splitlines() if line.startswith("tracer:")]
    assert "'back'" in notice and "the script back.py" in notice
    assert str(tmp_path) in notice


def test_a_module_is_named_after_its_dotted_name(tmp_path: Path) -> None:
    package = tmp_path / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "app.py").write_text(SCRIPT)
    (package / "__main__.py").write_text(SCRIPT)
    app = tracer_cmd("run", "-m", "mypkg.app", cwd=tmp_path)
    assert app.returncode == 0, app.stderr
    assert [s["service"] for s in spans_in(app.stdout)] == ["mypkg.app"]
    (notice,) = [line for line in app.stderr.splitlines() if line.startswith("tracer:")]
    assert "'mypkg.app'" in notice and "the module mypkg.app" in notice
    assert str(package) in notice
    # A package runs its __main__, and is named after the package.
    whole = tracer_cmd("run", "-m", "mypkg", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr
    assert [s["service"] for s in spans_in(whole.stdout)] == ["mypkg"]
    assert spool_of(app.stderr) != spool_of(whole.stderr)


def test_the_configured_name_still_wins(tmp_path: Path) -> None:
    (tmp_path / "back.py").write_text(SCRIPT)
    out = tracer_cmd("run", "back.py", cwd=tmp_path, TRACE_APP_NAME="billing")
    assert out.returncode == 0, out.stderr
    assert [s["service"] for s in spans_in(out.stdout)] == ["billing"]
