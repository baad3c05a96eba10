"""Metrics batches to reporters, every ``metrics_interval`` seconds, through the pipeline.

One thread of tracer's own reads the metrics registry through prometheus-client's public
interface (``registry.collect()``: metric families and their samples), compares it with what it
read at the last batch, and hands ``runtime.pipeline.submit_report("metrics", body)`` a plain
dict: the interval's requests per minute by status class, response-time percentiles per route,
CPU, RSS, garbage collection and event-loop lag, and the registry's cumulative state (for the
OTLP reporter, whose metrics are cumulative). docs/metrics-reports.md describes the body, field
by field; :func:`build_body` makes it from two :func:`snapshot` results.

Nothing here runs on the request path: the registry is read only on this thread. ``stop()``
asks the thread for one final batch of the partial interval (bounded by a join timeout), also at
interpreter exit, once a first batch went out: a process that ends within its first interval
sends none. A forked child starts a new thread whose first batch counts only the child's
own work (see :meth:`_Schedule.rebase_after_fork`).
"""

from __future__ import annotations

import atexit
import bisect
import itertools
import math
import threading
import time
from collections.abc import Mapping
from typing import Any

from tracer import context, safety

__all__ = [
    "SCHEMA_VERSION",
    "Snapshot",
    "after_fork_in_child",
    "build_body",
    "quantile",
    "snapshot",
    "start",
    "stop",
]

#: Changes when a field of the body changes meaning or goes away (fields may be added).
SCHEMA_VERSION = 1

SERVER_DURATION = "http_server_request_duration_seconds"
CLIENT_DURATION = "http_client_request_duration_seconds"
SERVER_ACTIVE = "http_server_active_requests"
CPU_SECONDS = "process_cpu_seconds"
RSS_BYTES = "process_resident_memory_bytes"
GC_COLLECTIONS = "python_gc_collections"
GC_PAUSES = "python_gc_pause_seconds"
LOOP_LAG = "python_asyncio_event_loop_lag_seconds"
THREADS = "python_threads"
STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx", "other")
#: The labels a row of ``server.routes`` / ``client.targets`` is keyed by, and its fields.
SERVER_GROUP = (("http_request_method", "method"), ("http_route", "route"))
CLIENT_GROUP = (
    ("http_request_method", "method"),
    ("server_address", "server_address"),
    ("server_port", "server_port"),
)
QUANTILES = (("p50_ms", 0.5), ("p95_ms", 0.95), ("p99_ms", 0.99))
#: At most this many routes (and client targets) per batch, the busiest first.
MAX_ROUTES = 200
#: How long stop() waits for the final batch (it only reads the registry and queues a dict).
_STOP_JOIN = 2.0

# One series: (family name, sorted label pairs).
Key = tuple[str, tuple[tuple[str, str], ...]]


class Histogram:
    """One histogram series at one moment: bucket upper bounds (the finite ones), cumulative
    counts per bound plus the +Inf one, sum, and its creation time (epoch seconds) if known."""

    __slots__ = ("bounds", "counts", "created", "sum")

    def __init__(self) -> None:
        self.bounds: list[float] = []
        self.counts: list[float] = []
        self.sum = 0.0
        self.created: float | None = None

    @property
    def count(self) -> float:
        return self.counts[-1] if self.counts else 0.0


class Snapshot:
    """What the registry held at ``time`` (epoch seconds): histograms, counters and gauges by
    series, and each family's help text and unit."""

    __slots__ = ("counters", "created", "gauges", "help", "histograms", "time")

    def __init__(self, at: float) -> None:
        self.time = at
        self.histograms: dict[Key, Histogram] = {}
        self.counters: dict[Key, float] = {}
        self.created: dict[Key, float] = {}
        self.gauges: dict[Key, float] = {}
        self.help: dict[str, tuple[str, str]] = {}


def _labels(labels: Mapping[str, str], drop: str = "") -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, str(v)) for k, v in labels.items() if k != drop))


def _bound(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.inf


def snapshot(registry: Any, at: float | None = None) -> Snapshot:
    """Read ``registry`` (anything with prometheus-client's ``collect()``) into a Snapshot."""
    snap = Snapshot(time.time() if at is None else at)
    for family in registry.collect():
        name = family.name
        kind = family.type
        snap.help[name] = (str(family.documentation or ""), str(family.unit or ""))
        if kind == "histogram":
            series: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
            for sample in family.samples:
                sname = sample.name
                if sname == name + "_bucket":
                    pairs = _labels(sample.labels, "le")
                    le = _bound(sample.labels.get("le", "+Inf"))
                    series.setdefault(pairs, []).append((le, float(sample.value)))
                    continue
                pairs = _labels(sample.labels)
                hist = snap.histograms.get((name, pairs))
                if hist is None:
                    hist = snap.histograms[(name, pairs)] = Histogram()
                if sname == name + "_sum":
                    hist.sum = float(sample.value)
                elif sname == name + "_created":
                    hist.created = float(sample.value)
            for pairs, buckets in series.items():
                buckets.sort()
                hist = snap.histograms.get((name, pairs))
                if hist is None:
                    hist = snap.histograms[(name, pairs)] = Histogram()
                hist.bounds = [le for le, _ in buckets if le != math.inf]
                hist.counts = [c for le, c in buckets if le != math.inf]
                inf = [c for le, c in buckets if le == math.inf]
                hist.counts.append(inf[0] if inf else (hist.counts[-1] if hist.counts else 0.0))
        elif kind == "counter":
            for sample in family.samples:
                key = (name, _labels(sample.labels))
                if sample.name.endswith("_created"):
                    snap.created[key] = float(sample.value)
                else:
                    snap.counters[key] = float(sample.value)
        elif kind in ("gauge", "info", "unknown", "stateset"):
            for sample in family.samples:
                value = float(sample.value)
                if math.isfinite(value):
                    snap.gauges[(sample.name, _labels(sample.labels))] = value
    return snap


def quantile(q: float, bounds: list[float], counts: list[float]) -> float | None:
    """The ``q`` quantile of a histogram from its cumulative ``counts`` (one per finite bound,
    then +Inf), estimated as Prometheus' ``histogram_quantile`` does: linear interpolation
    inside the bucket the rank falls in, from 0 for the first bucket; a rank in the +Inf bucket
    gives the highest finite bound. None without observations."""
    if not counts or counts[-1] <= 0 or not bounds:
        return None
    total = counts[-1]
    rank = q * total
    b = bisect.bisect_left(counts, rank, 0, len(bounds))
    if b >= len(bounds):
        return bounds[-1]
    if b == 0 and bounds[0] <= 0:
        return bounds[0]
    start = 0.0 if b == 0 else bounds[b - 1]
    below = 0.0 if b == 0 else counts[b - 1]
    inside = counts[b] - below
    if inside <= 0:
        return bounds[b]
    return start + (bounds[b] - start) * (rank - below) / inside


def _delta(now: Histogram, base: Histogram | None) -> list[float]:
    """The cumulative bucket counts observed since ``base``; a series whose count went down
    was reset (a new process, a forked child) and counts from zero, as Prometheus' rate()."""
    if base is None or base.bounds != now.bounds or now.count < base.count:
        return list(now.counts)
    return [max(0.0, a - b) for a, b in zip(now.counts, base.counts, strict=True)]


def _sum_delta(now: Histogram, base: Histogram | None) -> float:
    """The sum observed since ``base``, with the reset rule of :func:`_delta`."""
    if base is None or base.bounds != now.bounds or now.count < base.count:
        return now.sum
    return max(0.0, now.sum - base.sum)


def _counter_delta(now: float, base: float | None) -> float:
    if base is None or now < base:
        return now
    return now - base


def status_class(code: str) -> str:
    """``"2xx"`` for ``"204"``; ``"error"`` when there is no status (a network error)."""
    if len(code) == 3 and code.isdigit() and code[0] in "12345":
        return code[0] + "xx"
    return "error" if not code else "other"


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


class _Group:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: list[float]) -> None:
        self.bounds = bounds
        self.counts = [0.0] * (len(bounds) + 1)
        self.sum = 0.0

    def add(self, counts: list[float], total: float) -> None:
        if len(counts) == len(self.counts):
            self.counts = [a + b for a, b in zip(self.counts, counts, strict=True)]
            self.sum += total


def _requests(
    family: str,
    now: Snapshot,
    base: Snapshot,
    group_by: tuple[tuple[str, str], ...],
    seconds: float,
    client: bool,
) -> dict[str, Any]:
    """Requests of one duration histogram in the interval: by status class, and per group."""
    by_class = dict.fromkeys(STATUS_CLASSES + (("error",) if client else ()), 0)
    groups: dict[tuple[str, ...], _Group] = {}
    errors: dict[str, int] = {}
    total = 0
    for (name, labels), hist in now.histograms.items():
        if name != family:
            continue
        old = base.histograms.get((name, labels))
        counts = _delta(hist, old)
        if not counts or counts[-1] <= 0:
            continue
        n = round(counts[-1])
        total += n
        values = dict(labels)
        cls = status_class(values.get("http_response_status_code", ""))
        if cls not in by_class:
            cls = "other"
        by_class[cls] += n
        error = values.get("error_type", "")
        if error:
            errors[error] = errors.get(error, 0) + n
        key = tuple(values.get(label, "") for label, _ in group_by)
        group = groups.get(key)
        if group is None:
            group = groups[key] = _Group(hist.bounds)
        group.add(counts, _sum_delta(hist, old))
    per_minute = 60.0 / seconds if seconds > 0 else 0.0
    rows = []
    for key, group in groups.items():
        n = round(group.counts[-1])
        row: dict[str, Any] = {field: v for (_, field), v in zip(group_by, key, strict=True)}
        row["requests"] = n
        row["rpm"] = round(n * per_minute, 3)
        row["mean_ms"] = _ms(group.sum / n) if n else None
        for field, q in QUANTILES:
            row[field] = _ms(quantile(q, group.bounds, group.counts))
        rows.append(row)
    rows.sort(key=lambda r: (-r["requests"], tuple(str(r[f]) for _, f in group_by)))
    out: dict[str, Any] = {
        "requests": total,
        "rpm": round(total * per_minute, 3),
        "requests_by_class": by_class,
        "rpm_by_class": {k: round(v * per_minute, 3) for k, v in by_class.items()},
    }
    if errors:
        out["errors_by_type"] = errors
    out["omitted"] = max(0, len(rows) - MAX_ROUTES)
    out["targets" if client else "routes"] = rows[:MAX_ROUTES]
    return out


def _gc(now: Snapshot, base: Snapshot) -> dict[str, Any]:
    collections: dict[str, int] = {}
    for (name, labels), value in now.counters.items():
        if name == GC_COLLECTIONS:
            gen = dict(labels).get("generation", "")
            old = base.counters.get((name, labels))
            collections[gen] = collections.get(gen, 0) + int(_counter_delta(value, old))
    pause_count: dict[str, int] = {}
    pause_seconds: dict[str, float] = {}
    for (name, labels), hist in now.histograms.items():
        if name != GC_PAUSES:
            continue
        gen = dict(labels).get("generation", "")
        before = base.histograms.get((name, labels))
        counts = _delta(hist, before)
        pause_count[gen] = pause_count.get(gen, 0) + round(counts[-1] if counts else 0.0)
        pause_seconds[gen] = pause_seconds.get(gen, 0.0) + _sum_delta(hist, before)
    # CPython's three generations always, so that the shape does not depend on what ran.
    every = set(collections) | set(pause_count) | {"0", "1", "2"}
    generations = sorted(every, key=lambda g: (len(g), g))
    return {
        "collections": {g: collections.get(g, pause_count.get(g, 0)) for g in generations},
        "pause_ms": {g: round(pause_seconds.get(g, 0.0) * 1000.0, 3) for g in generations},
        "pause_ms_total": round(sum(pause_seconds.values()) * 1000.0, 3),
    }


def _loop_lag(now: Snapshot) -> dict[str, Any]:
    """Event-loop lag: how late the last probe ran on each running loop (a gauge per thread),
    and the highest of them, in milliseconds."""
    by_thread: dict[str, float] = {}
    for (name, labels), value in now.gauges.items():
        if name == LOOP_LAG:
            by_thread[dict(labels).get("thread", "")] = round(value * 1000.0, 3)
    return {
        "loops": len(by_thread),
        "max_ms": max(by_thread.values()) if by_thread else None,
        "by_thread": by_thread,
    }


def _gauge(snap: Snapshot, name: str) -> float | None:
    values = [v for (n, _), v in snap.gauges.items() if n == name]
    return sum(values) if values else None


def _cumulative(snap: Snapshot, start: float) -> dict[str, Any]:
    """The registry's state as it is now (not deltas), for reporters whose metrics are
    cumulative (OTLP): every histogram with its buckets, every counter and gauge."""

    def since(key: Key, created: float | None) -> int:
        return int((created if created is not None else start) * 1_000_000)

    families: dict[str, dict[str, Any]] = {}

    def family(name: str, kind: str) -> dict[str, Any]:
        entry = families.get(name)
        if entry is None:
            help_text, unit = snap.help.get(name, ("", ""))
            entry = families[name] = {
                "name": name,
                "type": kind,
                "help": help_text,
                "unit": unit,
                "series": [],
            }
        return entry

    for key, hist in snap.histograms.items():
        counts = hist.counts or [0.0]
        per_bucket = [counts[0]] + [b - a for a, b in itertools.pairwise(counts)]
        family(key[0], "histogram")["series"].append(
            {
                "labels": dict(key[1]),
                "bounds": hist.bounds,
                "bucket_counts": [round(max(0.0, c)) for c in per_bucket],
                "count": round(hist.count),
                "sum": hist.sum,
                "start_us": since(key, hist.created),
            }
        )
    for key, value in snap.counters.items():
        family(key[0], "counter")["series"].append(
            {"labels": dict(key[1]), "value": value, "start_us": since(key, snap.created.get(key))}
        )
    for key, value in snap.gauges.items():
        family(key[0], "gauge")["series"].append({"labels": dict(key[1]), "value": value})
    return {
        "start_us": int(start * 1_000_000),
        "time_us": int(snap.time * 1_000_000),
        "families": [families[n] for n in sorted(families)],
    }


def build_body(now: Snapshot, base: Snapshot, cumulative_start: float) -> dict[str, Any]:
    """The metrics body for the interval from ``base`` to ``now`` (see the module)."""
    seconds = max(0.0, now.time - base.time)
    cpu_now = sum(v for (n, _), v in now.counters.items() if n == CPU_SECONDS)
    cpu: dict[str, Any] = {"seconds": None, "percent": None}
    if any(n == CPU_SECONDS for n, _ in now.counters):
        cpu_base = [v for (n, _), v in base.counters.items() if n == CPU_SECONDS]
        used = _counter_delta(cpu_now, sum(cpu_base) if cpu_base else None)
        cpu = {
            "seconds": round(used, 6),
            "percent": round(100.0 * used / seconds, 2) if seconds > 0 else None,
        }
    rss = _gauge(now, RSS_BYTES)
    active = _gauge(now, SERVER_ACTIVE)
    threads = _gauge(now, THREADS)
    server = _requests(SERVER_DURATION, now, base, SERVER_GROUP, seconds, client=False)
    server["active_requests"] = None if active is None else int(active)
    return {
        "schema": SCHEMA_VERSION,
        "interval": {
            "start_us": int(base.time * 1_000_000),
            "end_us": int(now.time * 1_000_000),
            "seconds": round(seconds, 6),
        },
        "server": server,
        "client": _requests(CLIENT_DURATION, now, base, CLIENT_GROUP, seconds, client=True),
        "cpu": cpu,
        "memory": {"rss_bytes": None if rss is None else int(rss)},
        "gc": _gc(now, base),
        "event_loop_lag": _loop_lag(now),
        "threads": None if threads is None else int(threads),
        "cumulative": _cumulative(now, cumulative_start),
    }


def _rebased(child: Snapshot, parent: Snapshot) -> Snapshot:
    """A forked child's baseline, from ``child`` (what it reads first) and ``parent`` (what the
    parent read at its last batch).

    Histograms count from zero: tracer's recorder (requests, GC pauses) starts afresh in a
    child, so whatever they hold is the child's own, even when the child counted some before
    this first reading. A counter lower than at the parent's last batch was reset at the fork
    (the child's CPU time) and counts from zero too; any other counter (the garbage collector's
    counts, which a child inherits) counts from the child's first reading.
    """
    base = Snapshot(child.time)
    base.help = child.help
    for key, value in child.counters.items():
        old_value = parent.counters.get(key)
        if old_value is None or value >= old_value:
            base.counters[key] = value
    return base


class _Schedule:
    """The thread that sends a batch every interval, and its baseline."""

    def __init__(self, pipeline: Any, registry: Any, interval: float) -> None:
        self.pipeline = pipeline
        self.registry = registry
        self.interval = interval
        self.wake = threading.Event()
        self.stopping = False
        self.final = True
        # Whether a batch went out (in this process): only then is there a final one.
        self.sent = False
        self.base: Snapshot | None = None
        self.parent: Snapshot | None = None
        self.started = time.time()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        thread = threading.Thread(target=self._run, name="tracer-metrics-report", daemon=True)
        self.thread = thread
        thread.start()

    def rebase_after_fork(self) -> _Schedule:
        """A schedule for a forked child: new thread and event, the parent's last snapshot kept
        only to tell which series the fork reset (see :func:`_rebased`)."""
        child = _Schedule(self.pipeline, self.registry, self.interval)
        # Forked before the parent's first reading: nothing of the parent's to compare with.
        child.parent = self.base if self.base is not None else Snapshot(0.0)
        return child

    def _read(self) -> Snapshot:
        with context.suppressed():
            return snapshot(self.registry)

    def _run(self) -> None:
        try:
            first = self._read()
            self.base = first if self.parent is None else _rebased(first, self.parent)
            self.parent = None
            self.started = first.time
        except Exception as exc:
            safety.internal_error("metrics.report", exc)
            return
        tick = time.monotonic()
        while True:
            tick += self.interval
            left = tick - time.monotonic()
            if left < 0:
                # Late (a suspended process): this batch goes now, covering the whole time since
                # the last, and the schedule restarts from here.
                tick = time.monotonic()
                left = 0.0
            self.wake.wait(left)
            if self.stopping:
                if self.final:
                    self._send(final=True)
                return
            self._send(final=False)

    def _send(self, final: bool) -> None:
        base = self.base
        if base is None:
            return
        try:
            now = self._read()
            body = build_body(now, base, self.started)
            self.base = now
            if final and not self.sent:
                # A process that ends within its first interval (a script, a one-shot command)
                # sends no report at all, as before it reached one.
                return
            if final and not body["server"]["requests"] and not body["client"]["requests"]:
                if body["interval"]["seconds"] < 1.0:
                    # A moment's tail with no request says nothing a reader needs.
                    return
            body["final"] = final
            self.pipeline.submit_report("metrics", body)
            self.sent = True
        except Exception as exc:
            safety.internal_error("metrics.report", exc)

    def stop(self, final: bool) -> None:
        self.final = final
        self.stopping = True
        self.wake.set()
        thread = self.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(_STOP_JOIN)


_lock = threading.Lock()
_schedule: _Schedule | None = None


def start(runtime: Any, registry: Any) -> None:
    """Start sending a metrics batch every ``runtime.config.metrics_interval`` seconds."""
    global _schedule
    interval = runtime.config.metrics_interval
    if interval is None or registry is None:
        return
    with _lock:
        if _schedule is not None:
            return
        schedule = _Schedule(runtime.pipeline, registry, float(interval))
        _schedule = schedule
    schedule.start()
    atexit.register(_at_exit)


def stop() -> None:
    """Stop what :func:`start` started, after one final batch of the partial interval (left
    out when no batch was sent before, or when it is shorter than a second and saw no
    request)."""
    global _schedule
    with _lock:
        schedule, _schedule = _schedule, None
    atexit.unregister(_at_exit)
    if schedule is not None:
        schedule.stop(final=True)


def _at_exit() -> None:
    # Registered by start(), so it runs before the pipeline's exit flush (atexit is LIFO).
    try:
        stop()
    except Exception as exc:
        safety.internal_error("metrics.report.exit", exc)


def after_fork_in_child() -> None:
    """A forked child starts its own schedule, with nothing of the parent's counted."""
    global _schedule
    # The parent's lock may have been held at the fork; the child has one thread now.
    global _lock
    _lock = threading.Lock()
    parent = _schedule
    if parent is None:
        return
    _schedule = parent.rebase_after_fork()
    _schedule.start()
