"""``tracer run command [args...]``: a command on PATH runs with tracer installed, and so does
every Python process started from ``tracer run``, with the config file it found."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.cli.conftest import spans_in, tracer_cmd

# A child of the program: is tracer installed in it, and with which service name?
CHILD = (
    "from tracer import installer; rt = installer.runtime;"
    " print('child', None if rt is None else rt.service)"
)


def test_a_command_and_the_python_processes_it_starts_are_traced(tmp_path: Path) -> None:
    (tmp_path / "trace.config.py").write_text('app_name = "from-file"\n')
    program = tmp_path / "parent.py"
    program.write_text(
        "import subprocess, sys, tracer\n"
        "from tracer import installer\n"
        "with tracer.span('parent work'):\n"
        "    pass\n"
        f"out = subprocess.run([sys.executable, '-c', {CHILD!r}], capture_output=True, text=True,"
        " cwd='/')\n"
        "print(out.stdout.strip())\n"
        "print('parent', installer.runtime.service)\n"
    )
    # The command is the interpreter itself, found by name as any command on PATH is.
    out = tracer_cmd("run", Path(sys.executable).name, str(program), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    # The child ran elsewhere (cwd /), and still read the parent's config file.
    assert "child from-file" in lines
    assert "parent from-file" in lines
    assert [s["name"] for s in spans_in(out.stdout)] == ["parent work"]


def test_a_script_run_by_tracer_run_passes_tracer_to_its_children(tmp_path: Path) -> None:
    program = tmp_path / "parent.py"
    program.write_text(
        "import subprocess, sys\n"
        f"print(subprocess.run([sys.executable, '-c', {CHILD!r}], capture_output=True,"
        " text=True).stdout.strip())\n"
    )
    out = tracer_cmd("run", str(program), cwd=tmp_path, TRACE_APP_NAME="scripted")
    assert out.returncode == 0, out.stderr
    assert "child scripted" in out.stdout.splitlines()


def test_a_configuration_mistake_stops_the_command_before_it_starts(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    out = tracer_cmd(
        "run",
        Path(sys.executable).name,
        "-c",
        f"open({str(marker)!r}, 'w')",
        cwd=tmp_path,
        TRACE_SAMPLE_RATE="lots",
    )
    assert out.returncode == 2
    assert "TRACE_SAMPLE_RATE" in out.stderr
    assert not marker.exists()
