"""trace.config.py and TRACE_* environment variables -> one frozen :class:`Config`.

Precedence, lowest first: defaults, the config file, environment variables, ``install()``
keyword overrides. Every mistake is reported at ``install()`` as a :class:`ConfigError` whose
message names the file or variable and the key.

The config file is the first of: ``install(config_path=...)``, ``TRACE_CONFIG_PATH``,
``./trace.config.py``, and ``trace.config.py`` in the directory of the entry point (the script or
module running as ``__main__``, or the one ``tracer run`` starts). The entry point also gives the
default service name.

What each option is, how it is checked and which variable sets it is the table of
:mod:`tracer.options`; this module reads the file and the environment and builds the reporter.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import json
import logging
import os
import runpy
import stat
import sys
import traceback
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tracer import options as options_module
from tracer.options import (
    _GENERATED,
    BY_NAME,
    FALSE_WORDS,
    TABLE,
    TRUE_WORDS,
    ConfigError,
    check_instrument,
    env_bool,
    variables,
)

__all__ = [
    "FALSE_WORDS",
    "FILE_NAME",
    "OPTIONS",
    "TRUE_WORDS",
    "Config",
    "ConfigError",
    "EntryPoint",
    "load",
    "template",
]

FILE_NAME = "trace.config.py"

log = logging.getLogger("tracer")


@dataclass(frozen=True)
class Config:
    """Every option, with its default: the fields come from the table of
    :mod:`tracer.options`, which says what each one does (so does trace.config.example.py)."""

    # BEGIN options (written by `python -m tracer.options --write` from its table)
    app_name: str = ""
    reporter: Any = None
    ignore_headers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    ignore_paths: tuple[str, ...] = ()
    ignore_hosts: tuple[str, ...] = ()
    log_correlation: bool = False
    propagation: tuple[str, ...] = ("trace", "tracecontext", "b3")
    redact_headers: tuple[str, ...] = ()
    redact_query_keys: tuple[str, ...] = ()
    record_headers: bool = False
    record_queries: bool = True
    n_plus_one_threshold: int | None = 10
    instrument: tuple[str, ...] | None = None
    sample_rate: float | None = None
    sample_size: int = 60
    collect_interval: float = 120.0
    error_status: int = 500
    slow_threshold_ms: float | None = None
    max_forced_per_second: float = 100.0
    batch_size: int = 1000
    flush_interval: float = 1.0
    max_queue: int = 100_000
    send_timeout: float = 10.0
    exit_timeout: float = 5.0
    max_queue_bytes: int = 67_108_864
    max_retries: int = 5
    max_backoff: float = 5.0
    spool: bool = True
    spool_path: str | None = None
    spool_max_bytes: int = 268_435_456
    handle_sigterm: bool = True
    metrics: bool = True
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    metrics_interval: float | None = 60.0
    metrics_buckets: tuple[float, ...] = (
        0.005,
        0.01,
        0.025,
        0.05,
        0.075,
        0.1,
        0.25,
        0.5,
        0.75,
        1.0,
        2.5,
        5.0,
        7.5,
        10.0,
    )
    metrics_dir: str | None = None
    memory_watch: bool = True
    memory_interval: float = 60.0
    leak_observations: int = 5
    leak_window: float = 300.0
    heap_snapshot_signal: str | None = "SIGUSR2"
    heap_snapshot_signal_interval: float = 30.0
    heap_snapshot_on_leak: bool = True
    heap_snapshot_min_interval: float = 600.0
    heap_snapshot_max_files: int = 5
    heap_snapshot_dir: str | None = None
    profile_signal: str | None = None
    profile_signal_seconds: float = 30.0
    profile_rate: float = 100.0
    profile_max_seconds: float = 300.0
    profile_continuous: bool = False
    profile_continuous_rate: float = 10.0
    profile_continuous_window: float = 60.0
    profile_debug_endpoint: bool = True
    profile_max_files: int = 10
    profile_dir: str | None = None
    disabled: bool = False
    # END options
    source: str = "defaults"


def _stale_fields() -> str | None:
    """What differs between the fields above and the option table, if anything. They are
    written by ``python -m tracer.options --write``; an option added to the table without
    regenerating them makes :func:`load` fail at once (not at import: the generator imports
    this module)."""
    names = [f.name for f in dataclasses.fields(Config) if f.name != "source"]
    if names != [option.name for option in TABLE]:
        return f"tracer.config.Config's fields are not the option table's; run {_GENERATED}"
    for option in TABLE:
        if getattr(Config, option.name, {}) != option.default:
            return f"Config.{option.name}'s default is not the option table's; run {_GENERATED}"
    return None


_STALE = _stale_fields()

OPTIONS = frozenset(BY_NAME)
# The options read from ``TRACE_<OPTION>`` (every one but the reporter, whose variables are
# TRACE_REPORTER_TYPE and TRACE_REPORTER_CONFIG).
ENV_OPTIONS = tuple(
    option.name for option in TABLE if option.env == (f"TRACE_{option.name.upper()}",)
)

# The old private spellings of what tracer.options now holds.
_env_bool = env_bool
_str_tuple = options_module._str_tuple
_number = options_module._number


def _unknown(where: str, key: str) -> ConfigError:
    close = difflib.get_close_matches(key, sorted(OPTIONS), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    known = ", ".join(sorted(OPTIONS))
    return ConfigError(f"{where}: unknown option {key!r}{hint}; known options: {known}")


def _read_file(path: Path) -> dict[str, Any]:
    """Run a config file and collect its options (module-level names)."""
    where = str(path)
    try:
        namespace = runpy.run_path(where, run_name="trace_config")
    except SyntaxError as exc:
        raise ConfigError(f"{where}: syntax error at line {exc.lineno}: {exc.msg}") from exc
    except KeyboardInterrupt:
        # Ctrl-C while the file runs is the user stopping the program, not a mistake in the file.
        raise
    except SystemExit as exc:
        # install() must never end the program: a file that exits is a file that is wrong.
        line = _line_in(where, exc)
        at = f" at line {line}" if line else ""
        code = "" if exc.code is None else repr(exc.code)
        raise ConfigError(f"{where}: called sys.exit({code}){at}") from exc
    except BaseException as exc:
        line = _line_in(where, exc)
        at = f" at line {line}" if line else ""
        raise ConfigError(f"{where}: raised {type(exc).__name__}{at}: {exc}") from exc
    options: dict[str, Any] = {}
    for key, value in namespace.items():
        if key.startswith("_"):
            continue
        # An option's name is always an option, whatever its value: `reporter = SomeClass` or
        # `reporter = reporters.logstash.create` (no call) must be an error, not skipped.
        if key in OPTIONS:
            options[key] = value
            continue
        # Imports, helper functions and reporter classes defined in the file are not options.
        if isinstance(
            value, (types.ModuleType, type, types.FunctionType, types.BuiltinFunctionType)
        ):
            continue
        raise _unknown(where, key)
    return options


def _line_in(where: str, exc: BaseException) -> int | None:
    """The line of the config file where ``exc`` was raised (its innermost frame there)."""
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == where:
            line = frame.lineno
    return line


def _from_env(env: Mapping[str, str]) -> dict[str, tuple[str, Any]]:
    """The options the environment sets: key -> (the variable, the checked value)."""
    found: dict[str, tuple[str, Any]] = {}
    for option in TABLE:
        if option.name == "reporter":
            continue
        variable = option.variable
        raw = env.get(variable, "")
        if not raw.strip():
            # Blank is unset, except where blanks are a value to refuse (TRACE_APP_NAME="  ").
            if not (raw and option.blank_is_value):
                continue
        else:
            raw = raw.strip()
        found[option.name] = (variable, option.validate(variable, option.from_text(variable, raw)))
    reporter = _reporter_from_env(env)
    if reporter is not None:
        found["reporter"] = ("TRACE_REPORTER_TYPE", reporter)
    return found


def _reporter_from_env(env: Mapping[str, str]) -> Any:
    """The reporter TRACE_REPORTER_TYPE and TRACE_REPORTER_CONFIG make, or None."""
    rtype = env.get("TRACE_REPORTER_TYPE", "").strip()
    rconf = env.get("TRACE_REPORTER_CONFIG", "").strip()
    if rconf and not rtype:
        raise ConfigError("TRACE_REPORTER_CONFIG is set but TRACE_REPORTER_TYPE is not")
    if not rtype:
        return None
    reporter_options: Any = {}
    if rconf:
        try:
            reporter_options = json.loads(rconf)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"TRACE_REPORTER_CONFIG: invalid JSON at line {exc.lineno} column {exc.colno}:"
                f" {exc.msg}"
            ) from exc
        except RecursionError:
            raise ConfigError(
                "TRACE_REPORTER_CONFIG: the JSON is nested too deeply; it must be a JSON"
                " object of reporter options"
            ) from None
        except ValueError as exc:
            # Valid JSON Python cannot hold, such as an integer of thousands of digits.
            raise ConfigError(f"TRACE_REPORTER_CONFIG: unusable JSON: {exc}") from None
        if not isinstance(reporter_options, dict):
            raise ConfigError("TRACE_REPORTER_CONFIG: must be a JSON object of options")
    return _create_reporter(rtype, reporter_options, env)


_warned_variables: set[str] = set()


def known_variables() -> frozenset[str]:
    """Every ``TRACE_*`` environment variable tracer reads (the options' and the others of
    :data:`tracer.options.VARIABLES`)."""
    return frozenset(name for name in variables() if name.startswith("TRACE_"))


def _warn_unknown_variables(env: Mapping[str, str]) -> None:
    """One warning per process for each ``TRACE_*`` variable tracer does not read: a misspelt
    one (``TRACE_SAMPLERATE``) would otherwise do nothing and say nothing. A warning and not an
    error, since another program may use the prefix too."""
    known = known_variables()
    for name in sorted(env):
        if not name.startswith("TRACE_") or name in known or name in _warned_variables:
            continue
        _warned_variables.add(name)
        # Compared without the prefix they all share, which would make every name look close.
        close = difflib.get_close_matches(name[6:], sorted(k[6:] for k in known), n=1)
        hint = (
            f"did you mean TRACE_{close[0]}?"
            if close
            else "tracer reads " + ", ".join(sorted(known))
        )
        log.warning("tracer: %s is not a tracer variable and is ignored (%s)", name, hint)


def _create_reporter(rtype: str, options: dict[str, Any], env: Mapping[str, str]) -> Any:
    from tracer import reporters

    if rtype not in reporters.BUILTIN:
        known = ", ".join(sorted(reporters.BUILTIN))
        raise ConfigError(f"TRACE_REPORTER_TYPE: unknown reporter type {rtype!r} (known: {known})")
    _check_reporter_options(rtype, options)
    if rtype in _OTEL_REPORTERS:
        # They read OTEL_EXPORTER_* for the options not given: from the environment load() reads.
        options = {"env": env, **options}
    try:
        return reporters.create(rtype, **options)
    except TypeError as exc:
        raise ConfigError(f"TRACE_REPORTER_CONFIG: {rtype} reporter: {exc}") from exc
    except ValueError as exc:
        if rtype in _OTEL_REPORTERS and "OTEL_" in str(exc):
            # The message names the OTEL_* variable that is wrong.
            raise ConfigError(str(exc)) from exc
        # The reporters' own messages often start with their name already.
        said = str(exc).removeprefix(f"{rtype} reporter: ")
        raise ConfigError(f"TRACE_REPORTER_CONFIG: {rtype} reporter: {said}") from exc
    except OSError as exc:
        # A file option (ca_file, ...) that cannot be read.
        raise ConfigError(f"TRACE_REPORTER_CONFIG: {rtype} reporter: {exc}") from exc
    except Exception as exc:
        # The options come from JSON: an option of another kind than the reporter expects
        # (a number where it takes a string) fails inside it, and is still the variable's fault.
        raise ConfigError(
            f"TRACE_REPORTER_CONFIG: {rtype} reporter: an option has a value of the wrong kind"
            f" ({type(exc).__name__}: {exc})"
        ) from exc


def _check_reporter_options(rtype: str, options: Mapping[str, Any]) -> None:
    """Name an unknown option, or a required one not given, in the variables' terms rather than
    as Python's ``create() missing 1 required positional argument``."""
    from tracer import reporters

    create = getattr(importlib.import_module(reporters.BUILTIN[rtype]), "create", None)
    try:
        parameters = list(inspect.signature(create).parameters.values()) if create else []
    except (TypeError, ValueError):
        return
    if not parameters or any(p.kind is p.VAR_KEYWORD for p in parameters):
        return
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    # `env` is how load() hands the environment to the reporters that read OTEL_* variables.
    names = [p.name for p in parameters if p.kind in named and p.name != "env"]
    for key in options:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"TRACE_REPORTER_CONFIG: {rtype} reporter: no option {key!r}{hint};"
                f" its options: {', '.join(names)}"
            )
    for p in parameters:
        if p.kind in named and p.default is p.empty and p.name not in options:
            raise ConfigError(
                f"TRACE_REPORTER_TYPE={rtype} needs the option {p.name!r}: set"
                f" TRACE_REPORTER_CONFIG to a JSON object with it, e.g."
                f' TRACE_REPORTER_CONFIG=\'{{"{p.name}": "..."}}\''
            )


# The reporters that read OpenTelemetry's OTEL_EXPORTER_* variables themselves.
_OTEL_REPORTERS = ("otlp", "zipkin")
# OTEL_TRACES_EXPORTER's values -> tracer's reporter types ("none" records and propagates, and
# sends nothing: _NoExport).
_OTEL_EXPORTERS = {"otlp": "otlp", "zipkin": "zipkin", "console": "stdout"}


class _NoExport:
    """``OTEL_TRACES_EXPORTER=none``: spans are recorded and headers propagated, as OpenTelemetry
    does with no exporter, and each batch is acknowledged without being sent anywhere."""

    def send(self, data: Any, callback: Any) -> None:
        callback(None)

    def __repr__(self) -> str:
        return "<no exporter (OTEL_TRACES_EXPORTER=none)>"


def _otel_reporter(env: Mapping[str, str]) -> Any:
    """The reporter ``OTEL_TRACES_EXPORTER`` chooses, or None when it is unset."""
    from tracer.reporters import otel_env

    try:
        name = otel_env.traces_exporter(env)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if name is None:
        return None
    if name == "none":
        return _NoExport()
    try:
        return _create_reporter(_OTEL_EXPORTERS[name], {}, env)
    except ConfigError as exc:
        raise ConfigError(
            str(exc).replace("TRACE_REPORTER_CONFIG", f"OTEL_TRACES_EXPORTER={name}", 1)
        ) from None


def _otel_service_name(env: Mapping[str, str]) -> tuple[str, str] | None:
    from tracer.reporters import otel_env

    try:
        return otel_env.service_name(env)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _validate(where: str, key: str, value: Any) -> Any:
    """Check one option's value and normalise it (see :meth:`tracer.options.Option.validate`);
    ``where`` names its origin for errors."""
    option = BY_NAME.get(key)
    if option is None:
        raise _unknown(where, key)
    return option.validate(where, value)


@dataclass(frozen=True)
class EntryPoint:
    """The program tracer runs in: where the default service name comes from, and the last
    directory searched for the config file."""

    name: str
    #: How to say where the name came from, e.g. "the script back.py".
    what: str
    directory: Path | None = None


_entry_point: EntryPoint | None = None


def set_entry_point(entry: EntryPoint | None) -> None:
    """Name the program about to run as ``__main__`` (``tracer run`` calls it before
    ``install()``, which would otherwise see tracer's own ``__main__``)."""
    global _entry_point
    _entry_point = entry


def script_entry_point(script: str | os.PathLike[str]) -> EntryPoint:
    """The entry point of ``python script.py``: named after the file without its extension."""
    path = Path(os.path.abspath(script))
    return EntryPoint(path.stem or "python", f"the script {path.name}", path.parent)


def module_entry_point(name: str, origin: str | None) -> EntryPoint:
    """The entry point of ``python -m name``: named after the module (a package's
    ``pkg.__main__`` after the package), found next to its file."""
    short = name.removesuffix(".__main__")
    directory = Path(origin).parent if origin and os.path.isabs(origin) else None
    return EntryPoint(short, f"the module {short}", directory)


def entry_point() -> EntryPoint:
    """The program running now: the one :func:`set_entry_point` named, else ``__main__``."""
    if _entry_point is not None:
        return _entry_point
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    name = getattr(spec, "name", None)
    if isinstance(name, str) and name:
        origin = getattr(spec, "origin", None)
        return module_entry_point(name, origin if isinstance(origin, str) else None)
    file = getattr(main, "__file__", None)
    if isinstance(file, str) and file:
        return script_entry_point(file)
    return EntryPoint("python", "the interpreter (no script)")


def default_app_name() -> str:
    """The entry point's name: the script's without its extension (``back`` for back.py), or
    the module's (``mypkg.app`` for ``-m mypkg.app``), as the original used the package name."""
    return entry_point().name


def search_path() -> list[Path]:
    """Where ``trace.config.py`` is looked for when no file is named: the working directory,
    then the entry point's directory."""
    places = [Path.cwd()]
    directory = entry_point().directory
    if directory is not None and directory.resolve() != places[0].resolve():
        places.append(directory)
    return places


def find_file(config_path: str | os.PathLike[str] | None, env: Mapping[str, str]) -> Path | None:
    """The config file to read: the argument, else TRACE_CONFIG_PATH, else the first
    trace.config.py of :func:`search_path`."""
    if config_path is not None:
        return _named_file("install(config_path=...)", Path(config_path))
    named = env.get("TRACE_CONFIG_PATH")
    if named:
        return _named_file("TRACE_CONFIG_PATH", Path(named))
    for directory in search_path():
        path = directory / FILE_NAME
        if path.is_file():
            return path
    return None


def _named_file(where: str, path: Path) -> Path:
    """The config file ``where`` names, checked to be one: a directory, a FIFO (which would
    block install() when opened) or a device is refused for what it is."""
    shown = str(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ConfigError(f"{where}: config file {shown!r} not found") from None
    except OSError as exc:
        raise ConfigError(f"{where}: config file {shown!r}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        inside = path / FILE_NAME
        hint = f"did you mean {str(inside)!r}?" if inside.is_file() else "name the file itself"
        raise ConfigError(f"{where}: {shown!r} is a directory, not a config file; {hint}")
    if not stat.S_ISREG(mode):
        raise ConfigError(f"{where}: {shown!r} is not a regular file (a config file is a .py file)")
    return path.absolute()


def _notice(app_name: str) -> str:
    """The one line said when nothing configures tracer: the name used and where it looked."""
    places = " or ".join(str(d) for d in search_path())
    return (
        f"tracer: no {FILE_NAME} in {places}; reporting to stdout as service {app_name!r}"
        f" (named after {entry_point().what}). Set app_name and reporter in a {FILE_NAME}"
        " (`python -m tracer init` writes a commented one), TRACE_CONFIG_PATH, or TRACE_APP_NAME"
        " and TRACE_REPORTER_TYPE."
    )


def load(
    config_path: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    *,
    instrumentations: Callable[[], Mapping[str, str]] | None = None,
) -> Config:
    """Build the Config; raises ConfigError naming the file or variable and the key.

    ``instrumentations`` returns the instrumentations there are (name -> the module each
    patches; ``install()`` gives it): an unknown name in ``instrument`` is then an error, and a
    library it names that is not installed one warning. It is called only when ``instrument``
    names some; without it, the names are not checked.
    """
    if _STALE is not None:
        raise RuntimeError(_STALE)
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    # Where each option's value came from, for errors found after the value itself was checked.
    origins: dict[str, str] = {}
    sources: list[str] = []
    _warn_unknown_variables(env)
    path = find_file(config_path, env)
    if path is not None:
        where = str(path)
        for key, value in _read_file(path).items():
            values[key] = _validate(where, key, value)
            origins[key] = where
        sources.append(where)
    env_values = _from_env(env)
    for key, (variable, value) in env_values.items():
        values[key] = value
        origins[key] = variable
    if env_values:
        sources.append("environment")
    for key, value in (overrides or {}).items():
        if key not in OPTIONS:
            raise _unknown("install()", key)
        values[key] = _validate("install()", key, value)
        origins[key] = "install()"
    if overrides:
        sources.append("install()")
    if instrumentations is not None and values.get("instrument") is not None:
        _check_instrument(origins["instrument"], values["instrument"], instrumentations())
    if "app_name" not in values:
        # OpenTelemetry's service name, when none of tracer's own names it.
        otel_name = _otel_service_name(env)
        if otel_name is not None:
            values["app_name"] = _validate(otel_name[1], "app_name", otel_name[0])
            if "environment" not in sources:
                sources.append("environment")
    values.setdefault("app_name", default_app_name())
    if values.get("reporter") is None:
        # No reporter of tracer's: OpenTelemetry's exporter choice, if the service has one.
        values["reporter"] = _otel_reporter(env)
        if values["reporter"] is not None and "environment" not in sources:
            sources.append("environment")
    if values.get("reporter") is None:
        from tracer import reporters

        values["reporter"] = reporters.create("stdout")
        if not sources:
            print(_notice(values["app_name"]), file=sys.stderr)
    return Config(source=", ".join(sources) or "defaults", **values)


# Libraries named in `instrument` that are not installed and were warned about already.
_warned_libraries: set[str] = set()


def _check_instrument(where: str, names: tuple[str, ...], known: Mapping[str, str]) -> None:
    missing = [m for m in check_instrument(where, names, known) if m not in _warned_libraries]
    if missing:
        _warned_libraries.update(missing)
        log.warning(
            "tracer: %s: option 'instrument' names instrumentations of %s, which %s not"
            " installed; they do nothing until %s",
            where,
            ", ".join(missing),
            "is" if len(missing) == 1 else "are",
            "it is" if len(missing) == 1 else "they are",
        )


def template() -> str:
    """The commented ``trace.config.py`` that ``tracer init`` writes: every option with its
    default (the same text as the project's ``trace.config.example.py``), made from the table
    of :mod:`tracer.options`."""
    return options_module.template()
