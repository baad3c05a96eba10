"""sqlite3: a client span around each statement (``db.system.name`` ``sqlite``).

``sqlite3.Connection`` and ``Cursor`` are C types whose methods cannot be patched, so
``sqlite3.connect`` (and ``sqlite3.dbapi2.connect``, the same function) is wrapped to return a
:class:`tracer.instrumentation.dbapi.TracedConnection`: its cursors' ``execute``,
``executemany`` and ``executescript`` and the connection's own shortcuts of them are traced
(:mod:`tracer.instrumentation.dbapi`). ``isinstance(conn, sqlite3.Connection)`` stays true;
what is not traced is said in docs/clients.md ("Databases"): a connection made through a
``connect`` imported before ``install()`` (``from sqlite3 import connect``), or passed where
C code wants the exact type (``Connection.backup(target)`` takes the proxy's wrapped object,
``conn.__wrapped__``).

``db.namespace`` is the database as ``connect`` was given it (a file path or ``:memory:``).
sqlite3 steps through a result lazily: ``execute`` runs the statement to its first row, and the
rows after it are computed as they are fetched, outside the span.
"""

from __future__ import annotations

import os
import types
from typing import Any

from tracer.instrumentation.base import Instrumentation
from tracer.instrumentation.dbapi import Calls, traced_connect
from tracer.span import DbTarget

SYSTEM = "sqlite"


def _target(connection: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> DbTarget:
    database = args[0] if args else kw.get("database")
    name: str | None
    try:
        name = None if database is None else os.fsdecode(database)
    except TypeError:
        name = None
    return (SYSTEM, name, None, None)


class Sqlite3Instrumentation(Instrumentation):
    name = "sqlite3"
    module = "sqlite3"

    def _install(self, module: types.ModuleType) -> None:
        assert self.runtime is not None
        connect = traced_connect(Calls(self.runtime), _target)
        self.wrap(module, "connect", connect)
        dbapi2 = getattr(module, "dbapi2", None)
        if dbapi2 is not None and getattr(dbapi2, "connect", None) is not None:
            self.wrap(dbapi2, "connect", connect)
