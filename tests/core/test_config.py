"""Configuration: the file, environment variables, and a clear error for every mistake."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
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


# Input that used to escape install() as something other than a ConfigError, or do nothing.


def test_a_deeply_nested_reporter_config_is_a_config_error() -> None:
    env = {"TRACE_REPORTER_TYPE": "stdout", "TRACE_REPORTER_CONFIG": "[" * 60_000}
    with pytest.raises(ConfigError, match="TRACE_REPORTER_CONFIG") as err:
        load(env=env)
    assert "nested" in str(err.value)


def test_a_reporter_config_number_python_refuses_is_a_config_error() -> None:
    # Python's int() refuses a number this long; json.loads raises ValueError for it.
    env = {
        "TRACE_REPORTER_TYPE": "stdout",
        "TRACE_REPORTER_CONFIG": '{"linger": ' + "9" * 5000 + "}",
    }
    with pytest.raises(ConfigError, match="TRACE_REPORTER_CONFIG"):
        load(env=env)


@pytest.mark.parametrize(
    ("text", "must_name"),
    [
        ("import sys\nsys.exit(3)\n", ["called sys.exit(3)", "line 2"]),
        ("raise SystemExit\n", ["called sys.exit()", "line 1"]),
        ("raise SystemExit('bye')\n", ["called sys.exit('bye')"]),
        ("raise GeneratorExit\n", ["raised GeneratorExit", "line 1"]),
        ("class Odd(BaseException):\n    pass\nraise Odd('x')\n", ["raised Odd", "line 3"]),
    ],
)
def test_a_config_file_that_exits_is_a_config_error(
    tmp_path: Path, text: str, must_name: list[str]
) -> None:
    path = write(tmp_path / "exits.py", text)
    with pytest.raises(ConfigError) as err:
        load(path, env={})
    message = str(err.value)
    for part in [str(path), *must_name]:
        assert part in message, message


def test_ctrl_c_while_a_config_file_runs_is_not_turned_into_a_config_error(tmp_path: Path) -> None:
    # The user pressed Ctrl-C: the program stops as it would anywhere else.
    path = write(tmp_path / "interrupted.py", "raise KeyboardInterrupt\n")
    with pytest.raises(KeyboardInterrupt):
        load(path, env={})


def test_a_config_path_naming_a_directory_says_so(tmp_path: Path) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    with pytest.raises(ConfigError) as err:
        load(env={"TRACE_CONFIG_PATH": str(folder)})
    message = str(err.value)
    assert message.startswith("TRACE_CONFIG_PATH:") and "is a directory" in message, message
    assert "not found" not in message
    with pytest.raises(ConfigError, match=r"install\(config_path=...\): .* is a directory"):
        load(folder, env={})


def test_a_config_path_naming_a_folder_with_the_file_in_it_names_the_file(tmp_path: Path) -> None:
    write(tmp_path / "trace.config.py", "app_name = 'x'\n")
    with pytest.raises(ConfigError) as err:
        load(env={"TRACE_CONFIG_PATH": str(tmp_path)})
    assert str(tmp_path / "trace.config.py") in str(err.value)


def test_a_config_path_naming_a_fifo_is_refused_without_opening_it(tmp_path: Path) -> None:
    # Opening a FIFO for reading blocks until a writer comes: install() would hang.
    fifo = tmp_path / "pipe.py"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        load(env={"TRACE_CONFIG_PATH": str(fifo)})


BOOLEAN_VARIABLES = ["TRACE_DISABLED", "TRACE_METRICS", "TRACE_MEMORY_WATCH"]


@pytest.mark.parametrize("variable", BOOLEAN_VARIABLES)
@pytest.mark.parametrize(
    ("raw", "value"),
    [
        *[(s, True) for s in ("1", "true", "TRUE", "True", "yes", "on", " on ")],
        *[(s, False) for s in ("0", "false", "FALSE", "no", "off")],
    ],
)
def test_boolean_variables_take_the_documented_spellings(
    variable: str, raw: str, value: bool
) -> None:
    key = variable.removeprefix("TRACE_").lower()
    cfg = load(env={variable: raw, "TRACE_REPORTER_TYPE": "memory"})
    assert getattr(cfg, "disabled" if key == "disabled" else key) is value


@pytest.mark.parametrize("variable", BOOLEAN_VARIABLES)
@pytest.mark.parametrize("raw", ["ture", "2", "y", "enabled", "-1", "none"])
def test_boolean_variables_refuse_other_spellings(variable: str, raw: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(env={variable: raw, "TRACE_REPORTER_TYPE": "memory"})
    message = str(err.value)
    assert message.startswith(f"{variable}:"), message
    assert repr(raw) in message
    for spelling in ("1, true, yes, on", "0, false, no, off"):
        assert spelling in message, message


@pytest.mark.parametrize("raw", ["", "  "])
def test_an_empty_boolean_variable_counts_as_unset(raw: str) -> None:
    for variable in BOOLEAN_VARIABLES:
        cfg = load(env={variable: raw, "TRACE_REPORTER_TYPE": "memory"})
        assert cfg.disabled is False and cfg.metrics is True and cfg.memory_watch is True


def test_trace_disabled_misspelt_fails_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACE_DISABLED", "ture")
    with pytest.raises(ConfigError, match="TRACE_DISABLED"):
        tracer.install(reporter=reporters.create("memory"))
    assert tracer.stats()["created"] == 0


def test_an_unknown_trace_variable_is_one_warning_with_the_nearest_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = {"TRACE_SAMPLERATE": "1", "TRACE_REPORTER_TYPE": "memory"}
    with caplog.at_level(logging.WARNING, logger="tracer"):
        cfg = load(env=env)
        load(env=env)
    assert cfg.sample_rate is None
    warnings = [r.getMessage() for r in caplog.records if "TRACE_SAMPLERATE" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "did you mean TRACE_SAMPLE_RATE?" in warnings[0], warnings[0]


def test_an_unknown_trace_variable_far_from_any_name_lists_the_known_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="tracer"):
        load(env={"TRACE_ZZZZZZZZ_QQQQ": "1", "TRACE_REPORTER_TYPE": "memory"})
    (warning,) = [r.getMessage() for r in caplog.records if "TRACE_ZZZZZZZZ_QQQQ" in r.getMessage()]
    assert "did you mean" not in warning and "TRACE_APP_NAME" in warning, warning


def test_every_option_has_a_variable_log_correlation_too(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Once ignored with a warning: every option now has its TRACE_<NAME> variable.
    with caplog.at_level(logging.WARNING, logger="tracer"):
        cfg = load(env={"TRACE_LOG_CORRELATION": "1", "TRACE_REPORTER_TYPE": "memory"})
    assert cfg.log_correlation is True
    assert not [r for r in caplog.records if "TRACE_LOG_CORRELATION" in r.getMessage()]


def _variables_tracer_reads() -> set[str]:
    """Every ``"TRACE_..."`` string literal in tracer's code and the variables of its options."""
    from tests.conftest import ROOT
    from tracer.config import ENV_OPTIONS

    names = {f"TRACE_{key.upper()}" for key in ENV_OPTIONS}
    for folder in ("tracer", "reporters"):
        for source in (Path(ROOT) / folder).rglob("*.py"):
            names.update(re.findall(r"""["'](TRACE_[A-Z0-9_]+)["']""", source.read_text()))
    return names


def test_no_variable_tracer_reads_draws_the_unknown_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:

    names = _variables_tracer_reads()
    # And those the commented config file names.
    from tracer.config import template as config_template

    template = config_template()
    names.update(re.findall(r"\bTRACE_[A-Z0-9_]*[A-Z0-9]\b", template))
    assert {"TRACE_SPOOL_DIR", "TRACE_SAMPLE_RATE", "TRACE_METRICS_PORT"} <= names
    # One name that is not tracer's, so that the test sees the warnings were looked for.
    env = dict.fromkeys([*names, "TRACE_NOT_A_THING"], "?")
    with caplog.at_level(logging.WARNING, logger="tracer"):
        with contextlib.suppress(ConfigError):
            # The values are nonsense: only the names matter here.
            load(env=env)
    unknown = [r.getMessage() for r in caplog.records if "not a tracer variable" in r.getMessage()]
    assert len(unknown) == 1 and "TRACE_NOT_A_THING" in unknown[0], unknown


def test_other_programs_variables_are_left_alone(caplog: pytest.LogCaptureFixture) -> None:
    env = {
        "TRACER_STRICT": "1",
        "OTEL_TRACES_SAMPLER": "always_on",
        "OTEL_SERVICE_NAMEE": "x",
        "TRACEBACK": "1",
        "TRACE_REPORTER_TYPE": "memory",
    }
    with caplog.at_level(logging.WARNING, logger="tracer"):
        load(env=env)
    assert not [r for r in caplog.records if "not a tracer variable" in r.getMessage()]


@pytest.mark.parametrize(
    ("rtype", "must_name"),
    [("http", ["TRACE_REPORTER_TYPE=http", "'url'", "TRACE_REPORTER_CONFIG", '{"url": '])],
)
def test_a_reporter_type_without_its_required_options_says_what_to_set(
    rtype: str, must_name: list[str]
) -> None:
    with pytest.raises(ConfigError) as err:
        load(env={"TRACE_REPORTER_TYPE": rtype})
    message = str(err.value)
    assert "positional argument" not in message, message
    for part in must_name:
        assert part in message, message


@pytest.mark.parametrize("rtype", ["stdout", "memory", "logstash", "otlp", "zipkin"])
def test_every_other_reporter_type_needs_no_options(rtype: str) -> None:
    cfg = load(env={"TRACE_REPORTER_TYPE": rtype})
    assert callable(cfg.reporter.send)
    close = getattr(cfg.reporter, "close", None)
    if callable(close):
        close()


def test_an_unknown_reporter_option_names_the_nearest_one() -> None:
    env = {"TRACE_REPORTER_TYPE": "http", "TRACE_REPORTER_CONFIG": '{"urll": "http://x/"}'}
    with pytest.raises(ConfigError) as err:
        load(env=env)
    message = str(err.value)
    assert "unexpected keyword" not in message, message
    assert "'urll'" in message and "did you mean 'url'?" in message, message


@pytest.mark.parametrize(
    ("rtype", "options"),
    [
        ("logstash", {"type": 5}),
        ("logstash", {"ca_file": "/nonexistent/ca.pem"}),
        ("http", {"url": "http://127.0.0.1:1/", "headers": "x"}),
        ("otlp", {"headers": [1]}),
        ("zipkin", {"headers": True}),
    ],
)
def test_a_reporter_option_of_the_wrong_kind_is_a_config_error(
    rtype: str, options: dict[str, object]
) -> None:
    env = {"TRACE_REPORTER_TYPE": rtype, "TRACE_REPORTER_CONFIG": json.dumps(options)}
    with pytest.raises(ConfigError, match=f"TRACE_REPORTER_CONFIG: {rtype} reporter: "):
        load(env=env)


def test_a_reporter_refusing_an_option_is_named_once() -> None:
    env = {"TRACE_REPORTER_TYPE": "http", "TRACE_REPORTER_CONFIG": '{"url": 5}'}
    with pytest.raises(ConfigError) as err:
        load(env=env)
    message = str(err.value)
    assert message.startswith("TRACE_REPORTER_CONFIG: http reporter: "), message
    assert message.count("http reporter") == 1, message


def test_a_blank_app_name_variable_is_refused() -> None:
    with pytest.raises(ConfigError, match="TRACE_APP_NAME"):
        load(env={"TRACE_APP_NAME": "   ", "TRACE_REPORTER_TYPE": "memory"})
