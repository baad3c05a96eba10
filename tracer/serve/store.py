"""The SQLite file of ``tracer serve``: spans, trace summaries, per-minute aggregates, metrics,
memory readings, leak events and profiles, in one file, on the standard library's sqlite3.

Layout (docs/design.md, "The viewer's store", says why):

* ``traces``: one row per trace (start, duration, root service and name, span and error counts,
  spans per service) and a 2,048-bit Bloom filter of what a search can ask for (services,
  operations, ``key=value`` tags) in 32 integer columns, so that a search is one walk of
  the start index in SQL; the few candidates it lets through are checked against the spans.
* ``spans``: one row per span, in arrival order, with the columns the summaries, edges and
  aggregates need as integers and 8-byte blobs (names interned in ``names``) and the rest of
  the record as raw deflate of compact JSON, primed with a dictionary of the record's usual
  keys. A unique index on (trace number, span id) finds a trace's spans and drops a span
  received twice.
* ``stats`` and ``edges``: per minute counts, errors and a log-bucket latency histogram of each
  series (service, kind, method, route, status class; spans and metrics apart) and of each
  edge between two services, kept up to date on insert: dashboards and the service map never
  read spans.
* ``hist_state``: the last cumulative point of each histogram series, so that the next point
  becomes a delta (and a restart loses nothing).

Writes go through one connection under a lock, each :meth:`Store.add` one transaction; reads
take a connection of their own from a pool (WAL mode: readers never wait for the writer).
"""

from __future__ import annotations

import json
import math
import os
import queue
import sqlite3
import threading
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypedDict

from tracer.serve.model import Decoded, HistogramPoint, LeakEvent, SpanRecord

__all__ = ["FORMAT", "Store", "TraceSummary"]

#: The file's layout version, in ``meta``; a file of another version is refused.
FORMAT = 1

#: The Bloom filter of a trace: ``_BLOOM_WORDS`` 64-bit columns, ``_BLOOM_HASHES`` bits a key.
_BLOOM_WORDS = 32
_BLOOM_BITS = _BLOOM_WORDS * 64
_BLOOM_HASHES = 5
_BLOOM_COLUMNS = [f"b{i}" for i in range(_BLOOM_WORDS)]

#: Latency buckets: bucket ``b`` holds durations in ``[_GROWTH**b, _GROWTH**(b+1))`` microseconds,
#: so a percentile read from them is within half a bucket (under 10%) of the real one.
_GROWTH = 1.2
_LOG_GROWTH = math.log(_GROWTH)
#: The bucket that counts errors, next to the latency buckets of a series and minute.
_ERRORS = -1
_MINUTE_US = 60_000_000

#: Spans added between two looks at the file's size (retention), and the share of ``max_size``
#: a retention pass brings the file down to, so that it does not run on every check.
CHECK_EVERY = 2_000
_RETAIN_TO = 0.9

#: Names kept in memory by id and by text, each way: span names can be as many as requests (a
#: path with an id in it), so the caches are emptied when full rather than left to grow.
_NAMES_KEPT = 200_000

#: The fields a span row keeps in columns; the rest of the record is the compressed JSON.
_COLUMNS = (
    "trace_id",
    "span_id",
    "parent_id",
    "start_us",
    "duration_us",
    "service",
    "name",
    "kind",
)
#: In the compressed JSON, tracer's four events as ``[[type, offset from start_us], ...]``.
_EVENTS_KEY = "\x01ev"

#: Primes deflate for a span record's JSON: its usual keys and values, so that even a small
#: record compresses well. Part of the file format: changing it means a new FORMAT.
_ZDICT = (
    b'"db.system.name":"postgresql","db.namespace":"","db.operation.name":"SELECT",'
    b'"db.collection.name":"","db.query.text":"SELECT * FROM  WHERE id = ?",'
    b'"server.address":"127.0.0.1","server.port":5432,"error.type":"'
    b'"attributes":{},"otel.kind":"","source":"otlp","source":"zipkin",'
    b'"tracestate":null,"request_id":null,"sampled":true,"must_collect":false,'
    b'"annotations":[],"tags":{},"db":null,"error":null,"error":{"type":"","message":"",'
    b'"stack":"Traceback (most recent call last):\\n  File \\"","http":null,'
    b'"http":{"method":"GET","url":"http://127.0.0.1:8000/","path":"/","status_code":200,'
    b'"route":null},"host":"localhost","pid":'
    b'"source":"tracer","request_id":"","\\u0001ev":[["sr",0],["ss",'
    b'"\\u0001ev":[["cs",0],["cr",'
)


class TraceSummary(TypedDict):
    """One trace as a search finds it."""

    trace_id: str
    start_us: int
    duration_us: int
    root_service: str
    root_name: str
    spans: int
    errors: int
    services: dict[str, int]


_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS names (id INTEGER PRIMARY KEY, name BLOB NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS traces (
    tno INTEGER PRIMARY KEY, tid BLOB NOT NULL UNIQUE, start_us INTEGER NOT NULL,
    duration_us INTEGER NOT NULL, root_service INTEGER NOT NULL, root_name INTEGER NOT NULL,
    spans INTEGER NOT NULL, errors INTEGER NOT NULL, services TEXT NOT NULL,
    {", ".join(f"{c} INTEGER NOT NULL" for c in _BLOOM_COLUMNS)});
CREATE INDEX IF NOT EXISTS traces_scan ON traces (
    start_us, duration_us, errors, {", ".join(_BLOOM_COLUMNS)});
CREATE TABLE IF NOT EXISTS spans (
    id INTEGER PRIMARY KEY, tno INTEGER NOT NULL, span_id BLOB NOT NULL, parent_id BLOB,
    start_us INTEGER NOT NULL, duration_us INTEGER NOT NULL, service INTEGER NOT NULL,
    name INTEGER NOT NULL, kind INTEGER NOT NULL, error INTEGER NOT NULL, data BLOB NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS spans_key ON spans (tno, span_id);
CREATE TABLE IF NOT EXISTS operations (
    service INTEGER, name INTEGER, kind INTEGER, PRIMARY KEY (service, name, kind)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY, source INTEGER NOT NULL, service INTEGER NOT NULL,
    kind INTEGER NOT NULL, method TEXT NOT NULL, route TEXT NOT NULL, status_class TEXT NOT NULL,
    UNIQUE (source, service, kind, method, route, status_class));
CREATE TABLE IF NOT EXISTS stats (
    series INTEGER, minute INTEGER, bucket INTEGER, n INTEGER NOT NULL,
    PRIMARY KEY (series, minute, bucket)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS edges (
    parent INTEGER, child INTEGER, minute INTEGER, bucket INTEGER, n INTEGER NOT NULL,
    PRIMARY KEY (parent, child, minute, bucket)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hist_state (
    key TEXT PRIMARY KEY, start_us INTEGER, time_us INTEGER, count INTEGER, buckets TEXT)
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS memory (
    service INTEGER, host TEXT, pid INTEGER, time_us INTEGER, rss INTEGER, heap INTEGER,
    PRIMARY KEY (service, host, pid, time_us)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leaks (
    service INTEGER, host TEXT, pid INTEGER, time_us INTEGER, measure TEXT, data TEXT NOT NULL,
    PRIMARY KEY (service, host, pid, time_us, measure)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS profiles (
    id INTEGER PRIMARY KEY, service TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL,
    started_at_us INTEGER, reason TEXT, summary TEXT NOT NULL, data BLOB NOT NULL,
    UNIQUE (service, host, pid, started_at_us, reason));
"""

# -- encoding ------------------------------------------------------------------------------------


def _utf8(text: str) -> bytes:
    # surrogatepass: a lone surrogate from a JSON body is stored and given back as it came.
    return text.encode("utf-8", "surrogatepass")


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _safe(text: str) -> str:
    """``text`` as a TEXT column takes it: a lone surrogate (possible in JSON) becomes U+FFFD.
    Only labels go through here; records and names keep theirs."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return text


def _dumps(value: Any) -> bytes:
    return _utf8(_ENCODER.encode(value))


def _loads(data: bytes) -> Any:
    return json.loads(data.decode("utf-8", "surrogatepass"))


def _compress(value: Any) -> bytes:
    # A 4 KiB window and a small hash table: a record is small, and the state of a full-size
    # compressor costs more to set up than the record takes to compress.
    packer = zlib.compressobj(6, zlib.DEFLATED, -12, 6, zlib.Z_DEFAULT_STRATEGY, _ZDICT)
    return packer.compress(_dumps(value)) + packer.flush()


def _inflate(data: bytes) -> bytes:
    unpacker = zlib.decompressobj(-15, _ZDICT)
    return unpacker.decompress(data) + unpacker.flush()


def _decompress(data: bytes) -> Any:
    return _loads(_inflate(data))


def _hex_bytes(value: Any, size: int) -> bytes | None:
    if not isinstance(value, str) or len(value) != 2 * size:
        return None
    try:
        return bytes.fromhex(value)
    except ValueError:
        return None


def _text(value: Any) -> str:
    """A tag's value as a search compares it: strings as they are, JSON for the rest."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _tag_pairs(record: SpanRecord) -> Iterator[tuple[str, str]]:
    """Every ``key=value`` a tag filter can match on this span: tags, attributes, ``http.*``,
    the database attributes and ``error.type``."""
    for part in ("tags", "attributes"):
        values = record.get(part)
        if isinstance(values, dict):
            for key, value in values.items():
                yield str(key), _text(value)
    http = record.get("http")
    if isinstance(http, dict):
        for key, value in http.items():
            if value is not None:
                yield f"http.{key}", _text(value)
    db = record.get("db")
    if isinstance(db, dict):
        for key, value in db.items():
            yield str(key), _text(value)
    error = record.get("error")
    if isinstance(error, dict) and error.get("type") is not None:
        yield "error.type", _text(error["type"])


_M64 = 0xFFFFFFFFFFFFFFFF
#: Each key's bits in the filter, as one integer: most keys (services, names, common tags) come
#: back in span after span. Cleared when full rather than evicted one by one.
_masks: dict[str, int] = {}
_MASKS_KEPT = 100_000


def _mask(key: str) -> int:
    found = _masks.get(key)
    if found is None:
        data = _utf8(key)
        first = zlib.crc32(data)
        step = zlib.crc32(data, 0x5BD1E995) | 1
        found = 0
        for i in range(_BLOOM_HASHES):
            found |= 1 << ((first + i * step) % _BLOOM_BITS)
        if len(_masks) >= _MASKS_KEPT:
            _masks.clear()
        _masks[key] = found
    return found


def _signed(word: int) -> int:
    """A 64-bit word as SQLite's signed integer."""
    return word - (1 << 64) if word >= 1 << 63 else word


def _bloom(keys: Iterable[str], words: Sequence[int] = ()) -> list[int]:
    """The filter of ``keys`` (added to ``words``, a stored filter) as signed 64-bit words."""
    whole = 0
    for i, word in enumerate(words):
        whole |= (word & _M64) << (64 * i)
    for key in keys:
        whole |= _mask(key)
    return [_signed((whole >> (64 * i)) & _M64) for i in range(_BLOOM_WORDS)]


def _tag_keys(record: SpanRecord, into: set[str]) -> None:
    """Adds to ``into`` the ``key=value`` of every pair of :func:`_tag_pairs`, faster."""
    for part in ("tags", "attributes"):
        values = record.get(part)
        if values and isinstance(values, dict):
            for key, value in values.items():
                into.add(f"{key}={value if type(value) is str else _text(value)}")
    http = record.get("http")
    if isinstance(http, dict):
        for key, value in http.items():
            if value is not None:
                into.add(f"http.{key}={value if type(value) is str else _text(value)}")
    db = record.get("db")
    if isinstance(db, dict):
        for key, value in db.items():
            into.add(f"{key}={value if type(value) is str else _text(value)}")
    error = record.get("error")
    if isinstance(error, dict) and error.get("type") is not None:
        into.add(f"error.type={_text(error['type'])}")


def _service_key(service: str) -> str:
    return "\x00s" + service


def _operation_key(service: str | None, name: str) -> str:
    return "\x00n" + name if service is None else f"\x00o{service}\x00{name}"


def _bucket(duration_us: float) -> int:
    return int(math.log(duration_us) / _LOG_GROWTH) if duration_us >= 1 else 0


def _bucket_value(bucket: int) -> float:
    """A bucket's middle (geometric), in microseconds."""
    return float(_GROWTH ** (bucket + 0.5))


def _percentiles(hist: Counter[int], quantiles: Sequence[float]) -> list[float | None]:
    total = sum(hist.values())
    if total <= 0:
        return [None] * len(quantiles)
    ordered = sorted(hist.items())
    out: list[float | None] = []
    for q in quantiles:
        rank = q * total
        seen = 0
        value = ordered[-1][0]
        for bucket, n in ordered:
            seen += n
            if seen >= rank:
                value = bucket
                break
        out.append(_bucket_value(value))
    return out


def _ms(values: list[float | None]) -> list[float | None]:
    return [None if v is None else round(v / 1000, 3) for v in values]


def _status_class(status: Any) -> str:
    if isinstance(status, int) and not isinstance(status, bool) and 200 <= status < 600:
        return f"{status // 100}xx"
    return "other"


def _int_or(value: Any, default: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return default
    try:
        return int(value)
    except (OverflowError, ValueError):
        return default


class _Span:
    """A span's columns, as the summaries and edges need them."""

    __slots__ = (
        "duration",
        "error",
        "kind",
        "name",
        "new",
        "parent",
        "service",
        "span_id",
        "start",
    )

    def __init__(
        self,
        span_id: bytes,
        parent: bytes | None,
        start: int,
        duration: int,
        service: int,
        name: int,
        kind: int,
        error: int,
        new: bool,
    ) -> None:
        self.span_id = span_id
        self.parent = parent
        self.start = start
        self.duration = duration
        self.service = service
        self.name = name
        self.kind = kind
        self.error = error
        self.new = new


# -- the store -------------------------------------------------------------------------------------


class Store:
    """The viewer's SQLite file at ``path`` (created when missing), kept under ``max_size``
    bytes by deleting whole traces, oldest first. Thread-safe: :meth:`add` from any thread
    (one writer at a time), every read from any thread at once."""

    def __init__(self, path: str | os.PathLike[str], max_size: int = 1 << 30) -> None:
        self.path = os.fspath(path)
        self.max_size = int(max_size)
        self.check_every = CHECK_EVERY
        self._lock = threading.Lock()
        self._closed = False
        self._readers: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._all_readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._ids: dict[str, int] = {}
        self._names: dict[int, str] = {}
        self._series: dict[tuple[int, int, int, str, str, str], int] = {}
        self._hist_state: dict[str, tuple[int, int, int, list[int]]] = {}
        self._since_check = 0
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            self._setup()
        except BaseException:
            self._db.close()
            raise

    def _setup(self) -> None:
        db = self._db
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA cache_size=-32768")
        db.execute("PRAGMA foreign_keys=OFF")
        with self._transaction():
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            row = db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta VALUES ('format', ?)", (str(FORMAT),))
            elif row[0] != str(FORMAT):
                raise ValueError(
                    f"{self.path} is a tracer serve file of format {row[0]}, this version reads"
                    f" format {FORMAT}: use another --db"
                )
        self._next_tno = 1 + int(
            db.execute("SELECT coalesce(max(tno), 0) FROM traces").fetchone()[0]
        )
        self._retain()

    # -- connections --------------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            # Ids handed out inside the transaction are gone with it.
            self._ids.clear()
            self._series.clear()
            self._hist_state.clear()
            self._next_tno = 0  # read again from the file when next needed
            raise
        self._db.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        if self._closed:
            raise RuntimeError("the store is closed")
        try:
            conn = self._readers.get_nowait()
        except queue.Empty:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA query_only=1")
            conn.execute("PRAGMA cache_size=-16384")
            conn.execute("PRAGMA mmap_size=268435456")
            with self._readers_lock:
                self._all_readers.append(conn)
        try:
            # One snapshot for the whole read: what a concurrent add commits is all or nothing.
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")
        finally:
            if self._closed:
                conn.close()
            else:
                self._readers.put(conn)

    def close(self) -> None:
        """Close the file (a checkpoint folds the write-ahead log back into it). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass
            self._db.close()
        with self._readers_lock:
            for conn in self._all_readers:
                conn.close()
            self._all_readers.clear()

    # -- names ---------------------------------------------------------------------------------

    def _id(self, name: str) -> int:
        found = self._ids.get(name)
        if found is None:
            db = self._db
            row = db.execute("SELECT id FROM names WHERE name = ?", (_utf8(name),)).fetchone()
            if row is None:
                found = int(
                    db.execute("INSERT INTO names (name) VALUES (?)", (_utf8(name),)).lastrowid or 0
                )
            else:
                found = int(row[0])
            if len(self._ids) >= _NAMES_KEPT:
                self._ids.clear()
            self._ids[name] = found
        return found

    def _name(self, conn: sqlite3.Connection, name_id: int) -> str:
        found = self._names.get(name_id)
        if found is None:
            row = conn.execute("SELECT name FROM names WHERE id = ?", (name_id,)).fetchone()
            found = "" if row is None else bytes(row[0]).decode("utf-8", "surrogatepass")
            if len(self._names) >= _NAMES_KEPT:
                self._names.clear()
            self._names[name_id] = found
        return found

    def _known_id(self, conn: sqlite3.Connection, name: str) -> int | None:
        row = conn.execute("SELECT id FROM names WHERE name = ?", (_utf8(name),)).fetchone()
        return None if row is None else int(row[0])

    def _series_id(
        self, source: int, service: int, kind: int, method: str, route: str, cls: str
    ) -> int:
        key = (source, service, kind, _safe(method), _safe(route), cls)
        found = self._series.get(key)
        if found is None:
            db = self._db
            row = db.execute(
                "SELECT id FROM series WHERE source = ? AND service = ? AND kind = ?"
                " AND method = ? AND route = ? AND status_class = ?",
                key,
            ).fetchone()
            if row is None:
                cur = db.execute(
                    "INSERT INTO series (source, service, kind, method, route, status_class)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    key,
                )
                found = int(cur.lastrowid or 0)
            else:
                found = int(row[0])
            self._series[key] = found
        return found

    # -- writing -------------------------------------------------------------------------------

    def add(self, decoded: Decoded) -> None:
        """Store what one request carried, in one transaction: spans (a span already stored is
        left as it is; spans of a trace already stored join it), histogram points (as deltas of
        their series), memory readings, leak events and profiles."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the store is closed")
            with self._transaction():
                added = self._add_spans(decoded.spans) if decoded.spans else 0
                if decoded.histograms:
                    self._add_histograms(decoded.histograms)
                if decoded.memory:
                    self._db.executemany(
                        "INSERT OR IGNORE INTO memory VALUES (?, ?, ?, ?, ?, ?)",
                        [
                            (
                                self._id(str(p["service"])),
                                _safe(str(p["host"])),
                                _int_or(p["pid"]),
                                _int_or(p["time_us"]),
                                p["rss_bytes"],
                                p["heap_blocks"],
                            )
                            for p in decoded.memory
                        ],
                    )
                if decoded.leaks:
                    self._add_leaks(decoded.leaks)
                if decoded.profiles:
                    self._add_profiles(decoded.profiles)
            self._since_check += added
            if self._since_check >= self.check_every:
                self._since_check = 0
                self._retain()

    def _add_spans(self, records: list[SpanRecord]) -> int:
        db = self._db
        by_trace: dict[bytes, list[tuple[bytes, SpanRecord]]] = {}
        for record in records:
            if not isinstance(record, dict):
                continue
            tid = _hex_bytes(record.get("trace_id"), 16)
            sid = _hex_bytes(record.get("span_id"), 8)
            if tid is None or sid is None:
                continue
            by_trace.setdefault(tid, []).append((sid, record))

        span_rows: list[tuple[Any, ...]] = []
        stats: Counter[tuple[int, int, int]] = Counter()
        edges: Counter[tuple[int, int, int, int]] = Counter()
        operations: set[tuple[int, int, int]] = set()
        added = 0
        known: dict[bytes, tuple[int, list[int]]] = {}
        olds: dict[int, dict[bytes, _Span]] = {}
        tids = list(by_trace)
        for i in range(0, len(tids), 500):
            chunk = tids[i : i + 500]
            for row in db.execute(
                f"SELECT tid, tno, {', '.join(_BLOOM_COLUMNS)} FROM traces"
                f" WHERE tid IN ({', '.join('?' * len(chunk))})",
                chunk,
            ):
                known[bytes(row[0])] = (int(row[1]), [int(w) for w in row[2:]])
        tnos = [t for t, _ in known.values()]
        for i in range(0, len(tnos), 500):
            chunk_no = tnos[i : i + 500]
            for old in db.execute(
                "SELECT tno, span_id, parent_id, start_us, duration_us, service, name, kind, error"
                f" FROM spans WHERE tno IN ({', '.join('?' * len(chunk_no))})",
                chunk_no,
            ):
                tno_, sid, parent, start, duration, svc, name, kind, err = old
                olds.setdefault(tno_, {})[sid] = _Span(
                    sid, parent, start, duration, svc, name, kind, err, False
                )
        new_traces: list[tuple[Any, ...]] = []
        old_traces: list[tuple[Any, ...]] = []
        client_id = self._id("client")
        if not self._next_tno:
            row = db.execute("SELECT coalesce(max(tno), 0) FROM traces").fetchone()
            self._next_tno = 1 + int(row[0])
        for tid, group in by_trace.items():
            found = known.get(tid)
            words: list[int] = []
            if found is None:
                tno = self._next_tno
                self._next_tno += 1
                spans: dict[bytes, _Span] = {}
            else:
                tno, words = found
                spans = olds.get(tno, {})
            keys: set[str] = set()
            fresh: list[tuple[_Span, SpanRecord]] = []
            for sid, record in group:
                if sid in spans:
                    continue  # a retry, or the same span twice in one body
                span = self._span(sid, record)
                spans[sid] = span
                fresh.append((span, record))
            if not fresh:
                continue
            for span, record in fresh:
                service = str(record.get("service"))
                name = str(record.get("name"))
                keys.add(_service_key(service))
                keys.add(_operation_key(service, name))
                keys.add(_operation_key(None, name))
                _tag_keys(record, keys)
                operations.add((span.service, span.name, span.kind))
                http = record.get("http")
                method = route = ""
                status: Any = None
                if isinstance(http, dict):
                    method = str(http.get("method") or "")
                    route = str(http.get("route") or "")
                    status = http.get("status_code")
                cls = _status_class(status)
                series = self._series_id(0, span.service, span.kind, method, route, cls)
                minute = span.start // _MINUTE_US
                stats[(series, minute, _bucket(span.duration))] += 1
                if span.error or cls == "5xx":
                    stats[(series, minute, _ERRORS)] += 1
            summary = self._summary(spans)
            for span in spans.values():
                parent = spans.get(span.parent) if span.parent is not None else None
                if parent is None or not (span.new or parent.new):
                    continue
                if parent.service == span.service:
                    continue
                client = parent.kind == client_id
                duration = parent.duration if client else span.duration
                failed = span.error or (client and parent.error)
                minute = parent.start // _MINUTE_US
                edges[(parent.service, span.service, minute, _bucket(duration))] += 1
                if failed:
                    edges[(parent.service, span.service, minute, _ERRORS)] += 1
            bloom = _bloom(keys, words)
            if found is None:
                new_traces.append((tno, tid, *summary, *bloom))
            else:
                old_traces.append((*summary, *bloom, tno))
            for span, record in fresh:
                span_rows.append(
                    (
                        tno,
                        span.span_id,
                        span.parent,
                        span.start,
                        span.duration,
                        span.service,
                        span.name,
                        span.kind,
                        span.error,
                        _compress(self._rest(record, span)),
                    )
                )
            added += len(fresh)
        if new_traces:
            db.executemany(
                f"INSERT INTO traces (tno, tid, start_us, duration_us, root_service, root_name,"
                f" spans, errors, services, {', '.join(_BLOOM_COLUMNS)})"
                f" VALUES ({', '.join('?' * (9 + _BLOOM_WORDS))})",
                new_traces,
            )
        if old_traces:
            db.executemany(
                "UPDATE traces SET start_us = ?, duration_us = ?, root_service = ?,"
                " root_name = ?, spans = ?, errors = ?, services = ?, "
                + ", ".join(f"{c} = ?" for c in _BLOOM_COLUMNS)
                + " WHERE tno = ?",
                old_traces,
            )
        if span_rows:
            db.executemany(
                "INSERT INTO spans (tno, span_id, parent_id, start_us, duration_us, service, name,"
                " kind, error, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                span_rows,
            )
        if operations:
            db.executemany("INSERT OR IGNORE INTO operations VALUES (?, ?, ?)", sorted(operations))
        if stats:
            db.executemany(
                "INSERT INTO stats VALUES (?, ?, ?, ?)"
                " ON CONFLICT DO UPDATE SET n = n + excluded.n",
                [(*key, n) for key, n in stats.items()],
            )
        if edges:
            db.executemany(
                "INSERT INTO edges VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT DO UPDATE SET n = n + excluded.n",
                [(*key, n) for key, n in edges.items()],
            )
        return added

    def _span(self, sid: bytes, record: SpanRecord) -> _Span:
        return _Span(
            sid,
            _hex_bytes(record.get("parent_id"), 8),
            _int_or(record.get("start_us")),
            _int_or(record.get("duration_us")),
            self._id(str(record.get("service"))),
            self._id(str(record.get("name"))),
            self._id(str(record.get("kind"))),
            1 if record.get("error") else 0,
            new=True,
        )

    def _summary(self, spans: dict[bytes, _Span]) -> tuple[int, int, int, int, int, int, str]:
        """(start, duration, root service, root name, spans, errors, services JSON): the root is
        the earliest span whose parent is not in the trace."""
        start = min(s.start for s in spans.values())
        end = max(s.start + s.duration for s in spans.values())
        roots = [s for s in spans.values() if s.parent is None or s.parent not in spans]
        root = min(roots or spans.values(), key=lambda s: (s.start, s.parent is not None))
        services: Counter[str] = Counter()
        errors = 0
        for span in spans.values():
            services[self._ids_name(span.service)] += 1
            errors += span.error
        return (
            start,
            end - start,
            root.service,
            root.name,
            len(spans),
            errors,
            json.dumps(dict(sorted(services.items()))),
        )

    def _ids_name(self, name_id: int) -> str:
        """A name from its id, on the write connection."""
        found = self._names.get(name_id)
        if found is None:
            found = self._name(self._db, name_id)
        return found

    def _rest(self, record: SpanRecord, span: _Span) -> dict[str, Any]:
        """What the columns do not hold of ``record`` (a column whose value it could not keep
        as it came, a string id in capitals, a start that is not an integer, stays in here)."""
        rest = record.copy()
        missing = []
        for key in _COLUMNS:
            if key not in rest:
                # Marked, so that the record comes back without it.
                missing.append(key)
                continue
            value = rest[key]
            if key in ("start_us", "duration_us"):
                kept = type(value) is int
            elif key == "parent_id":
                kept = value is None or (span.parent is not None and value == span.parent.hex())
            elif key in ("trace_id", "span_id"):
                kept = value == value.lower()
            else:
                kept = type(value) is str
            if kept:
                del rest[key]
        if missing:
            rest["\x01missing"] = missing
        events = rest.get("events")
        if (
            isinstance(events, list)
            and "start_us" not in rest
            and all(
                type(e) is dict
                and len(e) == 2
                and type(e.get("type")) is str
                and type(e.get("time_us")) is int
                for e in events
            )
        ):
            del rest["events"]
            start = span.start
            rest[_EVENTS_KEY] = [[e["type"], e["time_us"] - start] for e in events]
        return rest

    def _add_histograms(self, points: list[HistogramPoint]) -> None:
        db = self._db
        stats: Counter[tuple[int, int, int]] = Counter()
        for point in sorted(points, key=lambda p: _int_or(p.get("time_us"))):
            status = point.get("status_code")
            key = json.dumps(
                [
                    point["service"],
                    point["host"],
                    point["pid"],
                    point["kind"],
                    point["method"],
                    point["route"],
                    status,
                    list(point["bounds"]),
                ]
            )
            state = self._hist_state.get(key)
            if state is None:
                row = db.execute(
                    "SELECT start_us, time_us, count, buckets FROM hist_state WHERE key = ?", (key,)
                ).fetchone()
                if row is not None:
                    state = (int(row[0]), int(row[1]), int(row[2]), json.loads(row[3]))
            start_us = _int_or(point["start_us"])
            time_us = _int_or(point["time_us"])
            counts = [_int_or(n) for n in point["bucket_counts"]]
            count = _int_or(point["count"])
            if state is not None and time_us <= state[1]:
                continue  # a point seen already (a retry) or older than the last one
            if (
                state is None
                or start_us != state[0]
                or count < state[2]
                or len(counts) != len(state[3])
                or any(n < o for n, o in zip(counts, state[3], strict=True))
            ):
                delta = counts  # a new series, or a reset: the point is its own interval
            else:
                delta = [n - o for n, o in zip(counts, state[3], strict=True)]
            self._hist_state[key] = (start_us, time_us, count, counts)
            db.execute(
                "INSERT OR REPLACE INTO hist_state VALUES (?, ?, ?, ?, ?)",
                (key, start_us, time_us, count, json.dumps(counts)),
            )
            if not any(delta):
                continue
            kind = str(point["kind"])
            code = _int_or(status)
            cls = _status_class(code)
            series = self._series_id(
                1,
                self._id(str(point["service"])),
                self._id(kind),
                str(point["method"]),
                str(point["route"]),
                cls,
            )
            minute = time_us // _MINUTE_US
            bounds = [float(b) * 1e6 for b in point["bounds"]]
            for i, n in enumerate(delta):
                if n <= 0:
                    continue
                low = bounds[i - 1] if i > 0 else 0.0
                high = bounds[i] if i < len(bounds) else None
                if high is None:
                    value = low
                elif low > 0:
                    value = math.sqrt(low * high)
                else:
                    value = high / 2
                stats[(series, minute, _bucket(value))] += n
            if cls == "5xx" or (kind == "client" and code == 0):
                stats[(series, minute, _ERRORS)] += sum(n for n in delta if n > 0)
        if stats:
            db.executemany(
                "INSERT INTO stats VALUES (?, ?, ?, ?)"
                " ON CONFLICT DO UPDATE SET n = n + excluded.n",
                [(*key, n) for key, n in stats.items()],
            )

    def _add_leaks(self, leaks: list[LeakEvent]) -> None:
        self._db.executemany(
            "INSERT OR IGNORE INTO leaks VALUES (?, ?, ?, ?, ?, ?)",
            [
                (
                    self._id(str(e["service"])),
                    _safe(str(e["host"])),
                    _int_or(e["pid"]),
                    _int_or(e["time_us"]),
                    _safe(str(e.get("measure"))),
                    json.dumps(e),
                )
                for e in leaks
            ],
        )

    def _add_profiles(self, profiles: list[dict[str, Any]]) -> None:
        for profile in profiles:
            summary = {
                "service": str(profile.get("service") or ""),
                "host": str(profile.get("host") or ""),
                "pid": _int_or(profile.get("pid")),
                "started_at_us": profile.get("started_at_us"),
                "duration_s": profile.get("duration_s"),
                "samples": profile.get("samples"),
                "reason": profile.get("reason"),
                "routes": profile.get("routes"),
            }
            self._db.execute(
                "INSERT OR IGNORE INTO profiles (service, host, pid, started_at_us, reason,"
                " summary, data) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    _safe(str(summary["service"])),
                    _safe(str(summary["host"])),
                    summary["pid"],
                    _int_or(profile.get("started_at_us"), 0),
                    _safe(str(profile.get("reason"))),
                    json.dumps(summary),
                    zlib.compress(_dumps(profile), 6),
                ),
            )

    # -- retention -----------------------------------------------------------------------------

    def _used(self) -> int:
        db = self._db
        pages = int(db.execute("PRAGMA page_count").fetchone()[0])
        free = int(db.execute("PRAGMA freelist_count").fetchone()[0])
        size = int(db.execute("PRAGMA page_size").fetchone()[0])
        return (pages - free) * size

    def _retain(self) -> None:
        """Delete whole traces, oldest first, while the file holds more than ``max_size``; the
        pages they free are reused by what comes next. Aggregates, memory readings and profiles
        older than the oldest trace kept go with them, so the file holds one window of time."""
        db = self._db
        used = self._used()
        if used <= self.max_size:
            return
        target = self.max_size * _RETAIN_TO
        for _ in range(64):
            if used <= target:
                break
            traces = int(db.execute("SELECT count(*) FROM traces").fetchone()[0])
            with self._transaction():
                if traces:
                    count = max(1, min(traces, math.ceil((used - target) / (used / traces))))
                    oldest = db.execute(
                        "SELECT tno, start_us FROM traces ORDER BY start_us, tno LIMIT ?", (count,)
                    ).fetchall()
                    db.executemany("DELETE FROM spans WHERE tno = ?", [(r[0],) for r in oldest])
                    db.executemany("DELETE FROM traces WHERE tno = ?", [(r[0],) for r in oldest])
                    kept = db.execute("SELECT min(start_us) FROM traces").fetchone()[0]
                    horizon = int(oldest[-1][1]) + 1 if kept is None else int(kept)
                else:
                    # No trace left to delete: the older half of the aggregates and readings.
                    low, high = db.execute("SELECT min(minute), max(minute) FROM stats").fetchone()
                    if low is None:
                        horizon = 1 << 62
                    else:
                        horizon = (low + (high - low + 1) // 2) * _MINUTE_US
                self._drop_before(horizon)
            used = self._used()

    def _drop_before(self, horizon_us: int) -> None:
        db = self._db
        minute = horizon_us // _MINUTE_US
        db.execute("DELETE FROM stats WHERE minute < ?", (minute,))
        db.execute("DELETE FROM edges WHERE minute < ?", (minute,))
        db.execute("DELETE FROM memory WHERE time_us < ?", (horizon_us,))
        db.execute("DELETE FROM leaks WHERE time_us < ?", (horizon_us,))
        db.execute("DELETE FROM profiles WHERE started_at_us < ?", (horizon_us,))

    # -- reading -------------------------------------------------------------------------------

    def search(
        self,
        *,
        service: str | None = None,
        operation: str | None = None,
        min_duration_us: int | None = None,
        max_duration_us: int | None = None,
        errors: bool = False,
        tags: Sequence[tuple[str, str]] = (),
        start_us: int | None = None,
        end_us: int | None = None,
        limit: int = 20,
    ) -> list[TraceSummary]:
        """The traces that match every filter given, newest first (by their start), at most
        ``limit``. ``operation`` is a span name (of ``service`` when given); each ``(key,
        value)`` of ``tags`` must be matched by some span of the trace, on its tags, attributes,
        ``http.*`` fields, database attributes or ``error.type``; ``start_us``/``end_us`` bound
        the trace's start."""
        limit = max(1, min(int(limit), 10_000))
        where: list[str] = []
        params: list[Any] = []
        for column, op, value in (
            ("start_us", ">=", start_us),
            ("start_us", "<=", end_us),
            ("duration_us", ">=", min_duration_us),
            ("duration_us", "<=", max_duration_us),
        ):
            if value is not None:
                where.append(f"{column} {op} ?")
                params.append(int(value))
        if errors:
            where.append("errors > 0")
        keys: list[str] = []
        if service is not None:
            keys.append(_service_key(service))
        if operation is not None:
            keys.append(_operation_key(service, operation))
        wanted = [(str(k), str(v)) for k, v in tags]
        keys.extend(f"{k}={v}" for k, v in wanted)
        if keys:
            masks = [w & 0xFFFFFFFFFFFFFFFF for w in _bloom(keys)]
            for column, mask in zip(_BLOOM_COLUMNS, masks, strict=True):
                if mask:
                    where.append(f"({column} & ?) = ?")
                    params.extend((_signed(mask), _signed(mask)))
        # Every filter SQL can test is in the index: the walk reads no table row, and only the
        # candidates it yields are looked up.
        sql = (
            "SELECT tno FROM traces INDEXED BY traces_scan"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY start_us DESC"
        )
        found: list[TraceSummary] = []
        with self._read() as conn:
            service_id = op_id = None
            if service is not None:
                service_id = self._known_id(conn, service)
                if service_id is None:
                    return []
            if operation is not None:
                op_id = self._known_id(conn, operation)
                if op_id is None:
                    return []
            for (tno,) in conn.execute(sql, params):
                row = conn.execute(
                    "SELECT tno, tid, start_us, duration_us, root_service, root_name, spans,"
                    " errors, services FROM traces WHERE tno = ?",
                    (tno,),
                ).fetchone()
                services: dict[str, int] = json.loads(row[8])
                if service is not None and service not in services:
                    continue
                if op_id is not None and not self._has_operation(conn, row[0], service_id, op_id):
                    continue
                if wanted and not self._has_tags(conn, row[0], wanted):
                    continue
                found.append(
                    {
                        "trace_id": bytes(row[1]).hex(),
                        "start_us": row[2],
                        "duration_us": row[3],
                        "root_service": self._name(conn, row[4]),
                        "root_name": self._name(conn, row[5]),
                        "spans": row[6],
                        "errors": row[7],
                        "services": services,
                    }
                )
                if len(found) >= limit:
                    break
        return found

    def _has_operation(
        self, conn: sqlite3.Connection, tno: int, service_id: int | None, op_id: int
    ) -> bool:
        params: tuple[int, ...]
        if service_id is None:
            sql, params = "SELECT 1 FROM spans WHERE tno = ? AND name = ? LIMIT 1", (tno, op_id)
        else:
            sql = "SELECT 1 FROM spans WHERE tno = ? AND name = ? AND service = ? LIMIT 1"
            params = (tno, op_id, service_id)
        return conn.execute(sql, params).fetchone() is not None

    def _has_tags(self, conn: sqlite3.Connection, tno: int, wanted: list[tuple[str, str]]) -> bool:
        left = set(wanted)
        # A span whose JSON holds none of the values (as they are, or escaped as JSON strings)
        # cannot match: most false positives of the filter end at that test, unparsed.
        needles = [(_utf8(v), _utf8(_ENCODER.encode(v)[1:-1])) for _, v in wanted]
        for row in conn.execute(
            "SELECT tno, span_id, parent_id, start_us, duration_us, service, name, kind, data"
            " FROM spans WHERE tno = ?",
            (tno,),
        ):
            raw = _inflate(row[8])
            if not any(a in raw or b in raw for a, b in needles):
                continue
            record = self._record(conn, b"", row, raw)
            left.difference_update(_tag_pairs(record))
            if not left:
                return True
        return False

    def _record(
        self, conn: sqlite3.Connection, tid: bytes, row: Sequence[Any], raw: bytes | None = None
    ) -> SpanRecord:
        rest: dict[str, Any] = _loads(_inflate(row[8]) if raw is None else raw)
        start = int(row[3])
        record: SpanRecord = {
            "trace_id": tid.hex(),
            "span_id": bytes(row[1]).hex(),
            "parent_id": None if row[2] is None else bytes(row[2]).hex(),
            "kind": self._name(conn, row[7]),
            "name": self._name(conn, row[6]),
            "service": self._name(conn, row[5]),
            "start_us": start,
            "duration_us": int(row[4]),
        }
        events = rest.pop(_EVENTS_KEY, None)
        if events is not None:
            record["events"] = [{"type": t, "time_us": start + d} for t, d in events]
        for key in rest.pop("\x01missing", ()):
            record.pop(key, None)
        record.update(rest)
        return record

    def trace(self, trace_id: str) -> list[SpanRecord] | None:
        """Every span of a trace, earliest first; None when no trace has that id."""
        tid = _hex_bytes(trace_id.lower() if isinstance(trace_id, str) else None, 16)
        if tid is None:
            return None
        with self._read() as conn:
            row = conn.execute("SELECT tno FROM traces WHERE tid = ?", (tid,)).fetchone()
            if row is None:
                return None
            return [
                self._record(conn, tid, r)
                for r in conn.execute(
                    "SELECT tno, span_id, parent_id, start_us, duration_us, service, name, kind,"
                    " data FROM spans WHERE tno = ? ORDER BY start_us, id",
                    (row[0],),
                )
            ]

    def services(self) -> list[str]:
        """Every service that sent spans or request metrics, sorted."""
        with self._read() as conn:
            ids = {
                int(r[0])
                for r in conn.execute(
                    "SELECT DISTINCT service FROM operations"
                    " UNION SELECT DISTINCT service FROM series"
                )
            }
            return sorted(self._name(conn, i) for i in ids)

    def operations(self, service: str) -> list[dict[str, Any]]:
        """The span names of ``service`` and their kinds: ``[{"name", "kind"}]``, sorted."""
        with self._read() as conn:
            service_id = self._known_id(conn, service)
            if service_id is None:
                return []
            out = [
                {"name": self._name(conn, r[0]), "kind": self._name(conn, r[1])}
                for r in conn.execute(
                    "SELECT name, kind FROM operations WHERE service = ?", (service_id,)
                )
            ]
        return sorted(out, key=lambda o: (o["name"], o["kind"]))

    def dependencies(
        self, start_us: int | None = None, end_us: int | None = None
    ) -> dict[str, Any]:
        """The service map between ``start_us`` and ``end_us`` (by minute): services with their
        span and error counts, and an edge for each pair of services where a span of one has a
        child span of the other, with its calls, errors and p95 latency (of the client span
        when the caller's span is one, else of the child)."""
        low, high = self._minutes(start_us, end_us)
        with self._read() as conn:
            spans: Counter[int] = Counter()
            failed: Counter[int] = Counter()
            for service, bucket, n in conn.execute(
                "SELECT series.service, stats.bucket, sum(stats.n) FROM stats"
                " JOIN series ON series.id = stats.series"
                " WHERE series.source = 0 AND stats.minute BETWEEN ? AND ?"
                " GROUP BY series.service, stats.bucket = -1",
                (low, high),
            ):
                if bucket == _ERRORS:
                    failed[service] += n
                else:
                    spans[service] += n
            edges: dict[tuple[int, int], Counter[int]] = {}
            for parent, child, bucket, n in conn.execute(
                "SELECT parent, child, bucket, sum(n) FROM edges WHERE minute BETWEEN ? AND ?"
                " GROUP BY parent, child, bucket",
                (low, high),
            ):
                edges.setdefault((parent, child), Counter())[bucket] += n
            services = [
                {"name": self._name(conn, s), "spans": spans[s], "errors": failed[s]} for s in spans
            ]
            out_edges = []
            for (parent, child), hist in edges.items():
                errors_n = hist.pop(_ERRORS, 0)
                calls = sum(hist.values())
                (p95,) = _percentiles(hist, (0.95,))
                out_edges.append(
                    {
                        "from": self._name(conn, parent),
                        "to": self._name(conn, child),
                        "calls": calls,
                        "errors": errors_n,
                        "error_ratio": round(errors_n / calls, 4) if calls else 0.0,
                        "p95_us": None if p95 is None else round(p95),
                    }
                )
        services.sort(key=lambda s: str(s["name"]))
        out_edges.sort(key=lambda e: (e["from"], e["to"]))
        return {"services": services, "edges": out_edges}

    @staticmethod
    def _minutes(start_us: int | None, end_us: int | None) -> tuple[int, int]:
        low = -(1 << 62) if start_us is None else int(start_us) // _MINUTE_US
        high = 1 << 62 if end_us is None else int(end_us) // _MINUTE_US
        return low, high

    def dashboard(
        self,
        service: str,
        start_us: int | None = None,
        end_us: int | None = None,
        step_s: int = 60,
    ) -> dict[str, Any]:
        """Requests per minute by status class and p50/p95/p99 of ``service``'s server requests
        over time, and per route (method and route template), with the slowest and most failing
        routes: from its request-duration histograms when it sent some in the range, else from
        its server spans. ``step_s`` is rounded to whole minutes (what the store keeps)."""
        low, high = self._minutes(start_us, end_us)
        with self._read() as conn:
            service_id = self._known_id(conn, service)
            server = self._known_id(conn, "server")
            rows: list[tuple[str, str, str, int, int, int]] = []
            source = "spans"
            if service_id is not None and server is not None:
                for code, name in ((1, "metrics"), (0, "spans")):
                    rows = conn.execute(
                        "SELECT series.method, series.route, series.status_class, stats.minute,"
                        " stats.bucket, stats.n FROM series JOIN stats ON stats.series = series.id"
                        " WHERE series.source = ? AND series.service = ? AND series.kind = ?"
                        " AND stats.minute BETWEEN ? AND ?",
                        (code, service_id, server, low, high),
                    ).fetchall()
                    if rows:
                        source = name
                        break
        step_min = max(1, round(max(int(step_s), 60) / 60))
        if rows:
            first = min(r[3] for r in rows) if start_us is None else low
            last = max(r[3] for r in rows) if end_us is None else high
        else:
            first = last = 0
        while (last - first) // step_min > 1440:
            step_min *= 2
        steps = (last - first) // step_min + 1 if rows else 0
        per_step_min = step_min
        span_minutes = max(1, last - first + 1)

        classes = ("2xx", "3xx", "4xx", "5xx", "other")
        rpm = [dict.fromkeys(classes, 0.0) for _ in range(steps)]
        hists: list[Counter[int]] = [Counter() for _ in range(steps)]
        routes: dict[tuple[str, str], dict[str, Any]] = {}
        for method, route, cls, minute, bucket, n in rows:
            index = (minute - first) // step_min
            entry = routes.setdefault(
                (method, route),
                {"errors": 0, "hist": Counter(), "steps": {}},
            )
            if bucket == _ERRORS:
                entry["errors"] += n
                continue
            rpm[index][cls if cls in classes else "other"] += n / per_step_min
            hists[index][bucket] += n
            entry["hist"][bucket] += n
            step = entry["steps"].setdefault(index, Counter())
            step[bucket] += n
        series = []
        for i in range(steps):
            p50, p95, p99 = _ms(_percentiles(hists[i], (0.5, 0.95, 0.99)))
            series.append(
                {
                    "time_us": (first + i * step_min) * _MINUTE_US,
                    "rpm": {k: round(v, 3) for k, v in rpm[i].items()},
                    "p50_ms": p50,
                    "p95_ms": p95,
                    "p99_ms": p99,
                }
            )
        out_routes = []
        for (method, route), entry in routes.items():
            requests = sum(entry["hist"].values())
            p50, p95, p99 = _ms(_percentiles(entry["hist"], (0.5, 0.95, 0.99)))
            route_series = []
            for index in sorted(entry["steps"]):
                hist = entry["steps"][index]
                s50, s95, s99 = _ms(_percentiles(hist, (0.5, 0.95, 0.99)))
                route_series.append(
                    {
                        "time_us": (first + index * step_min) * _MINUTE_US,
                        "rpm": round(sum(hist.values()) / per_step_min, 3),
                        "p50_ms": s50,
                        "p95_ms": s95,
                        "p99_ms": s99,
                    }
                )
            out_routes.append(
                {
                    "method": method,
                    "route": route,
                    "requests": requests,
                    "rpm": round(requests / span_minutes, 3),
                    "errors": entry["errors"],
                    "error_ratio": round(entry["errors"] / requests, 4) if requests else 0.0,
                    "p50_ms": p50,
                    "p95_ms": p95,
                    "p99_ms": p99,
                    "series": route_series,
                }
            )
        out_routes.sort(key=lambda r: (-r["requests"], r["method"], r["route"]))
        slowest = sorted(
            (r for r in out_routes if r["p95_ms"] is not None), key=lambda r: -r["p95_ms"]
        )[:10]
        failing = sorted((r for r in out_routes if r["errors"]), key=lambda r: -r["errors"])[:10]
        return {
            "service": service,
            "source": source,
            "step_s": step_min * 60,
            "series": series,
            "routes": out_routes,
            "slowest": slowest,
            "failing": failing,
        }

    def memory(
        self, service: str | None = None, start_us: int | None = None, end_us: int | None = None
    ) -> dict[str, Any]:
        """RSS and heap readings and leak events per process (service, host, pid), in time
        order."""
        low = -(1 << 62) if start_us is None else int(start_us)
        high = 1 << 62 if end_us is None else int(end_us)
        processes: dict[tuple[int, str, int], dict[str, Any]] = {}
        with self._read() as conn:
            where = "time_us BETWEEN ? AND ?"
            params: list[Any] = [low, high]
            if service is not None:
                service_id = self._known_id(conn, service)
                if service_id is None:
                    return {"processes": []}
                where += " AND service = ?"
                params.append(service_id)
            for sid, host, pid, time_us, rss, heap in conn.execute(
                f"SELECT service, host, pid, time_us, rss, heap FROM memory WHERE {where}"
                " ORDER BY service, host, pid, time_us",
                params,
            ):
                process = self._process(conn, processes, sid, host, pid)
                process["points"].append(
                    {"time_us": time_us, "rss_bytes": rss, "heap_blocks": heap}
                )
            for sid, host, pid, data in conn.execute(
                f"SELECT service, host, pid, data FROM leaks WHERE {where}"
                " ORDER BY service, host, pid, time_us",
                params,
            ):
                self._process(conn, processes, sid, host, pid)["leaks"].append(json.loads(data))
        out = sorted(processes.values(), key=lambda p: (p["service"], p["host"], p["pid"]))
        return {"processes": out}

    def _process(
        self,
        conn: sqlite3.Connection,
        processes: dict[tuple[int, str, int], dict[str, Any]],
        sid: int,
        host: str,
        pid: int,
    ) -> dict[str, Any]:
        key = (sid, host, pid)
        found = processes.get(key)
        if found is None:
            found = processes[key] = {
                "service": self._name(conn, sid),
                "host": host,
                "pid": pid,
                "points": [],
                "leaks": [],
            }
        return found

    def profiles(self, service: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Profile summaries, newest first: ``{"id", "service", "host", "pid",
        "started_at_us", "duration_s", "samples", "reason", "routes"}``."""
        limit = max(1, min(int(limit), 10_000))
        with self._read() as conn:
            if service is None:
                rows = conn.execute(
                    "SELECT id, summary FROM profiles ORDER BY started_at_us DESC, id DESC LIMIT ?",
                    (limit,),
                ).fetchall()
            else:
                rows = conn.execute(
                    "SELECT id, summary FROM profiles WHERE service = ?"
                    " ORDER BY started_at_us DESC, id DESC LIMIT ?",
                    (service, limit),
                ).fetchall()
        return [{"id": r[0], **_loads(_utf8(r[1]))} for r in rows]

    def profile(self, profile_id: int) -> dict[str, Any] | None:
        """The whole profile dict as it was received (with its ``id``); None when unknown."""
        with self._read() as conn:
            row = conn.execute(
                "SELECT data FROM profiles WHERE id = ?", (int(profile_id),)
            ).fetchone()
        if row is None:
            return None
        profile: dict[str, Any] = _loads(zlib.decompress(row[0]))
        return {"id": int(profile_id), **profile}

    def stats(self) -> dict[str, Any]:
        """``{"spans", "traces", "bytes", "max_size"}``: what the file holds and the bytes its
        pages in use take."""
        with self._read() as conn:
            traces, spans = conn.execute(
                "SELECT count(*), coalesce(sum(spans), 0) FROM traces"
            ).fetchone()
            pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
            free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
            size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        return {
            "spans": int(spans),
            "traces": int(traces),
            "bytes": (pages - free) * size,
            "max_size": self.max_size,
        }
