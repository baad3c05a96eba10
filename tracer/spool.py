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
a crash of the process; a power loss can lose the last few stored batches. Keep the file on a
local disk: WAL mode needs shared memory that network file systems do not provide.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable

__all__ = ["DEFAULT_MAX_BYTES", "Spool", "SpoolError", "default_path"]

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
DEFAULT_LEASE_SECONDS = 60.0
# How long one statement waits for another process's write lock before giving up.
BUSY_TIMEOUT_SECONDS = 5.0
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


def default_path(service: str) -> pathlib.Path:
    """The spool file for ``service``: ``<spool dir>/<safe service name>.sqlite``.

    The name keeps letters, digits, ``.``, ``_`` and ``-``; when anything else had to be replaced,
    a short hash of the original name is appended so that two services never share a file.
    """
    configured = os.environ.get("TRACE_SPOOL_DIR")
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
        with self._locked():
            self._connect()

    def __repr__(self) -> str:
        return f"<Spool {str(self.path)!r} max_bytes={self.max_bytes}>"

    def put(self, payload: bytes, count: int) -> int:
        """Store one batch of ``count`` spans; returns how many spans were dropped for the cap.

        Oldest batches are evicted first to make room. Batches leased by a process that is
        sending them right now are not evicted (they may yet be delivered); if the room cannot be
        made without them, the new batch is refused instead. A payload larger than the whole cap
        is refused too. Either way the return value counts every span lost by this call.
        """
        size = len(payload)
        if size > self.max_bytes:
            return count
        with self._locked():
            conn = self._connection()
            now = time.time()
            with _Transaction(conn, self.path):
                _, _, stored = _totals(conn)
                excess = stored + size - self.max_bytes
                evicted_spans = 0
                if excess > 0:
                    victims = conn.execute(
                        "SELECT id, size, count FROM batches"
                        " WHERE lease_until IS NULL OR lease_until <= ? ORDER BY id",
                        (now,),
                    )
                    freed = 0
                    last_id = None
                    for row_id, row_size, row_count in victims:
                        freed += row_size
                        evicted_spans += row_count
                        last_id = row_id
                        if freed >= excess:
                            break
                    victims.close()
                    if freed < excess or last_id is None:
                        return count
                    conn.execute(
                        "DELETE FROM batches WHERE id <= ?"
                        " AND (lease_until IS NULL OR lease_until <= ?)",
                        (last_id, now),
                    )
                conn.execute(
                    "INSERT INTO batches (payload, count, size, created) VALUES (?, ?, ?, ?)",
                    (sqlite3.Binary(payload), count, size, now),
                )
            return evicted_spans

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
            raise SpoolError(f"spool {self.path}: {exc}") from exc

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
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=BUSY_TIMEOUT_SECONDS,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
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
            raise SpoolError(f"cannot open spool {self.path}: {exc}") from exc
        except SpoolError:
            if conn is not None:
                conn.close()
            raise
        self._conn = conn


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
            raise SpoolError(f"spool {self._path}: {exc}") from exc

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
            raise SpoolError(f"spool {self._path}: {exc}") from exc


def _totals(conn: sqlite3.Connection) -> tuple[int, int, int]:
    row = conn.execute("SELECT batches, spans, bytes FROM totals WHERE one = 1").fetchone()
    if row is None:
        return 0, 0, 0
    return int(row[0]), int(row[1]), int(row[2])


def _chunks(ids: list[int]) -> Iterable[list[int]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]
