"""trace.config.py and TRACE_* environment variables -> one frozen :class:`Config`.

Precedence, lowest first: defaults, the config file, environment variables, ``install()``
keyword overrides. Every mistake is reported at ``install()`` as a :class:`ConfigError` whose
message names the file or variable and the key.

The config file is the first of: ``install(config_path=...)``, ``TRACE_CONFIG_PATH``,
``./trace.config.py``, and ``trace.config.py`` in the directory of the entry point (the script or
module running as ``__main__``, or the one ``tracer run`` starts). The entry point also gives the
default service name.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import itertools
import json
import logging
import os
import runpy
import stat
import sys
import traceback
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FILE_NAME = "trace.config.py"

log = logging.getLogger("tracer")


class ConfigError(ValueError):
    """The configuration is wrong; the message names where (file or variable) and the key."""


@dataclass(frozen=True)
class Config:
    """Every option, with its default. See trace.config.example.py for what each one does."""

    app_name: str = ""
    reporter: Any = None
    ignore_headers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    ignore_hosts: tuple[str, ...] = ()
    ignore_paths: tuple[str, ...] = ()
    log_correlation: bool = False
    propagation: tuple[str, ...] = ("trace", "tracecontext", "b3")
    sample_rate: float | None = None
    sample_size: int = 60
    collect_interval: float = 120.0
    slow_threshold_ms: float | None = None
    error_status: int = 500
    max_forced_per_second: float = 100.0
    redact_headers: tuple[str, ...] = ()
    redact_query_keys: tuple[str, ...] = ()
    record_headers: bool = False
    instrument: tuple[str, ...] | None = None
    batch_size: int = 1000
    flush_interval: float = 1.0
    max_queue: int = 100_000
    send_timeout: float = 10.0
    exit_timeout: float = 5.0
    max_queue_bytes: int = 64 * 1024 * 1024
    max_backoff: float = 5.0
    max_retries: int = 5
    spool: bool = True
    spool_path: str | None = None
    spool_max_bytes: int = 256 * 1024 * 1024
    handle_sigterm: bool = True
    # Metrics (tracer.metrics): request, runtime and tracer-health metrics.
    metrics: bool = True
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    metrics_interval: float | None = 60.0
    # A directory shared by the processes of a pre-forking server (None: this process alone).
    metrics_dir: str | None = None
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
    # Memory (tracer.memory): memwatch-style events and heap snapshots.
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
    disabled: bool = False
    source: str = "defaults"


OPTIONS = frozenset(f.name for f in dataclasses.fields(Config) if f.name != "source")


# The spellings a boolean variable takes (any case); anything else is refused, so that a typo
# such as TRACE_DISABLED=ture cannot silently mean "no".
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


def _env_bool(variable: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in TRUE_WORDS:
        return True
    if lowered in FALSE_WORDS:
        return False
    raise ConfigError(
        f"{variable}: must be one of {', '.join(TRUE_WORDS)} (true) or {', '.join(FALSE_WORDS)}"
        f" (false), in any case; got {raw!r}"
    )


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


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if env.get("TRACE_APP_NAME"):
        options["app_name"] = _validate("TRACE_APP_NAME", "app_name", env["TRACE_APP_NAME"])
    if env.get("TRACE_DISABLED", "").strip():
        options["disabled"] = _env_bool("TRACE_DISABLED", env["TRACE_DISABLED"])
    rate = env.get("TRACE_SAMPLE_RATE", "").strip()
    if rate:
        try:
            value = float(rate)
        except ValueError:
            raise ConfigError(
                f"TRACE_SAMPLE_RATE: must be a number from 0 to 1, got {rate!r}"
            ) from None
        options["sample_rate"] = _validate("TRACE_SAMPLE_RATE", "sample_rate", value)
    for key in ENV_OPTIONS:
        variable = f"TRACE_{key.upper()}"
        raw = env.get(variable, "").strip()
        if raw:
            options[key] = _validate(variable, key, _env_value(variable, key, raw))
    rtype = env.get("TRACE_REPORTER_TYPE", "").strip()
    rconf = env.get("TRACE_REPORTER_CONFIG", "").strip()
    if rconf and not rtype:
        raise ConfigError("TRACE_REPORTER_CONFIG is set but TRACE_REPORTER_TYPE is not")
    if rtype:
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
        options["reporter"] = _create_reporter(rtype, reporter_options, env)
    return options


# Options that are read from ``TRACE_<OPTION>`` (``TRACE_METRICS_PORT=9464``) as well.
ENV_OPTIONS = (
    "metrics",
    "metrics_port",
    "metrics_host",
    "metrics_interval",
    "metrics_buckets",
    "metrics_dir",
    "memory_watch",
    "memory_interval",
    "leak_observations",
    "leak_window",
    "heap_snapshot_signal",
    "heap_snapshot_signal_interval",
    "heap_snapshot_on_leak",
    "heap_snapshot_min_interval",
    "heap_snapshot_max_files",
    "heap_snapshot_dir",
)
# Options a variable may set to None with "none" (or "off").
_NULLABLE = frozenset(
    (
        "metrics_port",
        "metrics_interval",
        "metrics_dir",
        "heap_snapshot_signal",
        "heap_snapshot_dir",
    )
)


# The TRACE_* variables read outside the options above (TRACE_SPOOL_DIR by the spool). A variable
# read anywhere in tracer must be known here, or setting it draws the "not a tracer variable"
# warning; tests/core/test_config.py checks every "TRACE_..." string in the code.
_OTHER_VARIABLES = frozenset(
    (
        "TRACE_CONFIG_PATH",
        "TRACE_APP_NAME",
        "TRACE_DISABLED",
        "TRACE_SAMPLE_RATE",
        "TRACE_REPORTER_TYPE",
        "TRACE_REPORTER_CONFIG",
        "TRACE_SPOOL_DIR",
    )
)
_warned_variables: set[str] = set()


def known_variables() -> frozenset[str]:
    """Every ``TRACE_*`` environment variable tracer reads."""
    return _OTHER_VARIABLES | {f"TRACE_{key.upper()}" for key in ENV_OPTIONS}


def _warn_unknown_variables(env: Mapping[str, str]) -> None:
    """One warning per process for each ``TRACE_*`` variable tracer does not read: a misspelt
    one (``TRACE_SAMPLERATE``) would otherwise do nothing and say nothing. A warning and not an
    error, since another program may use the prefix too."""
    known = known_variables()
    for name in sorted(env):
        if not name.startswith("TRACE_") or name in known or name in _warned_variables:
            continue
        _warned_variables.add(name)
        key = name[6:].lower()
        if key in OPTIONS:
            log.warning(
                "tracer: %s is ignored: the option %r has no variable; set it in %s or install()",
                name,
                key,
                FILE_NAME,
            )
            continue
        # Compared without the prefix they all share, which would make every name look close.
        close = difflib.get_close_matches(name[6:], sorted(k[6:] for k in known), n=1)
        hint = (
            f"did you mean TRACE_{close[0]}?"
            if close
            else "tracer reads " + ", ".join(sorted(known))
        )
        log.warning("tracer: %s is not a tracer variable and is ignored (%s)", name, hint)


def _env_value(variable: str, key: str, raw: str) -> Any:
    """The Python value of an environment variable's text for ``key``; _validate checks it."""
    if key in _NULLABLE and raw.lower() in ("none", "off", "null"):
        return None
    default = getattr(Config, key, None) if key != "metrics_buckets" else ()
    if isinstance(default, bool):
        return _env_bool(variable, raw)
    if key == "metrics_buckets":
        try:
            return tuple(float(part) for part in raw.split(",") if part.strip())
        except ValueError:
            raise ConfigError(
                f"{variable}: must be comma-separated numbers of seconds, got {raw!r}"
            ) from None
    if key in _NUMBERS:
        kind = _NUMBERS[key][0]
        try:
            return kind(raw) if kind is int else float(raw)
        except ValueError:
            what = "a whole number" if kind is int else "a number"
            raise ConfigError(f"{variable}: must be {what}, got {raw!r}") from None
    return raw


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


def _str_tuple(where: str, key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple, set, frozenset)) or not all(
        isinstance(v, str) for v in value
    ):
        raise ConfigError(f"{where}: option {key!r} must be a list of strings, got {value!r}")
    return tuple(value)


def _number(where: str, key: str, value: Any, kind: type, low: float, high: float) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: option {key!r} must be a number, got {value!r}")
    if kind is int and not isinstance(value, int):
        raise ConfigError(f"{where}: option {key!r} must be a whole number, got {value!r}")
    if not low <= value <= high:
        raise ConfigError(f"{where}: option {key!r} must be between {low} and {high}, got {value}")
    return kind(value)


_NUMBERS: dict[str, tuple[type, float, float]] = {
    "sample_size": (int, 1, 10**9),
    "collect_interval": (float, 0.01, 86400),
    "error_status": (int, 100, 599),
    "max_forced_per_second": (float, 0.0, 10**9),
    "batch_size": (int, 1, 100_000),
    "flush_interval": (float, 0.001, 3600),
    "max_queue": (int, 1, 10**9),
    "send_timeout": (float, 0.001, 3600),
    "exit_timeout": (float, 0.0, 3600),
    "max_queue_bytes": (int, 1024, 2**40),
    "max_backoff": (float, 0.0, 3600),
    "max_retries": (int, 0, 1000),
    "spool_max_bytes": (int, 4096, 2**44),
    "metrics_port": (int, 0, 65535),
    "metrics_interval": (float, 0.01, 86400),
    "memory_interval": (float, 0.01, 86400),
    "leak_observations": (int, 2, 1000),
    "leak_window": (float, 0.0, 86400 * 7),
    "heap_snapshot_signal_interval": (float, 0.0, 10**7),
    "heap_snapshot_min_interval": (float, 0.0, 10**7),
    "heap_snapshot_max_files": (int, 1, 10_000),
}
# Signals a snapshot must not take: uncatchable ones, and those the kernel sends for a fault in
# the running code (handled in Python, the faulting instruction runs again, forever).
_UNSAFE_SIGNALS = frozenset(
    ("SIGKILL", "SIGSTOP", "SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL", "SIGTRAP", "SIGSYS", "SIGABRT")
)
# Signals the system, a terminal or a supervisor sends in normal operation (a child ending, a
# window resized, a timer, a closed pipe, a stop or reload request): each would pause the process
# for a census, and the action the sender meant would be lost or delayed.
_ROUTINE_SIGNALS = frozenset(
    (
        "SIGCHLD",
        "SIGCLD",
        "SIGINT",
        "SIGTERM",
        "SIGQUIT",
        "SIGHUP",
        "SIGPIPE",
        "SIGALRM",
        "SIGVTALRM",
        "SIGPROF",
        "SIGWINCH",
        "SIGURG",
        "SIGIO",
        "SIGPOLL",
        "SIGCONT",
        "SIGTSTP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGXCPU",
        "SIGXFSZ",
    )
)
# Number options for which None is a value too (off).
_OPTIONAL_NUMBERS = frozenset(("metrics_port", "metrics_interval"))


def _short_name(module: str) -> str:
    """``tracer.reporters.logstash`` as a config file spells it: ``reporters.logstash``."""
    return module.removeprefix("tracer.") if module.startswith("tracer.reporters") else module


def _check_reporter(where: str, value: Any) -> None:
    """A reporter is an object with ``send(data, callback)``. A module, a class or a function
    (one call away from a reporter) is named as such, with the fix."""
    if isinstance(value, types.ModuleType):
        name = _short_name(value.__name__)
        problem = f"the module {name}"
        fix = f"{name}.create(...)" if callable(getattr(value, "create", None)) else None
    elif isinstance(value, type):
        problem = f"the class {value.__qualname__}"
        fix = f"{value.__qualname__}(...)"
    elif callable(getattr(value, "send", None)):
        return
    elif callable(value):
        spelled = getattr(value, "__qualname__", None)
        module = getattr(value, "__module__", None)
        if isinstance(spelled, str) and isinstance(module, str):
            if module.startswith("tracer.reporters"):
                spelled = f"{_short_name(module)}.{spelled}"
            problem = f"the function {spelled}"
            fix = f"{spelled}(...)"
        else:
            problem = f"a callable {type(value).__name__}"
            fix = None
    else:
        raise ConfigError(
            f"{where}: option 'reporter' must have a send(data, callback) method,"
            f" got {type(value).__name__}"
        )
    hint = f"did you mean `{fix}`?" if fix else "call it to make the reporter"
    raise ConfigError(
        f"{where}: option 'reporter' is {problem}, not a reporter (an object with a"
        f" send(data, callback) method); {hint}"
    )


def _validate(where: str, key: str, value: Any) -> Any:
    """Check one option's type and normalise it; ``where`` names its origin for errors."""
    if key == "app_name":
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{where}: option 'app_name' must be a non-empty string")
        return value.strip()
    if key == "reporter":
        if value is None:
            return None
        _check_reporter(where, value)
        return value
    if key == "ignore_headers":
        if not isinstance(value, Mapping):
            raise ConfigError(
                f"{where}: option 'ignore_headers' must be a dict like"
                ' {"user-agent": ["kube-probe"]}'
            )
        out: dict[str, tuple[str, ...]] = {}
        for name, values in value.items():
            if not isinstance(name, str):
                raise ConfigError(f"{where}: option 'ignore_headers' has a non-string key")
            out[name.lower()] = _str_tuple(where, f"ignore_headers[{name!r}]", values)
        return types.MappingProxyType(out)
    if key in ("redact_headers", "redact_query_keys"):
        return tuple(v.lower() for v in _str_tuple(where, key, value))
    if key in ("ignore_hosts", "ignore_paths", "propagation"):
        items = _str_tuple(where, key, value)
        if key == "propagation":
            from tracer.propagation import FORMATS

            bad = [p for p in items if p not in FORMATS]
            if bad:
                raise ConfigError(
                    f"{where}: option 'propagation' has unknown format(s) {bad}; known: "
                    + ", ".join(FORMATS)
                )
            items = tuple(dict.fromkeys(items))
        if key == "ignore_hosts":
            items = tuple(i.lower() for i in items)
        return items
    if key == "instrument":
        return None if value is None else _str_tuple(where, key, value)
    if key == "spool_path":
        if value is None:
            return None
        if not isinstance(value, (str, os.PathLike)):
            raise ConfigError(f"{where}: option 'spool_path' must be a file path, got {value!r}")
        return os.fspath(value)
    if key in _OPTIONAL_NUMBERS and value is None:
        return None
    if key == "metrics_host":
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{where}: option 'metrics_host' must be a host name or address")
        return value.strip()
    if key == "metrics_buckets":
        if not isinstance(value, (list, tuple)) or not value:
            raise ConfigError(
                f"{where}: option 'metrics_buckets' must be a list of bucket bounds in seconds"
            )
        bounds = tuple(_number(where, key, v, float, 0.0, 86400.0) for v in value)
        if any(b >= c for b, c in itertools.pairwise(bounds)):
            raise ConfigError(f"{where}: option 'metrics_buckets' must be increasing, got {value}")
        return bounds
    if key == "heap_snapshot_signal":
        if value is None:
            return None
        import signal as signal_module

        name = value.strip().upper() if isinstance(value, str) else ""
        if name and not name.startswith("SIG"):
            name = "SIG" + name
        if name not in signal_module.Signals.__members__:
            raise ConfigError(
                f"{where}: option 'heap_snapshot_signal' must be a signal name such as"
                f" 'SIGUSR2', or None, got {value!r}"
            )
        if name in _UNSAFE_SIGNALS:
            raise ConfigError(
                f"{where}: option 'heap_snapshot_signal' cannot be {name}: it cannot be caught,"
                " or it reports a fault the process must die of; use a free signal such as"
                " 'SIGUSR2'"
            )
        if name in _ROUTINE_SIGNALS:
            raise ConfigError(
                f"{where}: option 'heap_snapshot_signal' cannot be {name}: it fires routinely"
                " (sent by the system, a terminal or a supervisor), and each one would pause the"
                " process for a census; use a free signal such as 'SIGUSR2' or 'SIGUSR1'"
            )
        return name
    if key in ("heap_snapshot_dir", "metrics_dir"):
        if value is None:
            return None
        if not isinstance(value, (str, os.PathLike)):
            raise ConfigError(f"{where}: option {key!r} must be a directory path, got {value!r}")
        return os.fspath(value)
    if key in (
        "log_correlation",
        "disabled",
        "spool",
        "handle_sigterm",
        "record_headers",
        "metrics",
        "memory_watch",
        "heap_snapshot_on_leak",
    ):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: option {key!r} must be True or False, got {value!r}")
        return value
    if key == "sample_rate":
        if value is None:
            return None
        return _number(where, key, value, float, 0.0, 1.0)
    if key == "slow_threshold_ms":
        if value is None:
            return None
        return _number(where, key, value, float, 0.0, 86_400_000)
    if key in _NUMBERS:
        kind, low, high = _NUMBERS[key]
        return _number(where, key, value, kind, low, high)
    raise _unknown(where, key)


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
) -> Config:
    """Build the Config; raises ConfigError naming the file or variable and the key."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    sources: list[str] = []
    _warn_unknown_variables(env)
    path = find_file(config_path, env)
    if path is not None:
        where = str(path)
        for key, value in _read_file(path).items():
            values[key] = _validate(where, key, value)
        sources.append(where)
    env_values = _from_env(env)
    for key, value in env_values.items():
        values[key] = value
    if env_values:
        sources.append("environment")
    for key, value in (overrides or {}).items():
        if key not in OPTIONS:
            raise _unknown("install()", key)
        values[key] = _validate("install()", key, value)
    if overrides:
        sources.append("install()")
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


TEMPLATE = "trace.config.template"


def template() -> str:
    """The commented ``trace.config.py`` that ``tracer init`` writes: every option with its
    default (the same text as the project's ``trace.config.example.py``)."""
    from importlib import resources

    return resources.files("tracer").joinpath(TEMPLATE).read_text(encoding="utf-8")
