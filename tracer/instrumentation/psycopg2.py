"""psycopg2: a client span around each statement (``postgresql``).

psycopg2's connection and cursor are C types whose methods cannot be patched, so
``psycopg2.connect`` is wrapped to return a :class:`tracer.instrumentation.dbapi
.TracedConnection`, whose cursors' ``execute``, ``executemany`` and ``callproc`` are traced
(:mod:`tracer.instrumentation.dbapi`); ``with conn:`` and ``with conn.cursor() as cur:`` give
the traced objects. A connection made by a ``connect`` imported before ``install()``, or by
``psycopg2.extensions.connection`` directly, is not traced; C functions that want the exact
type (``psycopg2.extras.register_uuid(conn_or_curs=...)`` and the other ``register_*``) take
``conn.__wrapped__``.

``db.namespace``, ``server.address`` and ``server.port`` are the connection's (``conn.info``),
read once when it is made. A client cursor has every row when ``execute`` returns (inside the
span); a named (server-side) cursor fetches them as they are asked for, outside it.
"""

from __future__ import annotations

import types
from typing import Any

from tracer import safety
from tracer.instrumentation.base import Instrumentation
from tracer.instrumentation.dbapi import Calls, server_of, traced_connect
from tracer.span import DbTarget

SYSTEM = "postgresql"


def _target(connection: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> DbTarget:
    try:
        info = connection.info
        address, port = server_of(info.host, info.port)
        return (SYSTEM, info.dbname or None, address, port)
    except Exception as exc:
        safety.internal_error("psycopg2.target", exc)
        return (SYSTEM, None, None, None)


class Psycopg2Instrumentation(Instrumentation):
    name = "psycopg2"
    module = "psycopg2"

    def _install(self, module: types.ModuleType) -> None:
        assert self.runtime is not None
        self.wrap(module, "connect", traced_connect(Calls(self.runtime), _target))
