"""asyncpg: a client span around each statement (``postgresql``).

asyncpg is not DB-API. What is traced: ``Connection.execute``, ``executemany``, ``fetch``,
``fetchval``, ``fetchrow`` and ``fetchmany``, and a prepared statement's (``conn.prepare(...)``)
``fetch``, ``fetchval``, ``fetchrow``, ``fetchmany`` and ``executemany``, each one span named by
its statement. A pool's connections are these connections, so pool calls are traced too.
``prepare()`` itself, cursors (``conn.cursor()``, which fetch lazily, outside any span) and the
``copy_*`` methods are not.

``db.namespace`` is the connection's database, ``server.address`` and ``server.port`` the
address it connected to (a unix socket's path is the address, with no port), read once per
connection. asyncpg's ``fetch*`` return every row they fetch, inside the span.
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

CONNECTION_METHODS = ("execute", "executemany", "fetch", "fetchval", "fetchrow", "fetchmany")
PREPARED_METHODS = ("fetch", "fetchval", "fetchrow", "fetchmany", "executemany")


def target_of(connection: Any) -> DbTarget:
    """What an asyncpg connection's calls record of it."""
    try:
        addr = connection._addr
        if isinstance(addr, tuple):
            address, port = server_of(addr[0], addr[1])
        else:
            address, port = server_of(str(addr), None)
        params = connection._params
        return (SYSTEM, getattr(params, "database", None) or None, address, port)
    except Exception as exc:
        safety.internal_error("asyncpg.target", exc)
        return (SYSTEM, None, None, None)


class AsyncpgInstrumentation(Instrumentation):
    name = "asyncpg"
    module = "asyncpg"

    def _install(self, module: types.ModuleType) -> None:
        assert self.runtime is not None
        calls = Calls(self.runtime)
        targets = Targets(target_of)
        start = calls.start
        target = targets.get

        def on_connection(original: Callable[..., Any]) -> types.FunctionType:
            async def traced(self: Any, query: Any, *args: Any, **kw: Any) -> Any:
                span = start(target(self), query)
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

        def on_prepared(original: Callable[..., Any]) -> types.FunctionType:
            async def traced(self: Any, *args: Any, **kw: Any) -> Any:
                span = start(target(self._connection), self._query)
                if span is None:
                    return await original(self, *args, **kw)
                try:
                    result = await original(self, *args, **kw)
                except BaseException as exc:
                    failed(span, exc)
                    raise
                span.finish()
                return result

            return traced  # type: ignore[return-value]

        connection = module.connection.Connection
        for attribute in CONNECTION_METHODS:
            if attribute in vars(connection):
                self.replace(connection, attribute, on_connection)
        prepared = module.prepared_stmt.PreparedStatement
        for attribute in PREPARED_METHODS:
            if attribute in vars(prepared):
                self.replace(prepared, attribute, on_prepared)
