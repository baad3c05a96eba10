"""A size-capped store of undelivered batches, in one SQLite file, shared by processes.

When the reporter cannot deliver a batch after its retries, the pipeline puts the serialised
batch here and sends it again later, from this process or from the next one to start. Several
processes of one service (workers of a pre-fork server, say) may share the file: ``take`` leases
rows to the process that took them, so two processes never send the same batch at the same time.
A lease that is neither acked nor released (its process died) expires after ``lease_seconds``
and the rows become takeable again; so a batch is delivered at least once, rarely twice.

Default location: ``$TRACE_SPOOL_DIR/<service>.sqlite`` when ``TRACE_SPOOL_DIR`` is set, else
``$XDG_CACHE_HOME/tracer/spool/<service>.sqlite``, else ``~/.cache/tracer/spool/<service>.sqlite``
(see :func:`default_path`). The file is created readable by its owner only: spans can carry
private data.

The cap counts payload bytes; SQLite adds some overhead on disk, and the file keeps its largest
size (freed pages are reused, not returned to the file system).

Durability: the database runs in WAL mode with ``synchronous=NORMAL``, so a stored batch survives
a crash of the process; a power loss can lose the last few stored batches. Every write is
checkpointed into the main file at once, so a damaged ``-wal`` file can lose nothing that was
stored before it; one whose header is not a WAL header is moved aside (kept for inspection) with a
warning. Keep the file on a local disk: WAL mode needs shared memory that network file systems do
not provide.

Errors: every SQLite failure is raised as :class:`SpoolError`; a file that is not an SQLite
database, or a damaged one, as :class:`SpoolCorrupt` (the pipeline moves such a file aside with
:func:`quarantine` and starts a fresh one); a lock held by another connection for longer than
``busy_timeout`` as :class:`SpoolBusy`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pathlib
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable

from tracer import context, options

__all__ = [
    "DEFAULT_MAX_BYTES",
    "Spool",
    "SpoolBusy",
    "SpoolCorrupt",
    "SpoolError",
    "Stored",
    "default_path",
    "quarantine",
]

log = logging.getLogger("tracer")

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
DEFAULT_LEASE_SECONDS = 60.0
# How long one statement waits for another process's write lock before giving up (the writes of
# a service's other processes are short; a lock held for longer is someone else's).
BUSY_TIMEOUT_SECONDS = 1.0
# The first four bytes of a WAL file (big-endian, either checksum byte order).
_WAL_MAGIC = (b"\x37\x7f\x06\x82", b"\x37\x7f\x06\x83")
_SCHEMA_VERSION = 1
_SCHEMA = (
    """CREATE TABLE batches (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        payload     BLOB    NOT NULL,
        count       INTEGER NOT NULL,
        size        INTEGER NOT NULL,
        created     REAL    NOT NULL,
        lease_owner TEXT,
        lease_until REAL
    )""",
    # Running totals kept by triggers, so the cap check and pending() never scan the table.
    """CREATE TABLE totals (
        one     INTEGER PRIMARY KEY CHECK (one = 1),
        batches INTEGER NOT NULL,
        spans   INTEGER NOT NULL,
        bytes   INTEGER NOT NULL
    )""",
    "INSERT INTO totals VALUES (1, 0, 0, 0)",
    """CREATE TRIGGER batches_added AFTER INSERT ON batches BEGIN
        UPDATE totals
        SET batches = batches + 1, spans = spans + NEW.count, bytes = bytes + NEW.size;
    END""",
    """CREATE TRIGGER batches_removed AFTER DELETE ON batches BEGIN
        UPDATE totals
        SET batches = batches - 1, spans = spans - OLD.count, bytes = bytes - OLD.size;
    END""",
    f"PRAGMA user_version = {_SCHEMA_VERSION}",
)
# Row ids per statement, well under SQLite's limit on bound parameters.
_CHUNK = 500
# Connections a forked child inherited. They are kept referenced, never closed: closing (or
# garbage-collecting) a connection copied from the parent could disturb the parent's locks.
_inherited: list[sqlite3.Connection] = []


class SpoolError(Exception):
    """The spool file cannot be opened or used (unreadable, corrupt, not a spool, disk full)."""


class SpoolCorrupt(SpoolError):
    """The file is not an SQLite database, or a damaged one: it cannot be repaired in place."""


class SpoolBusy(SpoolError):
    """Another connection held the file's lock for longer than the busy timeout."""


class Stored:
    """What one :meth:`Spool.put_many` did with one batch."""

    __slots__ = ("evicted", "evicted_owned", "stored")

    def __init__(self, stored: bool, evicted: int = 0, evicted_owned: int = 0) -> None:
        #: Whether the batch is in the spool now (False: refused, larger than the room).
        self.stored = stored
        #: Spans of older batches deleted to make room for this one.
        self.evicted = evicted
        #: Of those, the spans of batches whose payload starts with the caller's ``owner``.
        self.evicted_owned = evicted_owned

    def __repr__(self) -> str:
        return f"Stored({self.stored}, evicted={self.evicted}, owned={self.evicted_owned})"


def quarantine(path: str | os.PathLike[str]) -> pathlib.Path | None:
    """Move a damaged file aside, next to it, as ``<name>.corrupt-<time>-<pid>``; its ``-wal``
    and ``-shm`` files go with it. Returns the new name, or None when there was no file."""
    original = pathlib.Path(path)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    target = original.with_name(f"{original.name}.corrupt-{stamp}-{os.getpid()}")
    try:
        os.replace(original, target)
    except FileNotFoundError:
        return None
    for suffix in ("-wal", "-shm"):
        try:
            os.replace(f"{original}{suffix}", f"{target}{suffix}")
        except FileNotFoundError:
            pass
    return target


def _classify(exc: sqlite3.Error, path: pathlib.Path, what: str) -> SpoolError:
    """The SpoolError subclass for an SQLite error: corrupt, busy or other."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc).lower()
    message = f"{what} {path}: {exc}"
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or (
        "not a database" in text or "malformed" in text
    ):
        return SpoolCorrupt(message)
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in text:
        return SpoolBusy(message)
    return SpoolError(message)


def default_path(service: str) -> pathlib.Path:
    """The spool file for ``service``: ``<spool dir>/<safe service name>.sqlite``.

    The name keeps letters, digits, ``.``, ``_`` and ``-``; when anything else had to be replaced,
    a short hash of the original name is appended so that two services never share a file.
    """
    configured = options.environ("TRACE_SPOOL_DIR")
    if configured:
        base = pathlib.Path(configured).expanduser()
    else:
        cache = os.environ.get("XDG_CACHE_HOME")
        root = pathlib.Path(cache) if cache else pathlib.Path.home() / ".cache"
        base = root / "tracer" / "spool"
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", service).lstrip(".")[:80]
    if safe != service or not safe:
        digest = hashlib.sha256(service.encode("utf-8", errors="surrogatepass")).hexdigest()[:8]
        safe = f"{safe or 'service'}-{digest}"
    return base / f"{safe}.sqlite"


class Spool:
    """Undelivered batches in an SQLite file, oldest first, capped at ``max_bytes`` of payload.

    Safe to use from several threads (calls are serialised), several processes and across
    ``os.fork()`` (a child opens its own connection on first use). Every SQLite failure is raised
    as :class:`SpoolError`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        max_bytes: int = DEFAULT_MAX_BYTES,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        busy_timeout: float = BUSY_TIMEOUT_SECONDS,
    ) -> None:
        if max_bytes < 1:
            raise ValueError(f"spool: max_bytes must be positive, not {max_bytes}")
        if lease_seconds < 0:
            raise ValueError(f"spool: lease_seconds must not be negative, not {lease_seconds}")
        self.path = pathlib.Path(path)
        self.max_bytes = max_bytes
        self.lease_seconds = lease_seconds
        self._lock = threading.Lock()
        self._lock_pid = os.getpid()
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self._owner = ""
        self._closed = False
        self._busy_timeout = busy_timeout
        self._busy_applied = -1.0
        with self._locked():
            self._connect()

    def __repr__(self) -> str:
        return f"<Spool {str(self.path)!r} max_bytes={self.max_bytes}>"

    @property
    def busy_timeout(self) -> float:
        """Seconds one statement waits for another connection's lock (settable)."""
        return self._busy_timeout

    @busy_timeout.setter
    def busy_timeout(self, seconds: float) -> None:
        self._busy_timeout = max(0.0, float(seconds))

    def put(self, payload: bytes, count: int) -> int:
        """Store one batch of ``count`` spans; returns how many spans were dropped for the cap.

        Oldest batches are evicted first to make room. Batches leased by a process that is
        sending them right now are not evicted (they may yet be delivered); if the room cannot be
        made without them, the new batch is refused instead. A payload larger than the whole cap
        is refused too. Either way the return value counts every span lost by this call.
        """
        result = self.put_many([(payload, count)])[0]
        return result.evicted + (0 if result.stored else count)

    def put_many(self, batches: list[tuple[bytes, int]], owner: bytes = b"") -> list[Stored]:
        """Store several batches in one transaction (one wait for the lock at most).

        Each is stored as :meth:`put` stores one; the result says, per batch, whether it was
        stored and how many spans of older batches made room for it (and how many of those were
        in batches whose payload starts with ``owner``, the caller's own).
        """
        results: list[Stored] = []
        with self._locked():
            conn = self._connection()
            now = time.time()
            with _Transaction(conn, self.path):
                _, _, stored = _totals(conn)
                for payload, count in batches:
                    results.append(self._put_one(conn, payload, count, owner, now, stored))
                    _, _, stored = _totals(conn)
            self._checkpoint(conn)
        return results

    def _put_one(
        self,
        conn: sqlite3.Connection,
        payload: bytes,
        count: int,
        owner: bytes,
        now: float,
        stored: int,
    ) -> Stored:
        size = len(payload)
        if size > self.max_bytes:
            return Stored(False)
        excess = stored + size - self.max_bytes
        evicted = evicted_owned = 0
        if excess > 0:
            victims = conn.execute(
                "SELECT id, size, count, substr(payload, 1, ?) FROM batches"
                " WHERE lease_until IS NULL OR lease_until <= ? ORDER BY id",
                (max(len(owner), 1), now),
            )
            freed = 0
            last_id = None
            for row_id, row_size, row_count, head in victims:
                freed += row_size
                evicted += row_count
                if owner and bytes(head) == owner:
                    evicted_owned += row_count
                last_id = row_id
                if freed >= excess:
                    break
            victims.close()
            if freed < excess or last_id is None:
                return Stored(False)
            conn.execute(
                "DELETE FROM batches WHERE id <= ? AND (lease_until IS NULL OR lease_until <= ?)",
                (last_id, now),
            )
        conn.execute(
            "INSERT INTO batches (payload, count, size, created) VALUES (?, ?, ?, ?)",
            (sqlite3.Binary(payload), count, size, now),
        )
        return Stored(True, evicted, evicted_owned)

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        # Copy what was just written into the main file, so that it never lives only in the
        # -wal file (which a crash leaves behind, and damage there would lose).
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error:
            pass  # Another connection is checkpointing; the data is safe in the WAL meanwhile.

    def take(self, limit: int = 1) -> list[tuple[int, bytes, int]]:
        """Lease and return up to ``limit`` batches, oldest first, as ``(id, payload, count)``.

        Leased rows are not returned to any other ``take`` (in any process) until they are
        released or their lease expires. Follow with :meth:`ack` or :meth:`release`.
        """
        if limit < 1:
            return []
        with self._locked():
            conn = self._connection()
            now = time.time()
            with _Transaction(conn, self.path):
                rows = conn.execute(
                    "SELECT id, payload, count FROM batches"
                    " WHERE lease_until IS NULL OR lease_until <= ? ORDER BY id LIMIT ?",
                    (now, limit),
                ).fetchall()
                for chunk in _chunks([row[0] for row in rows]):
                    marks = ",".join("?" * len(chunk))
                    conn.execute(
                        "UPDATE batches SET lease_owner = ?, lease_until = ?"
                        f" WHERE id IN ({marks})",
                        (self._owner, now + self.lease_seconds, *chunk),
                    )
            return [(int(i), bytes(p), int(c)) for i, p, c in rows]

    def ack(self, ids: Iterable[int]) -> None:
        """Delete delivered batches (by id from :meth:`take`); unknown ids are ignored."""
        self._by_ids(ids, "DELETE FROM batches WHERE id IN ({marks})", ())

    def release(self, ids: Iterable[int]) -> None:
        """Return batches leased by this spool to the queue, to be taken again."""
        self._by_ids(
            ids,
            "UPDATE batches SET lease_owner = NULL, lease_until = NULL"
            " WHERE lease_owner = ? AND id IN ({marks})",
            (self._owner,),
        )

    def pending(self) -> tuple[int, int]:
        """``(batches, spans)`` stored, leased ones included."""
        with self._locked():
            batches, spans, _ = self._read_totals()
            return batches, spans

    def size_bytes(self) -> int:
        """Payload bytes stored, leased batches included."""
        with self._locked():
            return self._read_totals()[2]

    def close(self) -> None:
        """Release this spool's leases and close its connection. Later calls raise SpoolError."""
        with self._locked():
            if self._closed:
                return
            self._closed = True
            conn, self._conn = self._conn, None
            if conn is None:
                return
            if self._pid != os.getpid():
                _inherited.append(conn)
                return
            try:
                with _Transaction(conn, self.path):
                    conn.execute(
                        "UPDATE batches SET lease_owner = NULL, lease_until = NULL"
                        " WHERE lease_owner = ?",
                        (self._owner,),
                    )
            except SpoolError:
                pass  # The leases expire on their own.
            finally:
                conn.close()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # Internals ---------------------------------------------------------------------------

    def _locked(self) -> threading.Lock:
        pid = os.getpid()
        if pid != self._lock_pid:
            # Another thread of the parent may have held the lock at the fork; the child's copy
            # would then stay held forever.
            self._lock = threading.Lock()
            self._lock_pid = pid
        return self._lock

    def _by_ids(self, ids: Iterable[int], sql: str, params: tuple[object, ...]) -> None:
        id_list = [int(i) for i in ids]
        if not id_list:
            return
        with self._locked():
            conn = self._connection()
            with _Transaction(conn, self.path):
                for chunk in _chunks(id_list):
                    conn.execute(sql.format(marks=",".join("?" * len(chunk))), (*params, *chunk))

    def _read_totals(self) -> tuple[int, int, int]:
        conn = self._connection()
        try:
            return _totals(conn)
        except sqlite3.Error as exc:
            raise _classify(exc, self.path, "spool") from exc

    def _connection(self) -> sqlite3.Connection:
        if self._closed:
            raise SpoolError(f"spool {self.path} is closed")
        if self._pid != os.getpid():
            # A forked child: the parent's connection must not be used here (SQLite forbids
            # carrying one across fork). Set it aside and open our own, with our own lease owner.
            if self._conn is not None:
                _inherited.append(self._conn)
            self._conn = None
            self._pid = os.getpid()
            self._connect()
        assert self._conn is not None
        if self._busy_applied != self._busy_timeout:
            try:
                self._conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            except sqlite3.Error as exc:
                raise _classify(exc, self.path, "spool") from exc
            self._busy_applied = self._busy_timeout
        return self._conn

    def _connect(self) -> None:
        self._owner = f"{os.getpid()}:{secrets.token_hex(6)}"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not self.path.exists():
                # Owner-only from the start; SQLite gives the -wal and -shm files the same mode.
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        except OSError as exc:
            raise SpoolError(f"cannot create spool file {self.path}: {exc}") from exc
        self._check_files()
        conn: sqlite3.Connection | None = None
        try:
            # Suppressed: the spool is tracer's own database, never traced as the application's.
            with context.suppressed():
                conn = sqlite3.connect(
                    self.path,
                    timeout=self._busy_timeout,
                    isolation_level=None,
                    check_same_thread=False,
                )
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            self._busy_applied = self._busy_timeout
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise SpoolError(f"spool {self.path}: cannot switch to WAL mode (got {mode})")
            conn.execute("PRAGMA synchronous = NORMAL")
            with _Transaction(conn, self.path):
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version == 0:
                    tables = conn.execute(
                        "SELECT count(*) FROM sqlite_master WHERE type = 'table'"
                    ).fetchone()[0]
                    if tables:
                        raise SpoolError(
                            f"{self.path} is an SQLite database but not a tracer spool"
                        )
                    for statement in _SCHEMA:
                        conn.execute(statement)
                elif version != _SCHEMA_VERSION:
                    raise SpoolError(
                        f"spool {self.path} has schema version {version}, this tracer reads"
                        f" version {_SCHEMA_VERSION}"
                    )
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()
            raise _classify(exc, self.path, "cannot open spool") from exc
        except SpoolError:
            if conn is not None:
                conn.close()
            raise
        self._conn = conn

    def _check_files(self) -> None:
        """Refuse a truncated main file; move a ``-wal`` file that is not a WAL aside.

        SQLite itself would open a truncated file and fail later, on the rows it lost; and it
        silently discards a ``-wal`` file whose header is damaged, with whatever it held.
        """
        try:
            with open(self.path, "rb") as f:
                header = f.read(100)
                size = os.fstat(f.fileno()).st_size
        except OSError as exc:
            raise SpoolError(f"cannot read spool file {self.path}: {exc}") from exc
        if len(header) == 100 and header.startswith(b"SQLite format 3\x00"):
            page_size = int.from_bytes(header[16:18], "big")
            page_size = 65536 if page_size == 1 else page_size
            pages = int.from_bytes(header[28:32], "big")
            # The page count in the header is valid only when these two counters agree.
            if header[24:28] == header[92:96] and size < pages * page_size:
                raise SpoolCorrupt(
                    f"cannot open spool {self.path}: truncated ({size} bytes, the header"
                    f" says {pages * page_size})"
                )
        wal = pathlib.Path(f"{self.path}-wal")
        try:
            with open(wal, "rb") as f:
                magic = f.read(4)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise SpoolError(f"cannot read spool file {wal}: {exc}") from exc
        if magic and magic not in _WAL_MAGIC:
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
            aside = wal.with_name(f"{wal.name}.corrupt-{stamp}-{os.getpid()}")
            try:
                os.replace(wal, aside)
                # The shared-memory index describes the WAL just moved; SQLite rebuilds it.
                pathlib.Path(f"{self.path}-shm").unlink(missing_ok=True)
            except OSError as exc:
                raise SpoolError(f"cannot move the damaged {wal} aside: {exc}") from exc
            log.warning(
                "tracer: spool %s had a damaged -wal file; moved it aside to %s", self.path, aside
            )


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``: take the write lock up front, so two processes never
    deadlock upgrading read locks; roll back on any error and raise SQLite errors as SpoolError.
    """

    def __init__(self, conn: sqlite3.Connection, path: pathlib.Path) -> None:
        self._conn = conn
        self._path = path

    def __enter__(self) -> None:
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise _classify(exc, self._path, "spool") from exc

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if exc is None:
            try:
                self._conn.execute("COMMIT")
                return
            except sqlite3.Error as commit_exc:
                exc = commit_exc
        try:
            self._conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # Already rolled back by SQLite (e.g. after SQLITE_FULL).
        if isinstance(exc, sqlite3.Error):
            raise _classify(exc, self._path, "spool") from exc


def _totals(conn: sqlite3.Connection) -> tuple[int, int, int]:
    row = conn.execute("SELECT batches, spans, bytes FROM totals WHERE one = 1").fetchone()
    if row is None:
        return 0, 0, 0
    return int(row[0]), int(row[1]), int(row[2])


def _chunks(ids: list[int]) -> Iterable[list[int]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]
