"""OpenTelemetry's environment variables, read as its specification says, for services that are
already configured for the OpenTelemetry SDK.

* OTLP exporter: ``OTEL_EXPORTER_OTLP_TRACES_<X>`` (for metrics batches
  ``OTEL_EXPORTER_OTLP_METRICS_<X>``) wins over ``OTEL_EXPORTER_OTLP_<X>`` for ``ENDPOINT``,
  ``HEADERS``, ``TIMEOUT``, ``COMPRESSION``, ``PROTOCOL``, ``CERTIFICATE``,
  ``CLIENT_CERTIFICATE`` and ``CLIENT_KEY``. The generic ``OTEL_EXPORTER_OTLP_ENDPOINT`` is a
  base URL that gets ``v1/traces`` (``v1/metrics``) appended; the signal's own one is used as
  it is. Headers are
  ``key=value`` pairs separated by commas, values percent-decoded; timeouts are milliseconds.
* Zipkin exporter: ``OTEL_EXPORTER_ZIPKIN_ENDPOINT`` and ``OTEL_EXPORTER_ZIPKIN_TIMEOUT``.
* Resource: ``OTEL_SERVICE_NAME``, else ``service.name`` in ``OTEL_RESOURCE_ATTRIBUTES``
  (``key=value`` pairs like the headers).
* ``OTEL_TRACES_EXPORTER``: ``otlp``, ``zipkin``, ``console`` or ``none``.

An empty variable counts as unset, as the specification says. A value that cannot be read is a
``ValueError`` naming the variable: tracer refuses a wrong configuration instead of guessing.
Nothing here imports tracer's other modules.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from typing import Any

__all__ = [
    "DEFAULT_OTLP_ENDPOINT",
    "DEFAULT_OTLP_METRICS_ENDPOINT",
    "DEFAULT_ZIPKIN_ENDPOINT",
    "SIGNALS",
    "TRACES_EXPORTERS",
    "get",
    "otlp_settings",
    "parse_key_values",
    "resource_attributes",
    "service_name",
    "traces_exporter",
    "zipkin_settings",
]

DEFAULT_OTLP_ENDPOINT = "http://localhost:4318/v1/traces"
DEFAULT_OTLP_METRICS_ENDPOINT = "http://localhost:4318/v1/metrics"
#: The OTLP signals tracer sends, as their variables name them.
SIGNALS = ("traces", "metrics")
DEFAULT_ZIPKIN_ENDPOINT = "http://localhost:9411/api/v2/spans"
TRACES_EXPORTERS = ("otlp", "zipkin", "console", "none")
_OTLP_OPTIONS = (
    "ENDPOINT",
    "HEADERS",
    "TIMEOUT",
    "COMPRESSION",
    "PROTOCOL",
    "CERTIFICATE",
    "CLIENT_CERTIFICATE",
    "CLIENT_KEY",
)


def get(env: Mapping[str, str], name: str) -> str | None:
    """``env[name]`` stripped, or None when it is unset or empty."""
    value = env.get(name)
    if value is None:
        return None
    value = value.strip()
    return value or None


def parse_key_values(text: str, where: str) -> dict[str, str]:
    """``key1=value1,key2=value2`` (W3C Baggage without properties) as a dict; keys and values
    are percent-decoded and trimmed. A pair without ``=`` or with an empty key is a ValueError
    naming ``where``."""
    out: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key = urllib.parse.unquote(key.strip())
        if not sep or not key:
            raise ValueError(f"{where}: expected key=value pairs separated by commas, got {item!r}")
        out[key] = urllib.parse.unquote(value.strip())
    return out


def _timeout_seconds(text: str, where: str) -> float:
    try:
        millis = float(text)
    except ValueError:
        raise ValueError(f"{where}: must be a number of milliseconds, got {text!r}") from None
    if not millis > 0 or millis != millis or millis == float("inf"):
        raise ValueError(f"{where}: must be a positive number of milliseconds, got {text!r}")
    return millis / 1000.0


def _signal_endpoint(base: str, signal: str = "traces") -> str:
    # The specification's rule: the base URL's path gets "v1/<signal>", one slash between them.
    parts = urllib.parse.urlsplit(base)
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    return urllib.parse.urlunsplit(parts._replace(path=path + f"v1/{signal}"))


def otlp_settings(env: Mapping[str, str], signal: str = "traces") -> dict[str, Any]:
    """The OTLP exporter's options the environment sets for ``signal`` (``"traces"`` or
    ``"metrics"``), as :func:`tracer.reporters.otlp.create` takes them, each with the variable
    it came from: ``{option: (value, variable)}``."""
    if signal not in SIGNALS:
        raise ValueError(f"unknown OTLP signal {signal!r}")
    found: dict[str, Any] = {}
    for option in _OTLP_OPTIONS:
        specific = f"OTEL_EXPORTER_OTLP_{signal.upper()}_{option}"
        generic = f"OTEL_EXPORTER_OTLP_{option}"
        value = get(env, specific)
        where = specific
        if value is None:
            value = get(env, generic)
            where = generic
        if value is None:
            continue
        if option == "ENDPOINT":
            endpoint = value if where == specific else _signal_endpoint(value, signal)
            found["endpoint"] = (endpoint, where)
        elif option == "HEADERS":
            found["headers"] = (parse_key_values(value, where), where)
        elif option == "TIMEOUT":
            found["timeout"] = (_timeout_seconds(value, where), where)
        elif option == "COMPRESSION":
            found["compression"] = (value.lower(), where)
        elif option == "PROTOCOL":
            found["protocol"] = (value.lower(), where)
        elif option == "CERTIFICATE":
            found["ca_file"] = (value, where)
        elif option == "CLIENT_CERTIFICATE":
            found["client_cert"] = (value, where)
        else:
            found["client_key"] = (value, where)
    return found


def zipkin_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """``{"url": (value, variable), "timeout": (seconds, variable)}`` for what is set."""
    found: dict[str, Any] = {}
    url = get(env, "OTEL_EXPORTER_ZIPKIN_ENDPOINT")
    if url is not None:
        found["url"] = (url, "OTEL_EXPORTER_ZIPKIN_ENDPOINT")
    timeout = get(env, "OTEL_EXPORTER_ZIPKIN_TIMEOUT")
    if timeout is not None:
        found["timeout"] = (
            _timeout_seconds(timeout, "OTEL_EXPORTER_ZIPKIN_TIMEOUT"),
            "OTEL_EXPORTER_ZIPKIN_TIMEOUT",
        )
    return found


def resource_attributes(env: Mapping[str, str]) -> dict[str, str]:
    """``OTEL_RESOURCE_ATTRIBUTES`` as a dict (empty when unset)."""
    text = get(env, "OTEL_RESOURCE_ATTRIBUTES")
    if text is None:
        return {}
    return parse_key_values(text, "OTEL_RESOURCE_ATTRIBUTES")


def service_name(env: Mapping[str, str]) -> tuple[str, str] | None:
    """``(name, variable)``: ``OTEL_SERVICE_NAME``, else ``service.name`` of
    ``OTEL_RESOURCE_ATTRIBUTES``, else None."""
    name = get(env, "OTEL_SERVICE_NAME")
    if name is not None:
        return name, "OTEL_SERVICE_NAME"
    named = resource_attributes(env).get("service.name", "").strip()
    if named:
        return named, "OTEL_RESOURCE_ATTRIBUTES"
    return None


def traces_exporter(env: Mapping[str, str]) -> str | None:
    """``OTEL_TRACES_EXPORTER``'s one exporter, lowercased, or None when unset.

    Several exporters (``otlp,console``) are refused: tracer sends each span to one reporter, so
    that delivered means one thing.
    """
    value = get(env, "OTEL_TRACES_EXPORTER")
    if value is None:
        return None
    names = [n.strip().lower() for n in value.split(",") if n.strip()]
    if len(names) != 1 or names[0] not in TRACES_EXPORTERS:
        known = ", ".join(TRACES_EXPORTERS)
        raise ValueError(
            f"OTEL_TRACES_EXPORTER: expected one of {known}, got {value!r}"
            + (" (tracer sends spans to one exporter)" if len(names) > 1 else "")
        )
    return names[0]
