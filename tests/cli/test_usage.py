"""The command's own name in its usage lines, and one plain message for a bad option value."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.cli.conftest import Venv, plain_install, tracer_cmd

__all__ = ["plain_install"]


def test_usage_under_python_dash_m_says_python_dash_m_tracer(tmp_path: Path) -> None:
    out = tracer_cmd("--help", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: python -m tracer "), out.stdout
    out = tracer_cmd("demo", "--help", cwd=tmp_path)
    assert out.stdout.startswith("usage: python -m tracer demo "), out.stdout


def test_usage_of_the_console_script_says_tracer(plain_install: Venv, tmp_path: Path) -> None:
    script = str(plain_install.path / "bin" / "tracer")
    for args, start in (
        (["--help"], "usage: tracer "),
        (["heap", "show", "--help"], "usage: tracer heap show "),
    ):
        out = subprocess.run(
            [script, *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
            env=plain_install.env(),
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith(start), out.stdout
        assert "python -m" not in out.stdout, out.stdout
    out = subprocess.run(
        [script, "demo", "--requests", "x"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=plain_install.env(),
    )
    assert out.returncode == 2
    assert out.stderr.splitlines()[0].startswith("usage: tracer demo "), out.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["demo", "--requests", "x"],
            "argument --requests: invalid count: 'x' (a whole number, 0 or more)",
        ),
        (
            ["demo", "--requests", "-2"],
            "argument --requests: invalid count: '-2' (a whole number, 0 or more)",
        ),
        (
            ["demo", "--requests", "1.5"],
            "argument --requests: invalid count: '1.5' (a whole number, 0 or more)",
        ),
        (
            ["heap", "show", "snapshot.json", "--top", "x"],
            "argument --top: invalid number of lines: 'x' (a whole number, 1 or more)",
        ),
        (
            ["heap", "show", "snapshot.json", "--top", "0"],
            "argument --top: invalid number of lines: '0' (a whole number, 1 or more)",
        ),
        (
            ["heap", "diff", "a.json", "b.json", "--top", "many"],
            "argument --top: invalid number of lines: 'many' (a whole number, 1 or more)",
        ),
    ],
)
def test_a_bad_option_value_is_a_usage_line_and_one_plain_error(
    tmp_path: Path, args: list[str], message: str
) -> None:
    out = tracer_cmd(*args, cwd=tmp_path)
    assert out.returncode == 2
    usage, error = out.stderr.strip().splitlines()[-2:]
    assert usage.startswith("usage: python -m tracer ") or usage.startswith(" "), out.stderr
    assert error.endswith(message), out.stderr
    assert "_count" not in out.stderr and "Traceback" not in out.stderr, out.stderr
