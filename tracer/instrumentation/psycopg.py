"""psycopg (3): a client span around each statement, sync and async (``postgresql``).

psycopg's cursors are Python classes, so their methods are replaced where they are defined:
``Cursor.execute`` and ``executemany``, ``AsyncCursor.execute`` and ``executemany``, and the
server-side cursors' ``ServerCursor.execute`` and ``AsyncServerCursor.execute``. Every other way
of running a statement goes through these (``Connection.execute`` makes a cursor and calls its
``execute``; ``ClientCursor`` and ``RawCursor`` inherit them), so a statement is one span.
``Cursor.stream()`` and ``copy()`` are not traced.

``db.namespace``, ``server.address`` and ``server.port`` are the connection's
(``conn.info.dbname``, ``.host``, ``.port``; a unix socket's directory is the address, with no
port), read once per connection. A :mod:`psycopg.sql` query object is recorded as the text it
makes for its connection, normalized like any other.

Where the rows are fetched: a client cursor has all of them when ``execute`` returns (inside
the span); a server-side cursor fetches them as they are asked for, outside it.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

from tracer import safety
from tracer.instrumentation.base import Instrumentation
from tracer.instrumentation.dbapi import Calls, Targets, failed, server_of
from tracer.span import DbTarget

SYSTEM = "postgresql"


def target_of(connection: Any) -> DbTarget:
    """What a psycopg connection's calls record of it (``conn.info``)."""
    try:
        info = connection.info
        address, port = server_of(info.host, info.port)
        return (SYSTEM, info.dbname or None, address, port)
    except Exception as exc:
        safety.internal_error("psycopg.target", exc)
        return (SYSTEM, None, None, None)


def _text(query: Any, connection: Any) -> Any:
    """A query object's text (its own ``as_string``), else the query as it is."""
    if type(query) is str:
        return query
    as_string = getattr(query, "as_string", None)
    if as_string is None:
        return query
    try:
        return as_string(connection)
    except Exception:
        return None


class PsycopgInstrumentation(Instrumentation):
    name = "psycopg"
    module = "psycopg"

    def _install(self, module: types.ModuleType) -> None:
        assert self.runtime is not None
        calls = Calls(self.runtime)
        targets = Targets(target_of)
        start = calls.start
        target = targets.get

        def sync(original: Callable[..., Any]) -> types.FunctionType:
            def traced(self: Any, query: Any, *args: Any, **kw: Any) -> Any:
                connection = self._conn
                sql = query if type(query) is str else _text(query, connection)
                span = start(target(connection), sql)
                if span is None:
                    return original(self, query, *args, **kw)
                try:
                    result = original(self, query, *args, **kw)
                except BaseException as exc:
                    failed(span, exc)
                    raise
                span.finish()
                return result

            return traced  # type: ignore[return-value]

        def asynchronous(original: Callable[..., Any]) -> types.FunctionType:
            async def traced(self: Any, query: Any, *args: Any, **kw: Any) -> Any:
                connection = self._conn
                sql = query if type(query) is str else _text(query, connection)
                span = start(target(connection), sql)
                if span is None:
                    return await original(self, query, *args, **kw)
                try:
                    result = await original(self, query, *args, **kw)
                except BaseException as exc:
                    failed(span, exc)
                    raise
                span.finish()
                return result

            return traced  # type: ignore[return-value]

        for owner, make, names in (
            (module.Cursor, sync, ("execute", "executemany")),
            (module.AsyncCursor, asynchronous, ("execute", "executemany")),
            (module.ServerCursor, sync, ("execute",)),
            (module.AsyncServerCursor, asynchronous, ("execute",)),
        ):
            for attribute in names:
                if attribute in vars(owner):
                    self.replace(owner, attribute, make)
