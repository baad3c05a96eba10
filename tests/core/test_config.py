"""Configuration: the file, environment variables, and a clear error for every mistake."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import reporters
import tracer
from reporters.memory import MemoryReporter
from tests.conftest import subprocess_env
from tracer.config import ConfigError, default_app_name, load


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_config_file_in_working_directory(tmp_path: Path) -> None:
    write(
        tmp_path / "trace.config.py",
        "import reporters\n"
        "app_name = 'from-file'\n"
        "reporter = reporters.memory.create()\n"
        "ignore_headers = {'User-Agent': ['kube-probe']}\n"
        "log_correlation = True\n",
    )
    cfg = load(env={})
    assert cfg.app_name == "from-file"
    assert isinstance(cfg.reporter, MemoryReporter)
    assert dict(cfg.ignore_headers) == {"user-agent": ("kube-probe",)}
    assert cfg.log_correlation is True
    assert str(tmp_path / "trace.config.py") in cfg.source


def test_custom_reporter_class_in_config_file(tmp_path: Path) -> None:
    path = write(
        tmp_path / "custom.py",
        "class Mine:\n"
        "    def send(self, data, callback):\n"
        "        callback(None)\n"
        "def helper():\n"
        "    return 'x'\n"
        "reporter = Mine()\n",
    )
    cfg = load(path, env={})
    assert type(cfg.reporter).__name__ == "Mine"


def test_precedence_file_then_env_then_overrides(tmp_path: Path) -> None:
    path = write(tmp_path / "c.py", "app_name = 'file'\n")
    assert load(path, env={}).app_name == "file"
    assert load(path, env={"TRACE_APP_NAME": "env"}).app_name == "env"
    assert load(path, {"app_name": "kw"}, env={"TRACE_APP_NAME": "env"}).app_name == "kw"


def test_reporter_from_environment() -> None:
    env = {"TRACE_REPORTER_TYPE": "stdout", "TRACE_REPORTER_CONFIG": '{"format": "pretty"}'}
    cfg = load(env=env)
    assert type(cfg.reporter).__name__ == "StdoutReporter"
    assert cfg.reporter.format == "pretty"


def test_disabled_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import http.server

    original = http.server.BaseHTTPRequestHandler.__dict__["parse_request"]
    monkeypatch.setenv("TRACE_DISABLED", "1")
    tracer.install(reporter=reporters.create("memory"))
    assert http.server.BaseHTTPRequestHandler.__dict__["parse_request"] is original


@pytest.mark.parametrize(
    ("files", "env", "overrides", "must_name"),
    [
        ({}, {"TRACE_CONFIG_PATH": "{tmp}/missing.py"}, {}, ["TRACE_CONFIG_PATH", "missing.py"]),
        ({"bad.py": "app_name = 'x'\nreporter = (\n"}, {}, {}, ["bad.py", "syntax error"]),
        ({"bad.py": "reporter = object()\n"}, {}, {}, ["bad.py", "'reporter'", "send"]),
        (
            {"bad.py": "reportr = None\n"},
            {},
            {},
            ["bad.py", "'reportr'", "did you mean 'reporter'"],
        ),
        ({"bad.py": "ignore_headers = ['x']\n"}, {}, {}, ["bad.py", "'ignore_headers'"]),
        ({"bad.py": "sample_rate = 2\n"}, {}, {}, ["bad.py", "'sample_rate'"]),
        ({"bad.py": "raise RuntimeError('boom')\n"}, {}, {}, ["bad.py", "boom"]),
        (
            {},
            {"TRACE_REPORTER_TYPE": "stdout", "TRACE_REPORTER_CONFIG": "{not json"},
            {},
            ["TRACE_REPORTER_CONFIG", "invalid JSON"],
        ),
        (
            {},
            {"TRACE_REPORTER_TYPE": "carrier-pigeon"},
            {},
            ["TRACE_REPORTER_TYPE", "carrier-pigeon"],
        ),
        (
            {},
            {"TRACE_REPORTER_TYPE": "stdout", "TRACE_REPORTER_CONFIG": '{"colour": 1}'},
            {},
            ["TRACE_REPORTER_CONFIG", "colour"],
        ),
        ({}, {"TRACE_REPORTER_CONFIG": "{}"}, {}, ["TRACE_REPORTER_TYPE"]),
        ({}, {}, {"no_such_option": 1}, ["install()", "'no_such_option'"]),
        ({}, {}, {"reporter": 42}, ["install()", "'reporter'"]),
    ],
)
def test_bad_config_fails_at_install_naming_file_and_key(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    files: dict[str, str],
    env: dict[str, str],
    overrides: dict[str, object],
    must_name: list[str],
) -> None:
    config_path = None
    for name, text in files.items():
        config_path = write(tmp_path / name, text)
    for key, value in env.items():
        monkeypatch.setenv(key, value.replace("{tmp}", str(tmp_path)))
    with pytest.raises(ConfigError) as err:
        tracer.install(config_path, **overrides)
    message = str(err.value)
    for part in must_name:
        assert part in message, message
    assert tracer.stats()["created"] == 0


def test_no_config_prints_one_hint_and_uses_stdout(tmp_path: Path) -> None:
    script = write(
        tmp_path / "myapp.py",
        "import tracer, json\n"
        "tracer.install()\n"
        "from tracer import installer\n"
        "rt = installer.runtime\n"
        "print(json.dumps([rt.service, type(rt.config.reporter).__name__]))\n",
    )
    out = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=subprocess_env(),
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == '["myapp", "StdoutReporter"]'
    hint = [line for line in out.stderr.splitlines() if line.startswith("tracer:")]
    assert len(hint) == 1 and "trace.config.py" in hint[0]


def test_example_config_loads_and_documents_every_option() -> None:
    from tests.conftest import ROOT
    from tracer.config import OPTIONS

    example = Path(ROOT) / "trace.config.example.py"
    cfg = load(example, env={})
    # app_name is left commented out: a copied file must not give every service one name.
    assert cfg.app_name == default_app_name()
    text = example.read_text()
    missing = [
        name
        for name in sorted(OPTIONS)
        if f"\n{name} = " not in text and f"\n# {name} = " not in text
    ]
    assert not missing, f"trace.config.example.py does not document {missing}"
