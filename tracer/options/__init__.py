"""Every configuration option, once: the table :data:`TABLE` of :class:`Option` entries.

From this table come the fields and defaults of :class:`tracer.config.Config` (its generated
block), the checks of every value (type, bounds, None, choices, or a validator function named in
the entry), the ``TRACE_*`` environment variable of every option and how its text is read, the
commented ``trace.config.py`` that ``tracer init`` writes (also the project's
``trace.config.example.py``), and the reference page ``docs/configuration.md``.

Adding an option is one :class:`Option` entry here, then ``python -m tracer.options --write``,
which regenerates the files made from the table (``--check`` says whether they are current).

The checks run when the configuration is loaded, at ``install()``; nothing here runs per request.
"""

from __future__ import annotations

import difflib
import itertools
import json
import os
import textwrap
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tracer.propagation import FORMATS


class ConfigError(ValueError):
    """The configuration is wrong; the message names where (file or variable) and the key."""


#: A validator: ``(where, key, value) -> normalised value``, raising :class:`ConfigError`.
Validator = Callable[[str, str, Any], Any]

# The spellings a boolean variable takes (any case); anything else is refused, so that a typo
# such as TRACE_DISABLED=ture cannot silently mean "no".
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")
# What a variable of an option that may be None says to mean None.
NONE_WORDS = ("none", "off", "null")

# The kinds of value an option holds (Option.type): the Python type of the Config field, the
# words the reference uses, and how a variable's text is read.
TYPES: dict[str, tuple[str, str]] = {
    "bool": ("bool", "True or False"),
    "int": ("int", "whole number"),
    "float": ("float", "number"),
    "str": ("str", "string"),
    "path": ("str", "path"),
    "strings": ("tuple[str, ...]", "list of strings"),
    "numbers": ("tuple[float, ...]", "list of numbers"),
    "headers": ("Mapping[str, tuple[str, ...]]", "dict of header name to list of strings"),
    "reporter": ("Any", "reporter (an object with send(data, callback))"),
}


@dataclass(frozen=True)
class Option:
    """One configuration option: its name, kind of value, default, limits, variable and text.

    ``type`` is a key of :data:`TYPES`. ``bounds`` are inclusive, for numbers (and the items of a
    list of numbers). ``nullable``: None is a value too. ``env`` is the option's variables
    (default ``TRACE_<NAME>``). ``choices``: the values a string, or each string of a list, may
    take. ``validator`` replaces the checks of ``type`` for options that need more. ``what``
    says what a string option must be in its error message. ``example`` is the Python text the
    config file shows (default: the default's ``repr``); ``commented`` shows it commented out.
    """

    name: str
    type: str
    default: Any
    doc: str
    section: str
    bounds: tuple[float, float] | None = None
    nullable: bool = False
    env: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    validator: Validator | None = None
    what: str = ""
    lower: bool = False
    unique: bool = False
    choice_name: str = "value"
    #: A variable of a nullable option takes the words of NONE_WORDS for None (not instrument's,
    #: where None means every instrumentation).
    env_none: bool = True
    #: What the variable takes, for the error message of an unreadable number.
    env_what: str = ""
    #: A variable holding only blanks is checked as the value (app_name), not taken as unset.
    blank_is_value: bool = False
    example: str | None = None
    commented: bool = False

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise ValueError(f"option {self.name!r}: unknown type {self.type!r}")
        if not self.env:
            object.__setattr__(self, "env", (f"TRACE_{self.name.upper()}",))

    @property
    def annotation(self) -> str:
        """The type of the :class:`~tracer.config.Config` field."""
        python = TYPES[self.type][0]
        return f"{python} | None" if self.nullable and python != "Any" else python

    @property
    def variable(self) -> str:
        """The option's (first) environment variable."""
        return self.env[0]

    def validate(self, where: str, value: Any) -> Any:
        """``value`` checked and normalised; :class:`ConfigError` naming ``where`` and the key."""
        if self.validator is not None:
            return self.validator(where, self.name, value)
        if value is None and self.nullable:
            return None
        return _CHECKS[self.type](self, where, value)

    def from_text(self, variable: str, raw: str) -> Any:
        """The Python value a variable's (stripped, non-empty) text stands for, before
        :meth:`validate` checks it."""
        if self.nullable and self.env_none and raw.lower() in NONE_WORDS:
            return None
        return _READERS[self.type](self, variable, raw)


@dataclass(frozen=True)
class Variable:
    """An environment variable tracer reads that is not an option's."""

    name: str
    doc: str


# -- checks by type -------------------------------------------------------------------------------


def _number(where: str, key: str, value: Any, kind: type, low: float, high: float) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: option {key!r} must be a number, got {value!r}")
    if kind is int and not isinstance(value, int):
        raise ConfigError(f"{where}: option {key!r} must be a whole number, got {value!r}")
    if not low <= value <= high:
        raise ConfigError(f"{where}: option {key!r} must be between {low} and {high}, got {value}")
    return kind(value)


def _str_tuple(where: str, key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple, set, frozenset)) or not all(
        isinstance(v, str) for v in value
    ):
        raise ConfigError(f"{where}: option {key!r} must be a list of strings, got {value!r}")
    return tuple(value)


def _check_bool(option: Option, where: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: option {option.name!r} must be True or False, got {value!r}")
    return value


def _check_int(option: Option, where: str, value: Any) -> Any:
    low, high = option.bounds or (-(2**63), 2**63)
    return _number(where, option.name, value, int, low, high)


def _check_float(option: Option, where: str, value: Any) -> Any:
    low, high = option.bounds or (float("-inf"), float("inf"))
    return _number(where, option.name, value, float, low, high)


def _check_str(option: Option, where: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: option {option.name!r} must be {option.what or 'a string'}")
    return value.strip()


def _check_path(option: Option, where: str, value: Any) -> str:
    if not isinstance(value, (str, os.PathLike)):
        raise ConfigError(
            f"{where}: option {option.name!r} must be {option.what or 'a path'}, got {value!r}"
        )
    return os.fspath(value)


def _check_strings(option: Option, where: str, value: Any) -> tuple[str, ...]:
    items = _str_tuple(where, option.name, value)
    if option.choices:
        bad = [item for item in items if item not in option.choices]
        if bad:
            raise ConfigError(
                f"{where}: option {option.name!r} has unknown {option.choice_name}(s) {bad};"
                " known: " + ", ".join(option.choices)
            )
    if option.lower:
        items = tuple(item.lower() for item in items)
    if option.unique:
        items = tuple(dict.fromkeys(items))
    return items


def _not_checked(option: Option, where: str, value: Any) -> Any:
    # Kinds whose every option has a validator of its own.
    return value


_CHECKS: dict[str, Callable[[Option, str, Any], Any]] = {
    "bool": _check_bool,
    "int": _check_int,
    "float": _check_float,
    "str": _check_str,
    "path": _check_path,
    "strings": _check_strings,
    "numbers": _not_checked,
    "headers": _not_checked,
    "reporter": _not_checked,
}


# -- variables' text by type ----------------------------------------------------------------------


def env_bool(variable: str, raw: str) -> bool:
    """A boolean variable's text: a word of :data:`TRUE_WORDS` or :data:`FALSE_WORDS`."""
    lowered = raw.strip().lower()
    if lowered in TRUE_WORDS:
        return True
    if lowered in FALSE_WORDS:
        return False
    raise ConfigError(
        f"{variable}: must be one of {', '.join(TRUE_WORDS)} (true) or {', '.join(FALSE_WORDS)}"
        f" (false), in any case; got {raw!r}"
    )


def _read_bool(option: Option, variable: str, raw: str) -> bool:
    return env_bool(variable, raw)


def _read_int(option: Option, variable: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        what = option.env_what or "a whole number"
        raise ConfigError(f"{variable}: must be {what}, got {raw!r}") from None


def _read_float(option: Option, variable: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        what = option.env_what or "a number"
        raise ConfigError(f"{variable}: must be {what}, got {raw!r}") from None


def _read_text(option: Option, variable: str, raw: str) -> str:
    return raw


def _read_strings(option: Option, variable: str, raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _read_numbers(option: Option, variable: str, raw: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in raw.split(",") if part.strip())
    except ValueError:
        raise ConfigError(
            f"{variable}: must be comma-separated numbers of seconds, got {raw!r}"
        ) from None


def _read_json(option: Option, variable: str, raw: str) -> Any:
    try:
        return json.loads(raw)
    except RecursionError:
        raise ConfigError(f"{variable}: the JSON is nested too deeply") from None
    except ValueError as exc:
        raise ConfigError(f"{variable}: must be a JSON object: {exc}") from None


def _read_unsupported(option: Option, variable: str, raw: str) -> Any:
    raise ConfigError(f"{variable}: option {option.name!r} cannot be read from a variable")


_READERS: dict[str, Callable[[Option, str, str], Any]] = {
    "bool": _read_bool,
    "int": _read_int,
    "float": _read_float,
    "str": _read_text,
    "path": _read_text,
    "strings": _read_strings,
    "numbers": _read_numbers,
    "headers": _read_json,
    # TRACE_REPORTER_TYPE and TRACE_REPORTER_CONFIG: tracer.config builds the reporter.
    "reporter": _read_unsupported,
}


# -- validators of the options that need more than their type --------------------------------------


def _validate_reporter(where: str, key: str, value: Any) -> Any:
    """A reporter is an object with ``send(data, callback)``. A module, a class or a function
    (one call away from a reporter) is named as such, with the fix."""
    if value is None:
        return None
    if isinstance(value, types.ModuleType):
        name = _short_name(value.__name__)
        problem = f"the module {name}"
        fix = f"{name}.create(...)" if callable(getattr(value, "create", None)) else None
    elif isinstance(value, type):
        problem = f"the class {value.__qualname__}"
        fix = f"{value.__qualname__}(...)"
    elif callable(getattr(value, "send", None)):
        return value
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


def _short_name(module: str) -> str:
    """``tracer.reporters.logstash`` as a config file spells it: ``reporters.logstash``."""
    return module.removeprefix("tracer.") if module.startswith("tracer.reporters") else module


def _validate_ignore_headers(where: str, key: str, value: Any) -> Mapping[str, tuple[str, ...]]:
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


def _validate_buckets(where: str, key: str, value: Any) -> tuple[float, ...]:
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(
            f"{where}: option 'metrics_buckets' must be a list of bucket bounds in seconds"
        )
    bounds = tuple(_number(where, key, v, float, 0.0, 86400.0) for v in value)
    if any(b >= c for b, c in itertools.pairwise(bounds)):
        raise ConfigError(f"{where}: option 'metrics_buckets' must be increasing, got {value}")
    return bounds


# Signals a snapshot must not take: uncatchable ones, and those the kernel sends for a fault in
# the running code (handled in Python, the faulting instruction runs again, forever).
UNSAFE_SIGNALS = frozenset(
    ("SIGKILL", "SIGSTOP", "SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL", "SIGTRAP", "SIGSYS", "SIGABRT")
)
# Signals the system, a terminal or a supervisor sends in normal operation (a child ending, a
# window resized, a timer, a closed pipe, a stop or reload request): each would pause the process
# for a census, and the action the sender meant would be lost or delayed.
ROUTINE_SIGNALS = frozenset(
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


def _validate_signal(where: str, key: str, value: Any) -> str | None:
    if value is None:
        return None
    import signal as signal_module

    name = value.strip().upper() if isinstance(value, str) else ""
    if name and not name.startswith("SIG"):
        name = "SIG" + name
    if name not in signal_module.Signals.__members__:
        raise ConfigError(
            f"{where}: option {key!r} must be a signal name such as 'SIGUSR2', or None,"
            f" got {value!r}"
        )
    if name in UNSAFE_SIGNALS:
        raise ConfigError(
            f"{where}: option {key!r} cannot be {name}: it cannot be caught, or it reports a"
            " fault the process must die of; use a free signal such as 'SIGUSR2'"
        )
    if name in ROUTINE_SIGNALS:
        raise ConfigError(
            f"{where}: option {key!r} cannot be {name}: it fires routinely (sent by the system,"
            " a terminal or a supervisor), and each one would pause the process for a census;"
            " use a free signal such as 'SIGUSR2' or 'SIGUSR1'"
        )
    return name


def check_instrument(where: str, names: Sequence[str], known: Mapping[str, str]) -> tuple[str, ...]:
    """The libraries of ``instrument``'s names (``known``: name -> the module it patches) that
    are not installed; a name that is not in ``known`` is a :class:`ConfigError` listing them."""
    unknown = [name for name in names if name not in known]
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(known), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"{where}: option 'instrument' has unknown instrumentation(s) {unknown}{hint};"
            f" known: {', '.join(sorted(known))}"
        )
    import importlib.util

    missing: list[str] = []
    for name in names:
        top = known[name].partition(".")[0]
        try:
            # The top-level name only: finding a submodule would import its package.
            found = importlib.util.find_spec(top) is not None
        except (ImportError, ValueError):
            found = False
        if not found and top not in missing:
            missing.append(top)
    return tuple(missing)


# -- the table ------------------------------------------------------------------------------------

SECTIONS: dict[str, str] = {
    "Service": "Who this process is and where its spans go.",
    "Requests": "Which requests and calls are traced, and what their spans record.",
    "Sampling": (
        "Which traces are kept. Services follow an inbound sampled flag; an unsampled trace is"
        " kept after all when one of its spans in this process fails or is slow."
    ),
    "Delivery": (
        "Spans are batched and sent by tracer's own threads. Large batches are cheaper: each"
        " batch wakes tracer's threads, and every wake-up takes the GIL from the application"
        " for a moment."
    ),
    "Spool": (
        "A disk spool (SQLite) for batches that could not be delivered: an outage, the memory"
        " cap, exit before delivery. Replayed when the reporter works again, also by the next"
        " process of the same service."
    ),
    "Metrics": (
        "Every request counted (sampled or not) into histograms of its duration, with process,"
        " GC, event-loop and tracer-health metrics."
    ),
    "Memory": (
        "After each full garbage collection, or every memory_interval seconds when none came,"
        " the Python heap (allocated blocks) and RSS are read on a thread of tracer's own, for"
        " the stats and leak events (tracer.memory.on) and a memory batch to the reporter."
        " Nothing runs per request; the gc callback does O(1) work."
    ),
    "Heap snapshots": (
        "tracer.memory.snapshot(): a census of the Python heap by type, the largest containers,"
        " RSS and allocation sites, written as gzip JSON for `tracer heap show|diff`. Each"
        " snapshot pauses the process for a time that grows with its heap."
    ),
    "Profiles": (
        "tracer.profile(seconds): CPU profiles of every thread, sampled from a thread of"
        " tracer's own, each sample tied to the trace, span and route its thread or task was"
        " serving; written as speedscope JSON, collapsed stacks and pprof for `tracer profile"
        " show`, and sent to the reporters. Requests pay for the span map only while a profile"
        " runs."
    ),
    "Switch": "Turning tracer off.",
}

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)

TABLE: tuple[Option, ...] = (
    # Service
    Option(
        "app_name", "str", "", section="Service", what="a non-empty string",
        blank_is_value=True, commented=True, example='"my-service"',
        doc="The service name in every span, and the name of its spool file. Default: the name"
        " of the script that runs (back for back.py) or of the module (mypkg.app for -m"
        " mypkg.app); OTEL_SERVICE_NAME (or service.name in OTEL_RESOURCE_ATTRIBUTES) when"
        " tracer's own settings name none.",
    ),
    Option(
        "reporter", "reporter", None, section="Service", validator=_validate_reporter,
        nullable=True, env=("TRACE_REPORTER_TYPE", "TRACE_REPORTER_CONFIG"), env_none=False,
        example="reporters.stdout.create()",
        doc="Where finished spans go: an object with send(data, callback), made by calling one"
        " of reporters.stdout / memory / logstash / http / otlp / zipkin .create(...), e.g."
        ' reporters.logstash.create(type="tcp", host="localhost", port=12201). The function'
        " itself (no call) or a reporter class is an error. From the environment:"
        " TRACE_REPORTER_TYPE names a reporter type and TRACE_REPORTER_CONFIG holds its options"
        " as a JSON object; else OTEL_TRACES_EXPORTER (otlp, zipkin, console, none). Default:"
        " reporters.stdout.create() (JSON lines; each trace as a tree on a terminal).",
    ),
    # Requests
    Option(
        "ignore_headers", "headers", {}, section="Requests",
        validator=_validate_ignore_headers,
        doc='Requests whose header contains one of the strings ("*": any value) get no span at'
        ' all. Header names are case-insensitive. Example: {"user-agent": ["kube-probe"]}; the'
        " variable holds it as a JSON object.",
    ),
    Option(
        "ignore_paths", "strings", (), section="Requests", example="[]",
        doc='Request paths that get no span at all, e.g. ["/healthz", "/internal/*"]: exact,'
        ' or a prefix when the entry ends with "*". An ignored request costs one check and'
        " produces nothing.",
    ),
    Option(
        "ignore_hosts", "strings", (), section="Requests", lower=True, example="[]",
        doc='Outgoing calls to these hosts ("host" or "host:port") are not traced and get no'
        " headers.",
    ),
    Option(
        "log_correlation", "bool", False, section="Requests",
        doc="Add trace_id, span_id and request_id to every logging.LogRecord (None outside a"
        ' request), so a formatter can print them: "%(request_id)s %(message)s".',
    ),
    Option(
        "propagation", "strings", ("trace", "tracecontext", "b3"), section="Requests",
        choices=tuple(FORMATS), choice_name="format", unique=True,
        example='["trace", "tracecontext", "b3"]',
        doc='Propagation formats, in the order they are read; all of them are injected. "trace"'
        " is the original's request-id / x-span-id / x-parent / x-client-send / x-must-collect;"
        ' "tracecontext" is W3C traceparent / tracestate; "b3" injects the single b3 header and'
        ' "b3multi" the X-B3-* headers (both read both). A traceparent or b3 context decides'
        " the trace over a request-id, whose value is kept as the request id.",
    ),
    Option(
        "redact_headers", "strings", (), section="Requests", lower=True, example="[]",
        doc="Header names to redact, besides Authorization, Cookie, Set-Cookie,"
        " Proxy-Authorization and X-Api-Key, which always are.",
    ),
    Option(
        "redact_query_keys", "strings", (), section="Requests", lower=True, example="[]",
        doc="Query keys whose values become REDACTED in recorded URLs, besides sig, signature,"
        " token, access_token, password, AWSAccessKeyId and X-Goog-Signature, which always do."
        " URL credentials always become REDACTED:REDACTED@.",
    ),
    Option(
        "record_headers", "bool", False, section="Requests",
        doc="Record the request headers of server spans (redacted, at most 64, each cut to 512"
        ' characters) in the tag "http.request_headers", as the original recorded all headers.',
    ),
    Option(
        "record_queries", "bool", True, section="Requests",
        doc="Record each database statement as db.query.text, its literals replaced by ?"
        " (never its parameters); False leaves the text out of every span and keeps the"
        " operation and table only.",
    ),
    Option(
        "n_plus_one_threshold", "int", 10, section="Requests", bounds=(0, 10**6), nullable=True,
        doc="N+1 queries: a server span holding more than this many database calls with the same"
        ' statement gets the tag "n_plus_one" ({"statement", "count"}, the most repeated one);'
        " 0 or None: not checked.",
    ),
    Option(
        "instrument", "strings", None, section="Requests", nullable=True, env_none=False,
        doc='Which instrumentations to enable, by name ("http.server", "wsgiref", "flask",'
        ' "django", "starlette", "fastapi", "uvicorn", "aiohttp.client", "aiohttp.server",'
        ' "requests", "httpx", "urllib3", "http.client", "sqlite3", "psycopg", "psycopg2",'
        ' "asyncpg", "redis", "threads", and those of installed packages); None: all of them.'
        " An unknown name is an error; a named library that is not installed is one warning.",
    ),
    # Sampling
    Option(
        "sample_rate", "float", None, section="Sampling", bounds=(0.0, 1.0), nullable=True,
        env_what="a number from 0 to 1",
        doc="Head sampling: a fixed fraction (0..1) of new traces, or None for the adaptive rate"
        " that keeps about sample_size traces per collect_interval seconds per process, like"
        " the original.",
    ),
    Option(
        "sample_size", "int", 60, section="Sampling", bounds=(1, 10**9),
        doc="The adaptive rate's traces per collect_interval per process.",
    ),
    Option(
        "collect_interval", "float", 120.0, section="Sampling", bounds=(0.01, 86400),
        doc="The adaptive rate's period, in seconds.",
    ),
    Option(
        "error_status", "int", 500, section="Sampling", bounds=(100, 599),
        doc="Keep-on-error: an unsampled trace is kept after all when one of its spans in this"
        " process has a status >= error_status (the original used 400), an exception or a"
        " network error. The server then answers with x-must-collect: 1 so its callers keep"
        " their side too.",
    ),
    Option(
        "slow_threshold_ms", "float", None, section="Sampling", bounds=(0.0, 86_400_000),
        nullable=True,
        doc="Keep-on-error also keeps a trace with a span that lasted longer than this, in"
        " milliseconds (None: never too slow).",
    ),
    Option(
        "max_forced_per_second", "float", 100.0, section="Sampling", bounds=(0.0, 10**9),
        doc="At most this many traces are kept by keep-on-error per second per process (0:"
        " none).",
    ),
    # Delivery
    Option(
        "batch_size", "int", 1000, section="Delivery", bounds=(1, 100_000),
        doc="Spans per batch.",
    ),
    Option(
        "flush_interval", "float", 1.0, section="Delivery", bounds=(0.001, 3600),
        doc="Seconds between batches.",
    ),
    Option(
        "max_queue", "int", 100_000, section="Delivery", bounds=(1, 10**9),
        example="100_000", doc="Spans queued at most; past it, new spans are dropped and counted.",
    ),
    Option(
        "send_timeout", "float", 10.0, section="Delivery", bounds=(0.001, 3600),
        doc="Seconds to wait for a reporter's callback.",
    ),
    Option(
        "exit_timeout", "float", 5.0, section="Delivery", bounds=(0.0, 3600),
        doc="Seconds to flush at exit (0.5 at least); what is not delivered by then is spooled.",
    ),
    Option(
        "max_queue_bytes", "int", 64 * 1024 * 1024, section="Delivery", bounds=(1024, 2**40),
        example="64 * 1024 * 1024",
        doc="Memory held by batches waiting for delivery (serialised, compressed), in bytes;"
        " past it, the oldest batches go to the spool.",
    ),
    Option(
        "max_retries", "int", 5, section="Delivery", bounds=(0, 1000),
        doc="Attempts per batch before it goes to the spool.",
    ),
    Option(
        "max_backoff", "float", 5.0, section="Delivery", bounds=(0.0, 3600),
        doc="The cap of the exponential backoff between attempts, in seconds.",
    ),
    # Spool
    Option(
        "spool", "bool", True, section="Spool",
        doc="Keep undelivered batches in the spool (False: they are dropped and counted).",
    ),
    Option(
        "spool_path", "path", None, section="Spool", nullable=True, what="a file path",
        doc="The spool file. Default: `$TRACE_SPOOL_DIR/<app_name>.sqlite`, else"
        " `$XDG_CACHE_HOME/tracer/spool/<app_name>.sqlite`, else"
        " `~/.cache/tracer/spool/<app_name>.sqlite`.",
    ),
    Option(
        "spool_max_bytes", "int", 256 * 1024 * 1024, section="Spool", bounds=(4096, 2**44),
        example="256 * 1024 * 1024", doc="The spool's cap of payload bytes.",
    ),
    Option(
        "handle_sigterm", "bool", True, section="Spool",
        doc="On SIGTERM, flush (or spool) before the handler that was there runs. Only from the"
        " main thread.",
    ),
    # Metrics
    Option(
        "metrics", "bool", True, section="Metrics", doc="Record request, runtime and tracer"
        " metrics.",
    ),
    Option(
        "metrics_port", "int", None, section="Metrics", bounds=(0, 65535), nullable=True,
        doc="A port (e.g. 9464) that serves /metrics for Prometheus on metrics_host from a"
        " thread of tracer's own; None: no port (mount tracer.metrics.aiohttp_handler(),"
        " wsgi_app() or serve_http() instead).",
    ),
    Option(
        "metrics_host", "str", "127.0.0.1", section="Metrics",
        what="a host name or address", doc="The address metrics_port listens on.",
    ),
    Option(
        "metrics_interval", "float", 60.0, section="Metrics", bounds=(0.01, 86400),
        nullable=True, doc="Seconds between metrics batches to the reporter (None: none).",
    ),
    Option(
        "metrics_buckets", "numbers", _BUCKETS, section="Metrics", validator=_validate_buckets,
        example=repr(list(_BUCKETS)),
        doc="The histogram bucket bounds, in seconds, increasing (each from 0 to 86400); the"
        " variable holds them comma-separated.",
    ),
    Option(
        "metrics_dir", "path", None, section="Metrics", nullable=True,
        what="a directory path",
        doc="A directory shared by the processes of a pre-forking server (gunicorn, os.fork"
        " workers), so that one scrape totals all of them; None: this process alone.",
    ),
    # Memory
    Option(
        "memory_watch", "bool", True, section="Memory",
        doc="Watch the heap and RSS (tracer.memory).",
    ),
    Option(
        "memory_interval", "float", 60.0, section="Memory", bounds=(0.01, 86400),
        doc="Seconds between readings when no full collection came, and at least between"
        " memory batches.",
    ),
    Option(
        "leak_observations", "int", 5, section="Memory", bounds=(2, 1000),
        doc="A leak: the heap or RSS grew at this many observations in a row, and went on"
        " growing for leak_window seconds, ending above its earlier high by 1% or more (not in"
        " the first memory_interval seconds).",
    ),
    Option(
        "leak_window", "float", 300.0, section="Memory", bounds=(0.0, 86400 * 7),
        doc="Seconds the growth must last to be a leak: it keeps a service that collects often"
        " (five collections in a fraction of a second) or in bursts from looking like one.",
    ),
    # Heap snapshots
    Option(
        "heap_snapshot_signal", "str", "SIGUSR2", section="Heap snapshots", nullable=True,
        validator=_validate_signal,
        doc="The signal that writes a snapshot (None: none); installed from the main thread"
        " only, after the handler already there, which still runs. With no handler before, the"
        " signal's default action (SIGUSR2's ends the process) no longer happens. Signals that"
        " fire routinely (SIGCHLD, SIGINT, SIGTERM, SIGHUP, SIGPIPE, SIGALRM, SIGWINCH, ...) are"
        " refused.",
    ),
    Option(
        "heap_snapshot_signal_interval", "float", 30.0, section="Heap snapshots",
        bounds=(0.0, 10**7),
        doc="Seconds after a signal snapshot ends during which the signal is dropped (one"
        " warning), so a storm of signals is one census, not one after another.",
    ),
    Option(
        "heap_snapshot_on_leak", "bool", True, section="Heap snapshots",
        doc="Write a snapshot on a leak event, at most once per heap_snapshot_min_interval.",
    ),
    Option(
        "heap_snapshot_min_interval", "float", 600.0, section="Heap snapshots",
        bounds=(0.0, 10**7), doc="Seconds between two snapshots written on leaks.",
    ),
    Option(
        "heap_snapshot_max_files", "int", 5, section="Heap snapshots", bounds=(1, 10_000),
        doc="How many of its own snapshot files tracer keeps per service in heap_snapshot_dir.",
    ),
    Option(
        "heap_snapshot_dir", "path", None, section="Heap snapshots", nullable=True,
        what="a directory path",
        doc="Where snapshots are written (None: tracer-heap in the system's temporary"
        " directory). The folder must be the process user's own and writable by nobody else.",
    ),
    # Profiles
    Option(
        "profile_signal", "str", None, section="Profiles", nullable=True,
        validator=_validate_signal,
        doc="The signal that starts a profile of profile_signal_seconds (None: none); installed"
        " from the main thread only, after the handler already there, which still runs. The"
        " same signals as heap_snapshot_signal are refused.",
    ),
    Option(
        "profile_signal_seconds", "float", 30.0, section="Profiles", bounds=(0.01, 86400),
        doc="How long a profile started by profile_signal runs, in seconds.",
    ),
    Option(
        "profile_rate", "float", 100.0, section="Profiles", bounds=(1.0, 1000.0),
        doc="Samples per second of a profile, at most: the sampler samples less often while its"
        " own CPU would pass 1% of a core.",
    ),
    Option(
        "profile_max_seconds", "float", 300.0, section="Profiles", bounds=(0.01, 86400),
        doc="The longest a profile may run, in seconds; a longer one is refused.",
    ),
    Option(
        "profile_continuous", "bool", False, section="Profiles",
        doc="Profile all the time at profile_continuous_rate, one profile_continuous_window"
        " after another (an on-demand profile ends the current window early).",
    ),
    Option(
        "profile_continuous_rate", "float", 10.0, section="Profiles", bounds=(0.1, 1000.0),
        doc="Samples per second of the continuous profile.",
    ),
    Option(
        "profile_continuous_window", "float", 60.0, section="Profiles", bounds=(1.0, 86400),
        doc="Seconds per continuous profile (each written and reported on its own).",
    ),
    Option(
        "profile_debug_endpoint", "bool", True, section="Profiles",
        doc="Serve GET /debug/profile?seconds=N on metrics_port, which starts a profile.",
    ),
    Option(
        "profile_max_files", "int", 10, section="Profiles", bounds=(1, 10_000),
        doc="How many of its own profiles (three files each) tracer keeps per service in"
        " profile_dir.",
    ),
    Option(
        "profile_dir", "path", None, section="Profiles", nullable=True,
        what="a directory path",
        doc="Where profiles are written (None: tracer-profile in the system's temporary"
        " directory). The folder must be the process user's own and writable by nobody else.",
    ),
    # Switch
    Option(
        "disabled", "bool", False, section="Switch",
        doc="Turn tracer off entirely (install() then does nothing).",
    ),
)  # fmt: skip

#: Option name -> entry.
BY_NAME: dict[str, Option] = {option.name: option for option in TABLE}

#: The environment variables tracer reads that are not an option's.
VARIABLES: tuple[Variable, ...] = (
    Variable(
        "TRACE_CONFIG_PATH",
        "The config file to read, instead of looking for trace.config.py (see above).",
    ),
    Variable(
        "TRACE_SPOOL_DIR",
        "The directory of the default spool file (`<app_name>.sqlite`); spool_path overrides it.",
    ),
    Variable(
        "TRACE_PURE_PYTHON",
        "1 (or true, yes, on) runs tracer on its pure-Python code only, without the compiled"
        " accelerator that `pip install` builds when a C compiler is there. Read when tracer is"
        " imported.",
    ),
    Variable(
        "TRACER_STRICT",
        "For tracer's own tests: an error tracer swallows (counted and logged once, never"
        " raised into the application) is also recorded, so that a test can fail on it. Any"
        " value but empty, 0 and false turns it on.",
    ),
)
_VARIABLE_NAMES = frozenset(v.name for v in VARIABLES)


def environ(name: str, env: Mapping[str, str] | None = None) -> str | None:
    """The value of the table's variable ``name`` in ``env`` (default ``os.environ``); None when
    unset or blank. A name the table does not list is a programming error (``KeyError``)."""
    if name not in _VARIABLE_NAMES:
        raise KeyError(f"{name} is not a variable of tracer.options.VARIABLES")
    value = (os.environ if env is None else env).get(name, "")
    return value if value.strip() else None


def variables() -> frozenset[str]:
    """Every environment variable of the table: the options' and the others."""
    names = {name for option in TABLE for name in option.env}
    return frozenset(names | _VARIABLE_NAMES)


# -- what is generated from the table -------------------------------------------------------------

WIDTH = 99
_GENERATED = "python -m tracer.options --write"


def _comment(text: str) -> list[str]:
    return textwrap.wrap(text, WIDTH - 2, initial_indent="# ", subsequent_indent="# ") or ["#"]


def python_text(value: Any, *, lists: bool = False) -> str:
    """``repr(value)`` with strings in double quotes, as ruff format writes them (and tuples as
    lists when ``lists``)."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, tuple):
        items = ", ".join(python_text(item, lists=lists) for item in value)
        if lists:
            return f"[{items}]"
        return f"({items},)" if len(value) == 1 else f"({items})"
    return repr(value)


def example_text(option: Option) -> str:
    """The Python text of the option's default in the config file."""
    if option.example is not None:
        return option.example
    return python_text(option.default, lists=True)


_HEADER = '''"""tracer's configuration file: every option, with its default.

`python -m tracer init` writes this file as ./trace.config.py. tracer reads the first of: the
path given to tracer.install(config_path=...), the file named by TRACE_CONFIG_PATH,
./trace.config.py in the working directory, and trace.config.py next to the entry point (the
script or module that runs as __main__, such as the one `python -m tracer run` starts). Every
module-level name is an option; imports, functions and classes under other names are ignored,
and any other unknown name is an error at install(). Every option has an environment variable
too, TRACE_ and its name in capitals (TRACE_SAMPLE_RATE=0.1; the reporter's are
TRACE_REPORTER_TYPE and TRACE_REPORTER_CONFIG), which overrides the file; keyword arguments to
tracer.install() override both. Every value below is the default. The reference of every option,
with its bounds and variable: docs/configuration.md.
"""

# The same modules as `import reporters`; this name works even in a project that has a package
# called reporters of its own.
from tracer import reporters
'''


def template() -> str:
    """The commented ``trace.config.py`` that ``tracer init`` writes (and the project's
    ``trace.config.example.py``): every option with its default and what it does."""
    lines = [_HEADER.rstrip("\n")]
    section = ""
    for option in TABLE:
        if option.section != section:
            section = option.section
            lines += ["", "", f"# -- {section} " + "-" * (WIDTH - 6 - len(section))]
            lines += _comment(SECTIONS[section])
        lines.append("")
        lines += _comment(option.doc)
        assignment = f"{option.name} = {example_text(option)}"
        lines.append(f"# {assignment}" if option.commented else assignment)
    return "\n".join(lines) + "\n"


def _shown(value: Any) -> str:
    return f"`{python_text(value, lists=True)}`"


def _bounds_text(option: Option) -> str:
    if option.name == "metrics_buckets":
        return "each from 0 to 86400, increasing"
    if option.bounds is None:
        return ""
    low, high = option.bounds
    return f"{low} to {high}"


def _variable_text(option: Option) -> str:
    names = " and ".join(f"`{name}`" for name in option.env)
    kind = option.type
    if kind == "bool":
        how = f"{', '.join(TRUE_WORDS)} or {', '.join(FALSE_WORDS)}"
    elif kind == "strings":
        how = "comma-separated"
    elif kind == "numbers":
        how = "comma-separated numbers"
    elif kind == "headers":
        how = "a JSON object"
    elif kind == "reporter":
        how = "the reporter type, and its options as a JSON object"
    else:
        how = ""
    if option.nullable and option.env_none and kind != "reporter":
        how = f"{how}; " if how else ""
        how += f"{' or '.join(NONE_WORDS)} for None"
    return f"{names} ({how})" if how else names


def reference() -> str:
    """The configuration reference, ``docs/configuration.md``: every option with its type,
    default, bounds, variable and what it does."""
    out = [
        "# Configuration reference",
        "",
        f"<!-- Generated from the table of tracer/options/__init__.py by `{_GENERATED}`;"
        " edit the table there. -->",
        "",
        "tracer reads its options from, lowest first: the defaults, the config file, environment"
        " variables, and the keyword arguments of `tracer.install()`. The config file is the"
        " first of `install(config_path=...)`, `TRACE_CONFIG_PATH`, `./trace.config.py`, and"
        " `trace.config.py` in the directory of the entry point; `python -m tracer init` writes"
        " a commented one (the same as the project's `trace.config.example.py`). A mistake in"
        " any of them is a `tracer.ConfigError` at `install()` naming the file or variable and"
        " the option.",
        "",
        "Every option has an environment variable, `TRACE_` and its name in capitals. A blank"
        " variable counts as unset; booleans take"
        f" {', '.join(TRUE_WORDS)} and {', '.join(FALSE_WORDS)} in any case; lists are"
        " comma-separated; an option that may be None takes none, off or null for it. A"
        " `TRACE_*` variable tracer does not read is one warning with the nearest name."
        " OpenTelemetry's variables are read too: `OTEL_SERVICE_NAME` and `service.name` in"
        " `OTEL_RESOURCE_ATTRIBUTES` when nothing of tracer's names the service,"
        " `OTEL_TRACES_EXPORTER` when nothing of tracer's names a reporter, and"
        " `OTEL_EXPORTER_OTLP_*` / `OTEL_EXPORTER_ZIPKIN_*` for the options the otlp and zipkin"
        " reporters are not given.",
        "",
    ]
    section = ""
    for option in TABLE:
        if option.section != section:
            section = option.section
            out += [f"## {section}", "", SECTIONS[section], ""]
        kind = TYPES[option.type][1] + (", or None" if option.nullable else "")
        facts = [f"type: {kind}", f"default: {_shown(option.default)}"]
        bounds = _bounds_text(option)
        if bounds:
            facts.append(f"bounds: {bounds}")
        if option.choices:
            facts.append("one of " + ", ".join(f"`{c}`" for c in option.choices))
        facts.append(f"variable: {_variable_text(option)}")
        out += [f"### `{option.name}`", "", option.doc, ""]
        out += [f"- {fact}" for fact in facts]
        out.append("")
    out += ["## Other variables", ""]
    for variable in VARIABLES:
        out.append(f"- `{variable.name}`: {variable.doc}")
    return "\n".join(out) + "\n"


_BEGIN = f"    # BEGIN options (written by `{_GENERATED}` from its table)"
_END = "    # END options"


def config_fields() -> str:
    """The option fields of :class:`tracer.config.Config`, as the source text between its
    markers."""
    lines = [_BEGIN]
    for option in TABLE:
        head = f"    {option.name}: {option.annotation} = "
        if isinstance(option.default, dict):
            lines.append(head + "field(default_factory=dict)")
            continue
        value = option.default
        if isinstance(value, int) and not isinstance(value, bool) and value >= 10_000:
            # As ruff format leaves them: 100_000 rather than 100000.
            lines.append(f"{head}{value:_}")
        elif isinstance(value, tuple) and len(head + python_text(value)) > WIDTH:
            lines.append(head + "(")
            lines += [f"        {python_text(item)}," for item in value]
            lines.append("    )")
        else:
            lines.append(head + python_text(value))
    lines.append(_END)
    return "\n".join(lines)


ROOT = Path(__file__).resolve().parents[2]


def generated_files() -> dict[Path, str]:
    """Each file made from the table, with the text it must hold."""
    config_py = ROOT / "tracer" / "config.py"
    text = config_py.read_text(encoding="utf-8")
    start = text.index(_BEGIN)
    end = text.index(_END, start) + len(_END)
    return {
        config_py: text[:start] + config_fields() + text[end:],
        ROOT / "trace.config.example.py": template(),
        ROOT / "docs" / "configuration.md": reference(),
    }
