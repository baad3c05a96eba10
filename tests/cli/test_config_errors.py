"""Configuration mistakes are errors, not silent fallbacks, and ``tracer run`` prints one as the
one message it is (file, key, what to do) with exit status 2, without a traceback."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.cli.conftest import spans_in, tracer_cmd
from tests.conftest import subprocess_env

APP = "import tracer\nwith tracer.span('work'):\n    pass\nprint('the app ran')\n"


@pytest.mark.parametrize(
    ("text", "fix"),
    [
        # The function instead of its result: the call was forgotten.
        (
            "from tracer import reporters\nreporter = reporters.logstash.create\n",
            "did you mean `reporters.logstash.create(...)`?",
        ),
        (
            "import reporters\nreporter = reporters.http.create\n",
            "did you mean `reporters.http.create(...)`?",
        ),
        # A reporter class instead of an instance.
        (
            "from tracer.reporters.stdout import StdoutReporter\nreporter = StdoutReporter\n",
            "did you mean `StdoutReporter(...)`?",
        ),
        (
            "class Mine:\n    def send(self, data, callback):\n        callback(None)\n"
            "reporter = Mine\n",
            "did you mean `Mine(...)`?",
        ),
        # The module.
        (
            "from tracer import reporters\nreporter = reporters.logstash\n",
            "did you mean `reporters.logstash.create(...)`?",
        ),
        # A function of one's own, not called.
        (
            "def make():\n    return None\nreporter = make\n",
            "did you mean `make(...)`?",
        ),
    ],
)
def test_a_reporter_that_is_not_a_reporter_is_an_error(tmp_path: Path, text: str, fix: str) -> None:
    (tmp_path / "trace.config.py").write_text(text)
    (tmp_path / "app.py").write_text(APP)
    out = tracer_cmd("run", "app.py", cwd=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "the app ran" not in out.stdout and not spans_in(out.stdout)
    message = out.stderr.strip()
    assert str(tmp_path / "trace.config.py") in message
    assert "'reporter'" in message and fix in message, message


def test_install_in_code_raises_for_a_reporter_class(tmp_path: Path) -> None:
    (tmp_path / "trace.config.py").write_text(
        "from tracer import reporters\nreporter = reporters.logstash.create\n"
    )
    (tmp_path / "app.py").write_text(
        textwrap.dedent(
            """
            import tracer
            try:
                tracer.install()
            except tracer.ConfigError as exc:
                print("ConfigError:", exc)
            else:
                print("installed")
            """
        )
    )
    out = subprocess.run(
        [sys.executable, "app.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env=subprocess_env(),
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ConfigError:"), out.stdout
    assert "reporters.logstash.create(...)" in out.stdout


@pytest.mark.parametrize(
    ("files", "env", "must_name"),
    [
        ({"trace.config.py": "sample_rate = 2\n"}, {}, ["trace.config.py", "'sample_rate'"]),
        (
            {"trace.config.py": "reportr = None\n"},
            {},
            ["trace.config.py", "'reportr'", "did you mean 'reporter'"],
        ),
        (
            {"trace.config.py": "x = 1\nraise RuntimeError('boom')\n"},
            {},
            ["trace.config.py", "line 2", "RuntimeError", "boom"],
        ),
        ({}, {"TRACE_CONFIG_PATH": "missing.py"}, ["TRACE_CONFIG_PATH", "missing.py"]),
        ({}, {"TRACE_REPORTER_TYPE": "carrier-pigeon"}, ["TRACE_REPORTER_TYPE", "carrier-pigeon"]),
        # Each of these escaped as a traceback, ended the process, or said the wrong thing.
        (
            {},
            {"TRACE_REPORTER_TYPE": "stdout", "TRACE_REPORTER_CONFIG": "[" * 60_000},
            ["TRACE_REPORTER_CONFIG", "nested"],
        ),
        (
            {"trace.config.py": "import sys\nsys.exit(3)\n"},
            {},
            ["trace.config.py", "line 2", "sys.exit(3)"],
        ),
        ({"conf/x": ""}, {"TRACE_CONFIG_PATH": "conf"}, ["TRACE_CONFIG_PATH", "is a directory"]),
        ({}, {"TRACE_DISABLED": "ture"}, ["TRACE_DISABLED", "'ture'", "1, true, yes, on"]),
        (
            {},
            {"TRACE_REPORTER_TYPE": "http"},
            ["TRACE_REPORTER_TYPE=http", "'url'", "TRACE_REPORTER_CONFIG"],
        ),
    ],
)
def test_a_config_error_under_run_is_one_message_and_status_2(
    tmp_path: Path, files: dict[str, str], env: dict[str, str], must_name: list[str]
) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    (tmp_path / "app.py").write_text(APP)
    out = tracer_cmd("run", "app.py", cwd=tmp_path, **env)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    (message,) = out.stderr.strip().splitlines()
    assert message.startswith("tracer: configuration error: ")
    for part in must_name:
        assert part in message, message
    assert "the app ran" not in out.stdout


def test_the_demo_does_not_read_the_projects_configuration(tmp_path: Path) -> None:
    # The demo shows tracer, whatever the directory it is started in holds.
    (tmp_path / "trace.config.py").write_text("sample_rate = 'all'\n")
    out = tracer_cmd("demo", "--requests", "1", cwd=tmp_path, timeout=120, TRACE_SAMPLE_RATE="0")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("\ntrace ") == 1, out.stdout


def test_a_misspelt_variable_is_one_warning_and_the_program_runs(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(APP)
    out = tracer_cmd(
        "run", "app.py", cwd=tmp_path, TRACE_SAMPLERATE="1", TRACE_REPORTER_TYPE="stdout"
    )
    assert out.returncode == 0, out.stderr
    assert "the app ran" in out.stdout
    warnings = [line for line in out.stderr.splitlines() if "TRACE_SAMPLERATE" in line]
    assert len(warnings) == 1, out.stderr
    assert "did you mean TRACE_SAMPLE_RATE?" in warnings[0], warnings[0]


def test_a_config_file_interrupted_by_ctrl_c_stops_the_program_as_ctrl_c_does(
    tmp_path: Path,
) -> None:
    # Not a configuration error: the user asked the program to stop.
    (tmp_path / "trace.config.py").write_text("raise KeyboardInterrupt\n")
    (tmp_path / "app.py").write_text(APP)
    out = tracer_cmd("run", "app.py", cwd=tmp_path)
    assert out.returncode != 0 and "the app ran" not in out.stdout
    assert "configuration error" not in out.stderr
    assert "KeyboardInterrupt" in out.stderr, out.stderr
