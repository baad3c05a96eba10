"""Pre-forking servers: each process writes its counts to a shared directory, summed at scrape.

prometheus-client's multiprocess mode cannot hold custom collectors, and tracer's metrics are
read by one. So each process of a pre-forking server (gunicorn, ``os.fork`` workers) with
``metrics_dir`` set writes the state of its own metrics to ``tracer-metrics-<pid>.json`` there,
every :data:`WRITE_INTERVAL` seconds and when it stops; whichever process answers a scrape adds
the files of the others to its own live state. A forked child starts from zero, so nothing of
the parent is counted twice. Counters and histograms of processes that exited stay in the sum
(a counter never goes down); gauges count only processes that are alive.

Whatever else is in the directory is not trusted: only regular files are read (never through a
link, never a FIFO or a device), up to :data:`MAX_FILE_BYTES`, and a file is summed only when
every part of it has the shape this process would write, with the same bucket layout. Anything
else is left out and counted (``tracer_metrics_files_invalid_total``). Files are written through
a new temporary file (``O_EXCL|O_NOFOLLOW``), so a planted link is never written through, and a
directory that other users could plant files in is not used at all (:func:`check_directory`).
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import re
import stat
import threading
from collections import Counter
from typing import Any

from prometheus_client.core import CounterMetricFamily, Metric

from tracer import files
from tracer.metrics.process import GC_BUCKETS, GC_NAME
from tracer.metrics.recording import (
    ACTIVE_NAME,
    CLIENT_LABELS,
    CLIENT_NAME,
    DB_LABELS,
    DB_NAME,
    SERVER_LABELS,
    SERVER_NAME,
)

log = logging.getLogger("tracer")

WRITE_INTERVAL = 1.0
PREFIX = "tracer-metrics-"
SUFFIX = ".json"
# A file larger than this is not read (nor written): an honest one holds a few thousand series.
MAX_FILE_BYTES = 16 << 20

# Gauges for which the processes' values are combined by max, not summed.
MAX_GAUGES = frozenset(
    (
        "python_asyncio_event_loop_lag_seconds",
        "tracer_sample_probability",
        "tracer_reporter_consecutive_failures",
    )
)

INVALID_NAME = "tracer_metrics_files_invalid"
# Why a file was left out: it does not validate, it has another bucket layout, it is not a
# regular file, it is over the size cap, or it could not be read. All appear from the start.
REASONS = ("malformed", "buckets", "not_regular", "too_large", "unreadable")

_NAME = re.compile(r"tracer-metrics-([1-9][0-9]{0,9})\.json")
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
# A bound on any one count or sum of a series, far above what a process reaches.
_MAX_COUNT = 1 << 63

Rows = list[Any]
State = dict[str, Any]


class Invalid(Exception):
    """A file left out of the sum: ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


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


def check_directory(directory: str) -> str | None:
    """Why ``directory`` must not be shared (None when it may): it cannot be made, is not a
    directory, belongs to another user (root's is fine), or anyone may write in it without the
    sticky bit. Other users could then plant files there, or remove and replace this process's.
    """
    try:
        os.makedirs(directory, mode=0o755, exist_ok=True)
        st = os.stat(directory)
    except OSError as exc:
        return f"cannot be used ({exc.strerror or exc})"
    if not stat.S_ISDIR(st.st_mode):
        return "is not a directory"
    me = os.geteuid()
    if st.st_uid not in (me, 0):
        return f"is owned by uid {st.st_uid}, not by this process's user (uid {me}) or root"
    if st.st_mode & stat.S_IWOTH and not st.st_mode & stat.S_ISVTX:
        mode = stat.S_IMODE(st.st_mode)
        return f"is writable by every user (mode {mode:04o}) without the sticky bit"
    return None


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


def _read(path: str) -> bytes:
    """The bytes of the regular file at ``path``, at most :data:`MAX_FILE_BYTES`.

    ``O_NOFOLLOW`` refuses a link and ``O_NONBLOCK`` keeps a FIFO from blocking the open; the
    type and size are checked on the open file, so nothing swapped in after the listing counts.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Invalid("not_regular", "is a symbolic link") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Invalid("not_regular", "is not a regular file (a FIFO, socket or device)")
        if st.st_size > MAX_FILE_BYTES:
            raise Invalid("too_large", f"is larger than {MAX_FILE_BYTES} bytes")
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_FILE_BYTES:
            chunk = os.read(fd, min(1 << 20, MAX_FILE_BYTES + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > MAX_FILE_BYTES:
            raise Invalid("too_large", f"is larger than {MAX_FILE_BYTES} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _is_count(value: Any) -> bool:
    return type(value) is int and 0 <= value < _MAX_COUNT


def _is_number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


class Layout:
    """What a valid file holds, for a process whose histograms have ``buckets``."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = [float(b) for b in buckets]
        width = len(buckets) + 2  # a count per bucket, +Inf, the sum
        # Family -> (number of label values, number of ints) of each of its rows.
        self.series = {
            SERVER_NAME: (len(SERVER_LABELS), width),
            CLIENT_NAME: (len(CLIENT_LABELS), width),
            DB_NAME: (len(DB_LABELS), width),
            ACTIVE_NAME: (0, 1),
            GC_NAME: (1, len(GC_BUCKETS) + 2),
        }

    def check(self, state: Any, pid: int, known: dict[str, str]) -> State:
        """``state`` if it is a file this process could have written, else :class:`Invalid`.

        ``known`` maps the sample families this process has to their type: another file may
        add to those only, so what a scrape shows is always what tracer itself would show.
        """
        if not isinstance(state, dict):
            raise Invalid("malformed", "is not a JSON object")
        if state.get("pid") != pid or type(state.get("pid")) is not int:
            raise Invalid("malformed", "does not hold the pid of its name")
        if type(state.get("exited")) is not bool:
            raise Invalid("malformed", "has no true or false 'exited'")
        buckets = state.get("buckets")
        if not isinstance(buckets, list) or not all(_is_number(b) for b in buckets):
            raise Invalid("malformed", "has no list of bucket bounds")
        if [float(b) for b in buckets] != self.buckets:
            raise Invalid("buckets", "was written with other metrics_buckets than this process's")
        series = state.get("series")
        if not isinstance(series, dict):
            raise Invalid("malformed", "has no 'series' object")
        for family, rows in series.items():
            self._check_rows(family, rows)
        samples = state.get("samples")
        if not isinstance(samples, list):
            raise Invalid("malformed", "has no 'samples' list")
        for family in samples:
            self._check_family(family, known)
        return state

    def _check_rows(self, family: str, rows: Any) -> None:
        shape = self.series.get(family)
        if shape is None:
            raise Invalid(
                "malformed", f"has a series family tracer does not make ({family[:80]!r})"
            )
        labels_count, width = shape
        if not isinstance(rows, list):
            raise Invalid("malformed", f"has no list of rows for {family}")
        for row in rows:
            if not (isinstance(row, list) and len(row) == 2):
                raise Invalid("malformed", f"has a row of {family} that is not [labels, values]")
            labels, values = row
            if not (
                isinstance(labels, list)
                and len(labels) == labels_count
                and all(type(v) is str for v in labels)
            ):
                raise Invalid("malformed", f"has a row of {family} with other label values")
            if not (
                isinstance(values, list)
                and len(values) == width
                and all(_is_count(v) for v in values)
            ):
                raise Invalid("malformed", f"has a row of {family} with other counts")

    def _check_family(self, family: Any, known: dict[str, str]) -> None:
        if not isinstance(family, dict):
            raise Invalid("malformed", "has a sample family that is not an object")
        name, kind = family.get("name"), family.get("type")
        if type(name) is not str or known.get(name) != kind:
            raise Invalid("malformed", "has a sample family tracer does not make")
        names = (f"{name}_total",) if kind == "counter" else (name,)
        samples = family.get("samples")
        if not isinstance(samples, list):
            raise Invalid("malformed", f"has no list of samples for {name}")
        for sample in samples:
            if not (isinstance(sample, list) and len(sample) == 3):
                raise Invalid(
                    "malformed", f"has a sample of {name} that is not [name, labels, value]"
                )
            sample_name, labels, value = sample
            if sample_name not in names:
                raise Invalid("malformed", f"has a sample of {name} under another name")
            if not (
                isinstance(labels, dict)
                and all(
                    type(k) is str and _LABEL_NAME.fullmatch(k) and type(v) is str
                    for k, v in labels.items()
                )
            ):
                raise Invalid("malformed", f"has a sample of {name} with invalid labels")
            if not _is_number(value) or (kind == "counter" and value < 0):
                raise Invalid("malformed", f"has a sample of {name} with an invalid value")


class Files:
    """This process's file in the shared ``directory``, and what it makes of the others'.

    A file left out is counted once per version (inode, size, modification time), however many
    scrapes find it, and each reason is logged once. Scrapes may come from several threads.
    """

    def __init__(self, directory: str, buckets: tuple[float, ...]) -> None:
        self.directory = directory
        self.layout = Layout(buckets)
        self.invalid: Counter[str] = Counter(dict.fromkeys(REASONS, 0))
        self._lock = threading.Lock()
        # Name -> (version, reason) of the files left out, as of the last scan.
        self._left_out: dict[str, tuple[tuple[int, int, int], str]] = {}
        self._warned: set[str] = set()
        self._write_failing = False

    def after_fork_in_child(self) -> None:
        """A forked child: a fresh lock (a scrape of the parent may have held it at the fork)."""
        self._lock = threading.Lock()

    # -- writing -----------------------------------------------------------------------------

    def write(self, state: State) -> None:
        """Replace this process's file with ``state`` (atomically: readers never see half).

        The data goes to a new file of a random name, created with ``O_EXCL|O_NOFOLLOW`` (a
        planted file or link of that name makes the open fail, and another name is tried),
        then renamed over the file, which replaces a link there rather than following it.
        A directory that cannot be written is a warning until a write works again.
        """
        pid = os.getpid()
        data = json.dumps(state, separators=(",", ":")).encode()
        if len(data) > MAX_FILE_BYTES:
            self._write_failed(f"this process's state is larger than {MAX_FILE_BYTES} bytes")
            return
        path = path_for(self.directory, pid)
        try:
            files.write_atomic(path, data, 0o644)
        except OSError as exc:
            self._write_failed(str(exc))
            return
        self._write_failing = False

    def _write_failed(self, why: str) -> None:
        if not self._write_failing:
            self._write_failing = True
            log.warning(
                "tracer: cannot write this process's metrics file in %s: %s; the other "
                "processes' scrapes miss its counts until it can",
                self.directory,
                why,
            )

    # -- reading -----------------------------------------------------------------------------

    def others(self, known: dict[str, str]) -> list[tuple[State, bool]]:
        """The states of the other processes' valid files, each with whether its process is
        alive. ``known`` maps this process's sample families to their type."""
        me = os.getpid()
        out: list[tuple[State, bool]] = []
        with self._lock:
            left_out: dict[str, tuple[tuple[int, int, int], str]] = {}
            try:
                entries = list(os.scandir(self.directory))
            except OSError:
                return out
            for entry in entries:
                match = _NAME.fullmatch(entry.name)
                if match is None:
                    continue
                pid = int(match.group(1))
                if pid == me:
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue  # gone since the listing
                version = (st.st_ino, st.st_size, st.st_mtime_ns)
                seen = self._left_out.get(entry.name)
                if seen is not None and seen[0] == version:
                    left_out[entry.name] = seen  # the same file again: counted already
                    continue
                try:
                    if not stat.S_ISREG(st.st_mode):
                        raise Invalid("not_regular", "is not a regular file")
                    state = self._parse(entry.path, pid, known)
                except Invalid as invalid:
                    left_out[entry.name] = (version, invalid.reason)
                    self._left(entry.path, invalid)
                    continue
                except FileNotFoundError:
                    continue
                out.append((state, not state["exited"] and _alive(pid)))
            self._left_out = left_out
        return out

    def _parse(self, path: str, pid: int, known: dict[str, str]) -> State:
        try:
            data = _read(path)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise Invalid("unreadable", f"cannot be read ({exc.strerror or exc})") from None
        try:
            state = json.loads(data)
        except RecursionError:
            raise Invalid("malformed", "is nested too deeply") from None
        except ValueError:
            raise Invalid("malformed", "is not JSON") from None
        return self.layout.check(state, pid, known)

    def _left(self, path: str, invalid: Invalid) -> None:
        self.invalid[invalid.reason] += 1
        if invalid.reason in self._warned:
            return
        self._warned.add(invalid.reason)
        log.warning(
            "tracer: metrics file %s %s: left out of the sum and counted in %s_total (logged once)",
            path,
            invalid.detail,
            INVALID_NAME,
        )

    def family(self) -> Metric:
        """``tracer_metrics_files_invalid_total``: files left out, by reason."""
        family = CounterMetricFamily(
            INVALID_NAME,
            "Files in metrics_dir left out of the sum (once per version of a file), by reason.",
            labels=["reason"],
        )
        with self._lock:
            counts = dict(self.invalid)
        for reason, count in counts.items():
            family.add_metric([reason], count)
        return family


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
