"""Pre-forking servers: each process writes its counts to a shared directory, summed at scrape.

prometheus-client's multiprocess mode cannot hold custom collectors, and tracer's metrics are
read by one. So each process of a pre-forking server (gunicorn, ``os.fork`` workers) with
``metrics_dir`` set writes the state of its own metrics to ``tracer-metrics-<pid>.json`` there,
every :data:`WRITE_INTERVAL` seconds and when it stops; whichever process answers a scrape adds
the files of the others to its own live state. A forked child starts from zero, so nothing of
the parent is counted twice. Counters and histograms of processes that exited stay in the sum
(a counter never goes down); gauges count only processes that are alive.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from prometheus_client.core import Metric

log = logging.getLogger("tracer")

WRITE_INTERVAL = 1.0
PREFIX = "tracer-metrics-"
SUFFIX = ".json"

# Gauges for which the processes' values are combined by max, not summed.
MAX_GAUGES = frozenset(
    (
        "python_asyncio_event_loop_lag_seconds",
        "tracer_sample_probability",
        "tracer_reporter_consecutive_failures",
    )
)

Rows = list[Any]


def path_for(directory: str, pid: int) -> str:
    return os.path.join(directory, f"{PREFIX}{pid}{SUFFIX}")


def encode_samples(families: list[Metric]) -> list[dict[str, Any]]:
    """Families (counters and gauges) as JSON-able dicts."""
    return [
        {
            "name": f.name,
            "type": f.type,
            "doc": f.documentation,
            "unit": f.unit,
            "samples": [[s.name, s.labels, s.value] for s in f.samples],
        }
        for f in families
    ]


def write(directory: str, state: dict[str, Any]) -> None:
    """Replace this process's file with ``state`` (atomically: readers never see half)."""
    path = path_for(directory, os.getpid())
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(state, f, separators=(",", ":"))
    os.replace(tmp, path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def others(directory: str) -> list[tuple[dict[str, Any], bool]]:
    """The states of the other processes' files, each with whether its process is alive."""
    me = os.getpid()
    out: list[tuple[dict[str, Any], bool]] = []
    try:
        names = os.listdir(directory)
    except OSError:
        return out
    for name in names:
        if not (name.startswith(PREFIX) and name.endswith(SUFFIX)):
            continue
        try:
            pid = int(name[len(PREFIX) : -len(SUFFIX)])
        except ValueError:
            continue
        if pid == me:
            continue
        try:
            with open(os.path.join(directory, name), encoding="utf-8") as f:
                state = json.load(f)
        except (OSError, ValueError):
            continue
        if isinstance(state, dict):
            out.append((state, not state.get("exited") and _alive(pid)))
    return out


def merge_series(
    own: dict[str, list[Any]], states: list[tuple[dict[str, Any], bool]], live_only: set[str]
) -> dict[str, list[Any]]:
    """Sum series (label values -> list of ints) of the same family and labels."""
    merged: dict[str, dict[tuple[str, ...], list[int]]] = {}

    def add(series: dict[str, list[Any]]) -> None:
        for family, rows in series.items():
            table = merged.setdefault(family, {})
            for labels, values in rows:
                key = tuple(labels)
                have = table.get(key)
                if have is None:
                    table[key] = list(values)
                elif len(have) == len(values):
                    for i, v in enumerate(values):
                        have[i] += v

    add(own)
    for state, alive in states:
        series = state.get("series") or {}
        if not alive:
            series = {k: v for k, v in series.items() if k not in live_only}
        add(series)
    return {family: [(list(k), v) for k, v in table.items()] for family, table in merged.items()}


def merge_samples(
    own: list[dict[str, Any]], states: list[tuple[dict[str, Any], bool]]
) -> list[Metric]:
    """Counters summed over every process; gauges over live ones (some by max)."""
    order: list[str] = []
    heads: dict[str, dict[str, Any]] = {}
    values: dict[str, dict[tuple[str, str], float]] = {}
    labels_of: dict[tuple[str, str], dict[str, str]] = {}

    def add(families: list[dict[str, Any]], alive: bool) -> None:
        for fam in families:
            name = fam["name"]
            gauge = fam["type"] == "gauge"
            if gauge and not alive:
                continue
            if name not in heads:
                heads[name] = fam
                order.append(name)
                values[name] = {}
            table = values[name]
            for sample_name, labels, value in fam["samples"]:
                key = (sample_name, json.dumps(labels, sort_keys=True))
                labels_of[key] = labels
                if key not in table:
                    table[key] = value
                elif gauge and name in MAX_GAUGES:
                    table[key] = max(table[key], value)
                else:
                    table[key] += value

    add(own, True)
    for state, alive in states:
        add(state.get("samples") or [], alive)
    out: list[Metric] = []
    for name in order:
        head = heads[name]
        metric = Metric(name, head["doc"], head["type"], head.get("unit") or "")
        for (sample_name, _), value in values[name].items():
            metric.add_sample(sample_name, labels_of[(sample_name, _)], value)
        out.append(metric)
    return out
