"""Request metrics, recorded on the request path into plain lists and read at scrape time.

Every finished server, client or database span passes through :meth:`Recorder.record` (from
``Collector.on_finish``, sampled or not). One series is a list of integers: a count per bucket
(the last one is ``+Inf``) and the sum of durations in microseconds, all exact. Recording is a
dict lookup with a tuple key, a table lookup for the bucket (:func:`bucket_index`) and two
list-slot increments: no lock, no bucket scan, nothing allocated but the key. Under the GIL no
increment is lost: ``slot += n`` on a list of ints runs no Python code and allocates nothing the
garbage collector tracks, so no other thread can run between its read and its write. Cumulative
buckets, label strings and seconds are made at scrape time (:meth:`Recorder.series`,
:func:`request_families`).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import urlsplit

from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from tracer import safety
from tracer.redaction import METHODS
from tracer.span import CLIENT, SERVER, WEBSOCKET, Span, SpanProcessor

# OpenTelemetry's value for a method it does not know, used here for every label that would
# otherwise take a value chosen by whoever sends requests.
OTHER = "_OTHER"
# At most this many series per histogram, overflow series included, so memory and the
# exposition stay bounded whatever the traffic. The last OVERFLOW_SERIES of them are kept for
# overflow: label sets that keep only their status code and scheme (or error type), then one
# whose labels are all OTHER, where everything goes once the others are taken.
MAX_SERIES = 2000
OVERFLOW_SERIES = 100
# At most this many client URLs keep their parsed address and port.
MAX_TARGETS = 512

SERVER_NAME = "http_server_request_duration_seconds"
CLIENT_NAME = "http_client_request_duration_seconds"
DB_NAME = "db_client_operation_duration_seconds"
ACTIVE_NAME = "http_server_active_requests"
SERVER_LABELS = ("http_request_method", "http_route", "http_response_status_code", "url_scheme")
CLIENT_LABELS = (
    "http_request_method",
    "server_address",
    "server_port",
    "http_response_status_code",
    "error_type",
)
# The table comes first: it is the label with the most values, which overflow replaces first,
# as it replaces a server's route.
DB_LABELS = ("db_collection_name", "db_operation_name", "db_system_name", "error_type")
# How many leading labels (raw key values) overflow replaces by OTHER: what is left, the status
# code and scheme or error type, keeps status classes and error ratios right.
_SERVER_REPLACED = 2
_CLIENT_REPLACED = 3
_DB_REPLACED = 2
# The raw keys of the series where everything goes once the overflow series are taken too (a
# route of None is OTHER at scrape time, as for a request no route matched).
_SERVER_LAST = (OTHER, None, OTHER, OTHER)
_CLIENT_LAST = (OTHER, OTHER, OTHER, OTHER, OTHER)
_DB_LAST = (OTHER, OTHER, OTHER, OTHER)

Series = list[int]


# The largest table bucket_index builds (entries); finer bucket bounds use bisect instead.
MAX_STEPS = 8192


def bucket_index(bounds: list[int]) -> tuple[int, list[int]]:
    """A step and a table: a duration ``d`` (µs) belongs in bucket ``table[ceil(d / step)]``.

    The step is the greatest common divisor of the bounds, so every bound is a whole number of
    steps and all durations in ``((k - 1) * step, k * step]`` share one bucket, the first bound
    of at least ``k * step`` (``le`` is inclusive). Durations past the last bound are ``+Inf``.
    When the table would be larger than :data:`MAX_STEPS` it is empty and bisect is used.
    """
    import math

    step = 0
    for bound in bounds:
        step = math.gcd(step, bound)
    step = max(step, 1)
    if not bounds or bounds[-1] // step + 1 > MAX_STEPS:
        return step, []
    return step, [bisect_left(bounds, k * step) for k in range(bounds[-1] // step + 1)]


def _summed(rows: Iterable[tuple[list[str], Series]]) -> list[tuple[list[str], Series]]:
    """Rows with the same label values added up (copies: the originals keep counting)."""
    out: dict[tuple[str, ...], tuple[list[str], Series]] = {}
    for labels, values in rows:
        have = out.get(tuple(labels))
        if have is None:
            out[tuple(labels)] = (labels, list(values))
        else:
            for i, value in enumerate(values):
                have[1][i] += value
    return list(out.values())


def _le(bound: float) -> str:
    """A bucket bound as Prometheus writes it (``0.005``, ``1.0``)."""
    text: str = floatToGoString(bound)  # type: ignore[no-untyped-call]
    return text


def _label(value: Any) -> str:
    return "" if value is None else str(value)


def _scheme(https: Any) -> str:
    if https is True:
        return "https"
    return "http" if https is False else OTHER


class Admission:
    """The label sets a scrape may show, per histogram, kept from scrape to scrape.

    Each process caps its own tables, but the sum of several processes' files (``metrics_dir``)
    can hold more label sets than one. The label sets a scrape shows are admitted in the order
    first seen and stay admitted, so a series never turns into an overflow one from one scrape
    to the next (which would break Prometheus' ``rate()``); see :func:`bounded`.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.families: dict[str, dict[tuple[str, ...], None]] = {}


def bounded(
    rows: list[tuple[list[str], Series]], admitted: dict[tuple[str, ...], None], replaced: int
) -> list[tuple[list[str], Series]]:
    """``rows`` (label values, series) with at most :data:`MAX_SERIES` label sets, every count
    kept: a label set not ``admitted`` while there is room is admitted; past the room for
    ordinary label sets it is counted under its overflow label set (the first ``replaced``
    labels OTHER), and once that room is taken too, under the one whose labels are all OTHER."""
    ordinary = MAX_SERIES - OVERFLOW_SERIES
    out: dict[tuple[str, ...], tuple[list[str], Series]] = {}
    for labels, values in rows:
        key = tuple(labels)
        if key not in admitted:
            if len(admitted) < ordinary:
                admitted[key] = None
            else:
                key = (OTHER,) * replaced + key[replaced:]
                if key not in admitted:
                    if len(admitted) < MAX_SERIES - 1:
                        admitted[key] = None
                    else:
                        key = (OTHER,) * len(key)
        have = out.get(key)
        if have is None:
            out[key] = (list(key), list(values))
        elif len(have[1]) == len(values):
            for i, value in enumerate(values):
                have[1][i] += value
    return list(out.values())


class LoopWatcher:
    """Event-loop lag: a probe every ``interval`` seconds on each running loop tracer sees.

    The probe is a timer on the loop itself: how late it runs is the loop's lag (the time a
    callback waits behind others). Loops are held weakly; a closed loop drops out.
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[Any]] = (
            weakref.WeakKeyDictionary()
        )
        self.generation = 0
        self._lock = threading.Lock()
        self._hooked: tuple[Any, Any] | None = None

    def watch(self, loop: asyncio.AbstractEventLoop, starting: bool = False) -> None:
        """Probe ``loop``; called on the loop's own thread. A loop that starts running again
        (``starting``) gets a fresh probe: the one pending would measure the time it was
        stopped."""
        with self._lock:
            state = self.loops.get(loop)
            if state is not None and not starting:
                return
            if state is None:
                # [lag seconds, thread name, timer handle]
                state = [0.0, threading.current_thread().name, None]
                self.loops[loop] = state
            elif state[2] is not None:
                state[2].cancel()
        self._schedule(loop, state, self.generation)

    def hook(self) -> None:
        """Watch every asyncio loop as it starts running, wherever it runs.

        ``BaseEventLoop.run_forever`` looks ``asyncio.events._set_running_loop`` up on each
        start, so a wrapper there sees each loop start on its own thread, at no cost to the
        requests the loop serves.
        """
        from asyncio import events

        original = events._set_running_loop
        watch = self.watch

        def _set_running_loop(loop: asyncio.AbstractEventLoop | None) -> None:
            original(loop)
            if loop is not None:
                try:
                    watch(loop, True)
                except Exception as exc:
                    safety.internal_error("metrics.loop_start", exc)

        events._set_running_loop = _set_running_loop
        self._hooked = (original, _set_running_loop)

    def unhook(self) -> None:
        from asyncio import events

        hooked, self._hooked = self._hooked, None
        if hooked is not None and events._set_running_loop is hooked[1]:
            events._set_running_loop = hooked[0]

    def _schedule(self, loop: asyncio.AbstractEventLoop, state: list[Any], gen: int) -> None:
        due = loop.time() + self.interval
        state[2] = loop.call_at(due, self._probe, loop, state, gen, due)

    def _probe(
        self, loop: asyncio.AbstractEventLoop, state: list[Any], gen: int, due: float
    ) -> None:
        if gen != self.generation:
            return
        try:
            state[0] = max(0.0, loop.time() - due)
            self._schedule(loop, state, gen)
        except Exception as exc:
            safety.internal_error("metrics.loop_lag", exc)

    def stop(self) -> None:
        """Stop every probe (their next run does nothing) and cancel the timers of open loops."""
        with self._lock:
            self.generation += 1
            items = list(self.loops.items())
            self.loops = weakref.WeakKeyDictionary()
        for loop, state in items:
            handle = state[2]
            if handle is None or loop.is_closed():
                continue
            try:
                loop.call_soon_threadsafe(handle.cancel)
            except RuntimeError:
                pass  # closed meanwhile

    def reset(self) -> None:
        """A forked child: the parent's loops are not ours to probe."""
        self._lock = threading.Lock()
        self.generation += 1
        self.loops = weakref.WeakKeyDictionary()

    def family(self) -> Metric:
        family = GaugeMetricFamily(
            "python_asyncio_event_loop_lag_seconds",
            "How late the last periodic probe ran on each running asyncio event loop.",
            labels=["thread"],
            unit="seconds",
        )
        for loop, state in list(self.loops.items()):
            if not loop.is_closed():
                family.add_metric([state[1]], state[0])
        return family


class Recorder(SpanProcessor):
    """The request histograms and the active-requests count of this process: a span processor
    of the runtime (``on_start`` counts a server request started, ``on_end`` records a finished
    server or client span)."""

    # on_start is a comparison and an increment, and record() guards itself: the runtime may
    # call them without its guard (see SpanProcessor.can_raise).
    can_raise = False

    def __init__(self, buckets: tuple[float, ...], loops: LoopWatcher | None = None) -> None:
        self.buckets = tuple(float(b) for b in buckets)
        self.bounds_us = [round(b * 1e6) for b in self.buckets]
        self.width = len(self.bounds_us) + 2  # the buckets, +Inf, the sum
        self.loops = loops
        self.server: dict[tuple[Any, ...], Series] = {}
        self.client: dict[tuple[Any, ...], Series] = {}
        self.db: dict[tuple[Any, ...], Series] = {}
        # Server requests started (on_start adds to slot 0); active = started - ended.
        self.started: Series = [0]
        self._targets: dict[str, tuple[str, str]] = {}
        # Taken only to make a series (never to count), so that the cap is exact however many
        # threads meet new label sets at once.
        self._lock = threading.Lock()
        self.admission = Admission()
        self.record = self._make_record()

    def reset(self) -> None:
        """Forget everything (a forked child counts its own requests only)."""
        # New locks: another thread of the parent may have held one at the fork.
        self._lock = threading.Lock()
        self.admission = Admission()
        self.server.clear()
        self.client.clear()
        self.db.clear()
        self.started[0] = 0

    # -- the request path --------------------------------------------------------------------

    def on_start(self, span: Span) -> None:
        """Count a server request started (the active-requests gauge)."""
        if span.kind == SERVER:
            self.started[0] += 1

    @property
    def on_end(self) -> Callable[[Span], None]:
        """The recording function itself (read once, when the runtime builds its chain), so a
        finished span costs one call, not a method that calls it."""
        return self.record

    def end_histogram(self) -> tuple[Any, ...]:
        """What the accelerator's end hook (``tracer.runtime.Runtime._accelerated_end``) needs
        to record a server span of a known series itself, as :attr:`record` would: the server
        series, :attr:`record` for every other span, the bucket table and bounds, the series'
        width, and where an error of its own is counted."""
        step, index_of = bucket_index(self.bounds_us)
        return (
            self.server,
            self.record,
            step,
            index_of,
            list(self.bounds_us),
            self.width,
            "metrics.record",
        )

    def _make_record(self) -> Callable[[Span], None]:
        # A closure over locals: the request path reads no attribute it can avoid.
        server = self.server
        client = self.client
        dbs = self.db
        bounds = self.bounds_us
        width = self.width
        total_at = width - 1  # a positive index: the interpreter's fast path for lists
        targets = self._targets
        started = self.started

        new_series = self._new_series
        new_db_series = self._new_db_series
        target_of = self._target
        step, index_of = bucket_index(bounds)
        round_up = step - 1
        steps = len(index_of)

        def record(span: Span) -> None:
            # Every line here runs for every request: written for the fewest bytecodes (a
            # subscript, not dict.get; ``or`` for defaults), since the interpreter's dispatch is
            # most of the cost. See docs/metrics.md.
            try:
                kind = span.kind
                if kind == SERVER:
                    # Raw values: a method outside the standard ones is mapped to OTHER where a
                    # new key is met (new_series), no route at scrape time (series()).
                    # "https://..." sorts after "https:", "http://..." before it.
                    key: tuple[Any, ...] = (
                        span.method,
                        span.route,
                        span.status_code,
                        span.url > "https:",  # type: ignore[operator]  # always set
                    )
                    try:
                        series = server[key]
                    except KeyError:
                        series = new_series(server, key, True)
                elif kind == CLIENT and span.db is not None:
                    # A database call: the statement's table and operation, the system.
                    target, statement = span.db
                    error = span.error
                    key = (
                        statement[2],
                        statement[1],
                        target[0],
                        "" if error is None else str(error["type"]),
                    )
                    try:
                        series = dbs[key]
                    except KeyError:
                        series = new_db_series(key)
                elif kind == CLIENT:
                    url = span.url or ""
                    try:
                        where = targets[url]
                    except KeyError:
                        where = target_of(url)
                    error = span.error
                    status = span.status_code
                    key = (
                        span.method,
                        where[0],
                        where[1],
                        status,
                        "" if error is None or status is not None else str(error["type"]),
                    )
                    try:
                        series = client[key]
                    except KeyError:
                        series = new_series(client, key, False)
                else:
                    if kind == WEBSOCKET:
                        # Counted as started while its handshake was a server request; a
                        # connection's length is no request duration, so it has no series.
                        started[0] -= 1
                    return
                duration = span.duration_us
                # The bucket from a table indexed by the duration in steps (see bucket_index):
                # two integer operations and a list read, where bisect compares objects.
                # Past the table (beyond the last bound, or no table at all): bisect.
                at = (duration + round_up) // step
                series[index_of[at] if at < steps else bisect_left(bounds, duration)] += 1
                series[total_at] += duration
            except Exception as exc:
                safety.internal_error("metrics.record", exc)

        return record

    def _new_series(
        self, table: dict[tuple[Any, ...], Series], key: tuple[Any, ...], server: bool
    ) -> Series:
        """The series of a key not in ``table``: made (bounded), or the one it maps to."""
        loops = self.loops
        if loops is not None:
            # The loops that started after install are seen as they start (LoopWatcher.hook);
            # one that was running already shows itself here, with its first requests.
            loop = asyncio._get_running_loop()
            if loop is not None:
                loops.watch(loop)
        if key[0] not in METHODS:
            # Looked up under OTHER, and not stored as it came: every method a client
            # invents would be a key otherwise.
            clean = (OTHER, *key[1:])
            series = table.get(clean)
            if series is not None:
                return series
            key = clean
        with self._lock:
            # Looked up again under the lock: another thread may have made it meanwhile.
            series = table.get(key)
            if series is not None:
                return series
            if len(table) >= MAX_SERIES - OVERFLOW_SERIES:
                if server:
                    key = (OTHER, None, *key[_SERVER_REPLACED:])
                else:
                    key = (OTHER,) * _CLIENT_REPLACED + key[_CLIENT_REPLACED:]
                series = table.get(key)
                if series is None and len(table) >= MAX_SERIES - 1:
                    key = _SERVER_LAST if server else _CLIENT_LAST
                    series = table.get(key)
                if series is not None:
                    return series
            series = table[key] = [0] * self.width
            return series

    def _new_db_series(self, key: tuple[Any, ...]) -> Series:
        """The series of a database call's key not in the table: made (bounded, the table and
        operation replaced by OTHER past the cap), or the one it maps to."""
        table = self.db
        with self._lock:
            series = table.get(key)
            if series is not None:
                return series
            if len(table) >= MAX_SERIES - OVERFLOW_SERIES:
                key = (OTHER,) * _DB_REPLACED + key[_DB_REPLACED:]
                series = table.get(key)
                if series is None and len(table) >= MAX_SERIES - 1:
                    key = _DB_LAST
                    series = table.get(key)
                if series is not None:
                    return series
            series = table[key] = [0] * self.width
            return series

    def _target(self, url: str) -> tuple[str, str]:
        """The ``server_address`` and ``server_port`` of a client call to ``url``."""
        try:
            parts = urlsplit(url)
            address = parts.hostname or ""
            port = parts.port or (443 if parts.scheme == "https" else 80)
            where = (address[:255], str(port))
        except ValueError:
            where = (OTHER, OTHER)
        if len(self._targets) >= MAX_TARGETS:
            self._targets.clear()
        self._targets[url] = where
        return where

    # -- scrape time ---------------------------------------------------------------------------

    def series(self) -> dict[str, list[tuple[list[str], Series]]]:
        """Label values and a copy of each series, per family (JSON-able)."""
        server = _summed(
            (
                [
                    key[0],
                    key[1] or OTHER,
                    _label(key[2]),
                    _scheme(key[3]),
                ],
                values,
            )
            for key, values in list(self.server.items())
        )
        client = _summed(
            ([key[0], key[1], key[2], _label(key[3]), key[4]], values)
            for key, values in list(self.client.items())
        )
        db = _summed(
            ([_label(key[0]), _label(key[1]), key[2], key[3]], values)
            for key, values in list(self.db.items())
        )
        ended = sum(sum(values[:-1]) for _, values in server)
        return {
            SERVER_NAME: server,
            CLIENT_NAME: client,
            DB_NAME: db,
            ACTIVE_NAME: [([], [max(0, self.started[0] - ended)])],
        }


def histogram(
    name: str,
    documentation: str,
    labels: tuple[str, ...],
    buckets: tuple[float, ...],
    rows: list[tuple[list[str], Series]],
    scale: float,
) -> HistogramMetricFamily:
    """A histogram family from rows of (label values, [count per bucket..., +Inf, sum]).

    A label whose value is empty is left out of that series, as OpenTelemetry leaves out an
    attribute that has no value (``error_type`` of a request that got an answer); Prometheus
    matches a missing label as an empty one, so ``error_type=""`` still selects it.
    """
    family = HistogramMetricFamily(name, documentation, labels=list(labels), unit="seconds")
    bounds = [_le(b) for b in buckets] + ["+Inf"]
    samples = family.samples
    for values, series in rows:
        pairs = {label: value for label, value in zip(labels, values, strict=False) if value}
        total = 0
        for bound, count in zip(bounds, series[:-1], strict=True):
            total += count
            samples.append(Sample(f"{name}_bucket", {**pairs, "le": bound}, float(total)))
        samples.append(Sample(f"{name}_count", pairs, float(total)))
        samples.append(Sample(f"{name}_sum", pairs, series[-1] / scale))
    return family


def request_families(
    buckets: tuple[float, ...],
    merged: dict[str, list[tuple[list[str], Series]]],
    admission: Admission | None = None,
) -> Iterator[Metric]:
    """The request metrics' families from :meth:`Recorder.series` (or several, summed), with
    at most :data:`MAX_SERIES` label sets each (see :func:`bounded`; ``admission`` is what
    earlier scrapes admitted, a fresh one when not given)."""
    admission = admission or Admission()
    with admission.lock:
        server = bounded(
            merged.get(SERVER_NAME, []),
            admission.families.setdefault(SERVER_NAME, {}),
            _SERVER_REPLACED,
        )
        client = bounded(
            merged.get(CLIENT_NAME, []),
            admission.families.setdefault(CLIENT_NAME, {}),
            _CLIENT_REPLACED,
        )
        db = bounded(
            merged.get(DB_NAME, []),
            admission.families.setdefault(DB_NAME, {}),
            _DB_REPLACED,
        )
    yield histogram(
        SERVER_NAME,
        "Duration of HTTP server requests (the server span's duration).",
        SERVER_LABELS,
        buckets,
        server,
        1e6,
    )
    yield histogram(
        CLIENT_NAME,
        "Duration of HTTP client requests (the client span's duration).",
        CLIENT_LABELS,
        buckets,
        client,
        1e6,
    )
    yield histogram(
        DB_NAME,
        "Duration of database client operations (the database call's span duration).",
        DB_LABELS,
        buckets,
        db,
        1e6,
    )
    active = GaugeMetricFamily(ACTIVE_NAME, "HTTP server requests being served now.")
    rows = merged.get(ACTIVE_NAME) or [([], [0])]
    active.add_metric([], float(sum(row[1][0] for row in rows)))
    yield active
