"""The option table (tracer.options): the Config fields, the checks, the variables, the config
file ``tracer init`` writes and docs/configuration.md all come from it."""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import reporters
import tracer
from tests.conftest import ROOT, subprocess_env
from tracer import config, options
from tracer.config import ConfigError, load
from tracer.instrumentation import base
from tracer.instrumentation.base import Instrumentation
from tracer.options import BY_NAME, TABLE, Option

MEMORY = {"TRACE_REPORTER_TYPE": "memory"}


def test_the_files_made_from_the_table_are_current() -> None:
    for path, text in options.generated_files().items():
        assert path.read_text(encoding="utf-8") == text, (
            f"{path.name} is not what the table makes: run python -m tracer.options --write"
        )


def test_the_check_command_finds_every_file_current() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tracer.options", "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=subprocess_env(),
    )
    assert out.returncode == 0, out.stderr
    assert "found in sys.modules" not in out.stderr, out.stderr


def test_the_reference_page_documents_every_option_and_variable() -> None:
    page = (Path(ROOT) / "docs" / "configuration.md").read_text(encoding="utf-8")
    for option in TABLE:
        assert f"### `{option.name}`" in page
        for variable in option.env:
            assert f"`{variable}`" in page
    for variable in options.VARIABLES:
        assert f"`{variable.name}`" in page


def test_config_fields_are_the_table() -> None:
    fields = [f for f in dataclasses.fields(config.Config) if f.name != "source"]
    assert [f.name for f in fields] == [option.name for option in TABLE]
    defaults = config.Config()
    for option in TABLE:
        assert getattr(defaults, option.name) == option.default, option.name
    assert config._STALE is None
    assert config.OPTIONS == frozenset(BY_NAME)


def test_a_table_the_fields_do_not_follow_makes_load_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    extra = Option("brand_new", "int", 3, doc="New.", section="Switch")
    monkeypatch.setattr(options, "TABLE", (*TABLE, extra))
    monkeypatch.setattr(config, "TABLE", (*TABLE, extra))
    stale = config._stale_fields()
    assert stale is not None and "python -m tracer.options --write" in stale
    generated = options.config_fields()
    assert "    brand_new: int = 3" in generated


def test_the_example_file_loads_as_the_defaults() -> None:
    cfg = load(Path(ROOT) / "trace.config.example.py", env={})
    for option in TABLE:
        if option.name in ("app_name", "reporter"):
            continue
        assert getattr(cfg, option.name) == option.default, option.name
    assert type(cfg.reporter).__name__ == "StdoutReporter"


def test_init_writes_what_the_table_makes(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tracer", "init"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=subprocess_env(),
    )
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "trace.config.py").read_text(encoding="utf-8") == options.template()


def _sample(option: Option, tmp_path: Path) -> tuple[str, Any]:
    """A variable's text for ``option`` and the value it must give, not the default."""
    kind = option.type
    if option.name in ("heap_snapshot_signal", "profile_signal"):
        return "usr1", "SIGUSR1"
    if option.name == "propagation":
        return "b3multi, tracecontext, b3multi", ("b3multi", "tracecontext")
    if kind == "bool":
        return ("0", False) if option.default else ("yes", True)
    if kind in ("int", "float"):
        low, high = option.bounds or (0, 100)
        value = high if option.default != high else low
        return str(value), value
    if kind == "str":
        return " somewhere ", "somewhere"
    if kind == "path":
        return str(tmp_path), str(tmp_path)
    if kind == "strings":
        return "Alpha, beta", ("alpha", "beta") if option.lower else ("Alpha", "beta")
    if kind == "numbers":
        return "0.1, 0.2", (0.1, 0.2)
    if kind == "headers":
        return '{"User-Agent": ["probe"]}', {"user-agent": ("probe",)}
    raise AssertionError(f"no sample for {option.name}")


@pytest.mark.parametrize("option", [o for o in TABLE if o.name != "reporter"], ids=lambda o: o.name)
def test_every_option_has_its_trace_variable(option: Option, tmp_path: Path) -> None:
    assert option.env == (f"TRACE_{option.name.upper()}",)
    text, value = _sample(option, tmp_path)
    assert value != option.default
    cfg = load(env={**MEMORY, option.variable: text})
    got = getattr(cfg, option.name)
    assert (dict(got) if isinstance(value, dict) else got) == value
    assert "environment" in cfg.source


def test_the_reporter_keeps_its_two_variables() -> None:
    assert BY_NAME["reporter"].env == ("TRACE_REPORTER_TYPE", "TRACE_REPORTER_CONFIG")
    cfg = load(env={"TRACE_REPORTER_TYPE": "stdout", "TRACE_REPORTER_CONFIG": '{"format": "json"}'})
    assert type(cfg.reporter).__name__ == "StdoutReporter"


@pytest.mark.parametrize(
    "option", [o for o in TABLE if o.nullable and o.env_none], ids=lambda o: o.name
)
def test_a_nullable_options_variable_takes_none(option: Option) -> None:
    for word in ("none", "Off", "NULL"):
        cfg = load(env={**MEMORY, option.variable: word})
        assert getattr(cfg, option.name) is None


@pytest.mark.parametrize("option", [o for o in TABLE if o.bounds], ids=lambda o: o.name)
def test_numbers_are_held_to_their_bounds(option: Option) -> None:
    assert option.bounds is not None
    low, high = option.bounds
    for inside in (low, high):
        assert load(overrides={option.name: inside}, env=MEMORY).__dict__[option.name] == inside
    step = 1 if option.type == "int" else max(abs(high) * 1e-9, 1e-9)
    for outside in (low - step, high + step):
        with pytest.raises(ConfigError) as err:
            load(overrides={option.name: outside}, env=MEMORY)
        message = str(err.value)
        assert message.startswith("install(): ") and f"'{option.name}'" in message
        assert f"between {low} and {high}" in message, message
    if option.type == "int":
        with pytest.raises(ConfigError, match="whole number"):
            load(overrides={option.name: low + 0.5}, env=MEMORY)
    with pytest.raises(ConfigError, match=f"{option.variable}: must be"):
        load(env={**MEMORY, option.variable: "lots"})


@pytest.mark.parametrize(
    "option", [o for o in TABLE if o.type not in ("reporter",)], ids=lambda o: o.name
)
def test_none_only_where_the_table_allows_it(option: Option) -> None:
    if option.nullable:
        assert getattr(load(overrides={option.name: None}, env=MEMORY), option.name) is None
    else:
        with pytest.raises(ConfigError, match=f"'{option.name}'"):
            load(overrides={option.name: None}, env=MEMORY)


def test_choices_are_the_propagation_formats() -> None:
    from tracer.propagation import FORMATS

    assert BY_NAME["propagation"].choices == tuple(FORMATS)
    with pytest.raises(ConfigError, match=r"TRACE_PROPAGATION: option 'propagation' has unknown"):
        load(env={**MEMORY, "TRACE_PROPAGATION": "w3c"})


def test_a_bad_variable_names_the_variable_and_the_option() -> None:
    with pytest.raises(ConfigError) as err:
        load(env={**MEMORY, "TRACE_BATCH_SIZE": "0"})
    assert str(err.value).startswith("TRACE_BATCH_SIZE: option 'batch_size' must be between")
    with pytest.raises(ConfigError, match="TRACE_BATCH_SIZE: must be a whole number, got '1e3'"):
        load(env={**MEMORY, "TRACE_BATCH_SIZE": "1e3"})
    with pytest.raises(ConfigError, match="TRACE_IGNORE_HEADERS: must be a JSON object"):
        load(env={**MEMORY, "TRACE_IGNORE_HEADERS": "{user-agent"})
    with pytest.raises(ConfigError, match="TRACE_IGNORE_HEADERS: option 'ignore_headers'"):
        load(env={**MEMORY, "TRACE_IGNORE_HEADERS": '["x"]'})


def test_a_variable_beats_the_file_and_install_beats_both(tmp_path: Path) -> None:
    path = tmp_path / "c.py"
    path.write_text("batch_size = 10\n")
    assert load(path, env=MEMORY).batch_size == 10
    assert load(path, env={**MEMORY, "TRACE_BATCH_SIZE": "20"}).batch_size == 20
    assert load(path, {"batch_size": 30}, env={**MEMORY, "TRACE_BATCH_SIZE": "20"}).batch_size == 30


def test_the_variables_read_outside_config_are_in_the_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tracer.delivery.spool import default_path

    assert {"TRACE_SPOOL_DIR", "TRACE_CONFIG_PATH", "TRACER_STRICT"} <= options.variables()
    monkeypatch.setenv("TRACE_SPOOL_DIR", str(tmp_path))
    assert default_path("svc") == tmp_path / "svc.sqlite"
    # A blank one is unset, as every other variable.
    monkeypatch.setenv("TRACE_SPOOL_DIR", "  ")
    assert default_path("svc").parent != Path("  ")
    with pytest.raises(KeyError):
        options.environ("TRACE_NOT_IN_THE_TABLE")


# -- instrument: names from the instrumentation registry -------------------------------------------


@pytest.mark.parametrize(
    ("files", "env", "overrides", "where"),
    [
        ({}, {}, {"instrument": ["requests", "aiohttp.sever"]}, "install()"),
        ({"c.py": "instrument = ['aiohttp.sever']\n"}, {}, {}, "c.py"),
        ({}, {"TRACE_INSTRUMENT": "requests,aiohttp.sever"}, {}, "TRACE_INSTRUMENT"),
    ],
)
def test_an_unknown_instrumentation_is_an_error_listing_the_known_ones(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    files: dict[str, str],
    env: dict[str, str],
    overrides: dict[str, Any],
    where: str,
) -> None:
    config_path = None
    for name, text in files.items():
        config_path = tmp_path / name
        config_path.write_text(text)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as err:
        tracer.install(config_path, reporter=reporters.create("memory"), **overrides)
    message = str(err.value)
    assert where in message and "'instrument'" in message and "'aiohttp.sever'" in message
    assert "did you mean 'aiohttp.server'?" in message, message
    for known in ("aiohttp.client", "aiohttp.server", "http.server", "requests", "threads"):
        assert known in message, message
    assert tracer.stats()["created"] == 0


class _AbsentLibrary(Instrumentation):
    name = "test.absent"
    module = "tracer_test_library_that_is_not_installed.sub"

    def _install(self, module: Any) -> None:
        raise AssertionError("never imported")


def test_a_named_library_that_is_not_installed_is_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    base.register(_AbsentLibrary)
    try:
        with caplog.at_level(logging.WARNING, logger="tracer"):
            for _ in range(2):
                tracer.install(reporter=reporters.create("memory"), instrument=["test.absent"])
                tracer.uninstall()
    finally:
        base.unregister("test.absent")
    warnings = [
        r.getMessage()
        for r in caplog.records
        if "tracer_test_library_that_is_not_installed" in r.getMessage()
    ]
    assert len(warnings) == 1, warnings
    assert "install()" in warnings[0] and "'instrument'" in warnings[0]
    assert "not installed" in warnings[0]


def test_installed_libraries_draw_no_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="tracer"):
        tracer.install(reporter=reporters.create("memory"), instrument=["requests", "threads"])
    assert not [r for r in caplog.records if "not installed" in r.getMessage()]


def test_names_are_not_looked_up_without_a_registry() -> None:
    # load() alone (no install()) takes any name: the registry is above it.
    assert load(overrides={"instrument": ["anything"]}, env=MEMORY).instrument == ("anything",)
