"""The DB-API 2.0 core: a client span with a ``db`` part around each statement a driver runs.

The interface the database instrumentations share (sqlite3, psycopg, psycopg2, asyncpg; redis
builds its own statements but records them the same way):

* :class:`Calls` ``(runtime)`` holds what every call needs: the runtime, and the statement
  function the ``record_queries`` option chose (:func:`tracer.instrumentation.sqltext.statement`,
  or :func:`~tracer.instrumentation.sqltext.without_text`, which drops the text).
  :meth:`Calls.run` and :meth:`Calls.run_async` run one driver call in a span:
  ``calls.run(target, method, sql, args, kwargs)`` calls ``method(sql, *args, **kwargs)`` and
  returns what it returns, or raises what it raises, unchanged.
* ``target`` is the connection's :data:`tracer.span.DbTarget`, ``(system, namespace, address,
  port)``, made once per connection; the statement comes from ``sql`` through the cache. The
  span (kind client, a child of the current span) is named by the statement (``SELECT users``)
  and carries ``Span.db = (target, statement)``; the record's ``db`` part is built from it off
  the request thread (:func:`tracer.span.db_part`).
* :class:`TracedConnection` and :class:`TracedCursor` are the proxies (``wrapt.ObjectProxy``)
  for drivers whose connection and cursor are C types that cannot be patched (sqlite3,
  psycopg2): the driver's ``connect`` is wrapped to return a :class:`TracedConnection`, whose
  ``cursor()`` returns a :class:`TracedCursor`; ``execute``, ``executemany``, ``callproc`` (and
  sqlite3's ``executescript``, and the connection's own ``execute*`` shortcuts) are traced.
  ``isinstance(proxy, driver.Connection)`` is true (the proxy reports the wrapped class);
  ``type(proxy)`` is the proxy's, and C functions that check the exact type of their argument
  refuse it (see docs/clients.md, "Databases").

The span covers the call itself. Rows a driver fetches later, as a lazy cursor steps through
its result (sqlite3, a server-side cursor), are fetched outside it (docs/clients.md).

An error inside tracer is counted (:func:`tracer.safety.internal_error`) and the call made
untraced; the driver's exceptions reach the application unchanged.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import wrapt

from tracer import safety
from tracer.context import suppress
from tracer.instrumentation import sqltext
from tracer.span import CLIENT, DbTarget, Span

if TYPE_CHECKING:
    from tracer.runtime import Runtime


class Calls:
    """What one database instrumentation's calls share (see the module)."""

    __slots__ = ("chain", "child", "record", "runtime", "statement")

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        # Runtime.child_span's two steps, taken here: one call less per statement, and the
        # processors' on_start sees the span with its db part.
        self.child = runtime._child if not runtime.database_processors else self._first_child
        self.chain = runtime.chain
        self.record = record = bool(getattr(runtime.config, "record_queries", True))
        self.statement: Callable[[str], sqltext.Statement] = (
            sqltext.statement if record else sqltext.without_text
        )

    def _first_child(self, kind: str, name: str, request_id: str | None = None) -> Span:
        """``child`` until the runtime's first database call: that call adds the processors
        only database calls need (``Runtime.database_processors``), and every later one goes
        straight to the runtime's own step."""
        self.runtime.watch_databases()
        self.child = child = self.runtime._child
        return child(kind, name, request_id)

    def statement_of(self, sql: Any) -> sqltext.Statement:
        """The statement of ``sql`` as a driver was given it (text, bytes, a query object)."""
        if type(sql) is str:
            return self.statement(sql)
        text = sqltext.text_of(sql)
        return sqltext.UNKNOWN if text is None else self.statement(text)

    def procedure(self, name: str) -> sqltext.Statement:
        """The statement of a stored procedure's call (``callproc``): ``CALL <name>``."""
        text = f"CALL {name[: sqltext.MAX_COLLECTION]}"
        return (text if self.record else None, "CALL", None, text, text)

    def begin(self, target: DbTarget, statement: sqltext.Statement) -> Any:
        """The span of a call of ``statement`` (None when the call is not traced)."""
        if suppress.get():
            return None
        try:
            span = self.child(CLIENT, statement[3])
            span.db = (target, statement)
            on_start = self.chain.on_start
            if on_start is not None:
                on_start(span)
            return span
        except Exception as exc:
            safety.internal_error("db.start", exc)
            return None

    def start(self, target: DbTarget, sql: Any) -> Any:
        """The span of a call of ``sql`` on ``target`` (None when the call is not traced)."""
        if suppress.get():
            return None
        try:
            statement = self.statement(sql) if type(sql) is str else self.statement_of(sql)
            span = self.child(CLIENT, statement[3])
            span.db = (target, statement)
            on_start = self.chain.on_start
            if on_start is not None:
                on_start(span)
            return span
        except Exception as exc:
            safety.internal_error("db.start", exc)
            return None

    def run(
        self,
        target: DbTarget,
        method: Callable[..., Any],
        sql: Any,
        args: tuple[Any, ...],
        kw: dict[str, Any],
    ) -> Any:
        """``method(sql, *args, **kw)`` in a span (see the module)."""
        span = self.start(target, sql)
        if span is None:
            return method(sql, *args, **kw)
        try:
            result = method(sql, *args, **kw)
        except BaseException as exc:
            failed(span, exc)
            raise
        span.finish()
        return result

    async def run_async(
        self,
        target: DbTarget,
        method: Callable[..., Any],
        sql: Any,
        args: tuple[Any, ...],
        kw: dict[str, Any],
    ) -> Any:
        """:meth:`run` for a coroutine method."""
        span = self.start(target, sql)
        if span is None:
            return await method(sql, *args, **kw)
        try:
            result = await method(sql, *args, **kw)
        except BaseException as exc:
            failed(span, exc)
            raise
        span.finish()
        return result


def failed(span: Any, exc: BaseException) -> None:
    """End ``span`` as failed by ``exc`` (the exception itself is the caller's to re-raise)."""
    try:
        span.record_exception(exc)
        span.finish()
    except Exception as inner:
        safety.internal_error("db.finish", inner)


class TracedCursor(wrapt.ObjectProxy):  # type: ignore[type-arg]
    """A DB-API cursor whose ``execute``, ``executemany``, ``callproc`` and ``executescript``
    are traced; everything else is the cursor's own."""

    def __init__(self, cursor: Any, calls: Calls, target: DbTarget) -> None:
        super().__init__(cursor)
        self._self_calls = calls
        self._self_target = target

    def execute(self, sql: Any, *args: Any, **kw: Any) -> Any:
        """The cursor's ``execute``, in a span; returns this proxy where the driver returns
        the cursor itself (sqlite3), so that chained calls stay traced."""
        # Calls.run()'s and start()'s work, written out: this is the call every statement makes.
        wrapped = self.__wrapped__
        span = None
        if not suppress.get():
            calls = self._self_calls
            try:
                statement = calls.statement(sql) if type(sql) is str else calls.statement_of(sql)
                span = calls.child(CLIENT, statement[3])
                span.db = (self._self_target, statement)
                on_start = calls.chain.on_start
                if on_start is not None:
                    on_start(span)
            except Exception as exc:
                safety.internal_error("db.start", exc)
                span = None
        if span is None:
            result = wrapped.execute(sql, *args, **kw)
        else:
            try:
                result = wrapped.execute(sql, *args, **kw)
            except BaseException as exc:
                failed(span, exc)
                raise
            span.finish()
        return self if result is wrapped else result

    def executemany(self, sql: Any, *args: Any, **kw: Any) -> Any:
        """The cursor's ``executemany``, in one span."""
        wrapped = self.__wrapped__
        result = self._self_calls.run(self._self_target, wrapped.executemany, sql, args, kw)
        return self if result is wrapped else result

    def executescript(self, script: Any, *args: Any, **kw: Any) -> Any:
        """sqlite3's ``executescript``, in one span named by the script's first statement."""
        wrapped = self.__wrapped__
        result = self._self_calls.run(self._self_target, wrapped.executescript, script, args, kw)
        return self if result is wrapped else result

    def callproc(self, name: Any, *args: Any, **kw: Any) -> Any:
        """The cursor's ``callproc``, in a span named ``CALL <name>``."""
        calls = self._self_calls
        span = None
        if isinstance(name, str):
            span = calls.begin(self._self_target, calls.procedure(name))
        if span is None:
            return self.__wrapped__.callproc(name, *args, **kw)
        try:
            result = self.__wrapped__.callproc(name, *args, **kw)
        except BaseException as exc:
            failed(span, exc)
            raise
        span.finish()
        return result

    # What an application reads after nearly every statement, defined here: an attribute the
    # proxy does not define is found through a failed lookup (an AttributeError made and
    # cleared) before the wrapped object is asked, several times the cost of the call itself.
    def fetchone(self) -> Any:
        """The cursor's ``fetchone``."""
        return self.__wrapped__.fetchone()

    def fetchmany(self, *args: Any, **kw: Any) -> Any:
        """The cursor's ``fetchmany``."""
        return self.__wrapped__.fetchmany(*args, **kw)

    def fetchall(self) -> Any:
        """The cursor's ``fetchall``."""
        return self.__wrapped__.fetchall()

    def close(self) -> Any:
        """The cursor's ``close``."""
        return self.__wrapped__.close()

    @property
    def description(self) -> Any:
        """The cursor's ``description``."""
        return self.__wrapped__.description

    @property
    def rowcount(self) -> Any:
        """The cursor's ``rowcount``."""
        return self.__wrapped__.rowcount

    @property
    def lastrowid(self) -> Any:
        """The cursor's ``lastrowid``."""
        return self.__wrapped__.lastrowid

    def __enter__(self) -> Any:
        self.__wrapped__.__enter__()
        return self

    def __exit__(self, *exc: Any) -> Any:
        return self.__wrapped__.__exit__(*exc)

    def __iter__(self) -> Any:
        return iter(self.__wrapped__)

    def __next__(self) -> Any:
        return next(self.__wrapped__)

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError("a database cursor cannot be pickled")


class TracedConnection(wrapt.ObjectProxy):  # type: ignore[type-arg]
    """A DB-API connection whose cursors are :class:`TracedCursor`; its own ``execute``,
    ``executemany`` and ``executescript`` (sqlite3's shortcuts) are traced too."""

    def __init__(self, connection: Any, calls: Calls, target: DbTarget) -> None:
        super().__init__(connection)
        self._self_calls = calls
        self._self_target = target

    def cursor(self, *args: Any, **kw: Any) -> Any:
        """The connection's cursor, traced."""
        return TracedCursor(
            self.__wrapped__.cursor(*args, **kw), self._self_calls, self._self_target
        )

    def execute(self, sql: Any, *args: Any, **kw: Any) -> Any:
        """sqlite3's ``Connection.execute``: a new cursor's ``execute``, one span."""
        return self.cursor().execute(sql, *args, **kw)

    def executemany(self, sql: Any, *args: Any, **kw: Any) -> Any:
        """sqlite3's ``Connection.executemany``, one span."""
        return self.cursor().executemany(sql, *args, **kw)

    def executescript(self, script: Any, *args: Any, **kw: Any) -> Any:
        """sqlite3's ``Connection.executescript``, one span."""
        return self.cursor().executescript(script, *args, **kw)

    # Defined here for the reason TracedCursor defines fetchone.
    def commit(self) -> Any:
        """The connection's ``commit``."""
        return self.__wrapped__.commit()

    def rollback(self) -> Any:
        """The connection's ``rollback``."""
        return self.__wrapped__.rollback()

    def close(self) -> Any:
        """The connection's ``close``."""
        return self.__wrapped__.close()

    def __enter__(self) -> Any:
        self.__wrapped__.__enter__()
        return self

    def __exit__(self, *exc: Any) -> Any:
        return self.__wrapped__.__exit__(*exc)

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError("a database connection cannot be pickled")


def traced_connect(
    calls: Calls, target_of: Callable[[Any, tuple[Any, ...], dict[str, Any]], DbTarget]
) -> Callable[[Callable[..., Any], Any, tuple[Any, ...], dict[str, Any]], Any]:
    """A wrapper for a driver's ``connect``: the connection it returns, as a
    :class:`TracedConnection` whose target is ``target_of(connection, args, kwargs)``; a
    connection made while tracing is suppressed is returned as it is."""

    def connect(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kw: dict[str, Any]
    ) -> Any:
        connection = wrapped(*args, **kw)
        if suppress.get():
            # Made where nothing is traced (tracer's own spool): left as the driver made it, so
            # that none of its statements is ever traced, whichever thread runs them.
            return connection
        try:
            if isinstance(connection, TracedConnection):
                return connection
            return TracedConnection(connection, calls, target_of(connection, args, kw))
        except Exception as exc:
            safety.internal_error("db.connect", exc)
            return connection

    return connect


class Targets:
    """Each connection's :data:`~tracer.span.DbTarget`, made by ``make(connection)`` the first
    time and then found with one dict lookup (by ``id``, checked against a weak reference, so a
    new connection at a reused address is not taken for the old one); at most :data:`MAX`."""

    MAX = 1024

    __slots__ = ("_cache", "_make")

    def __init__(self, make: Callable[[Any], DbTarget]) -> None:
        self._make = make
        self._cache: dict[int, tuple[DbTarget, Callable[[], Any]]] = {}

    def get(self, connection: Any) -> DbTarget:
        """``connection``'s target."""
        entry = self._cache.get(id(connection))
        if entry is not None and entry[1]() is connection:
            return entry[0]
        target = self._make(connection)
        try:
            ref: Callable[[], Any] = weakref.ref(connection)
        except TypeError:
            return target
        if len(self._cache) >= self.MAX:
            self._cache.clear()
        self._cache[id(connection)] = (target, ref)
        return target


def server_of(host: Any, port: Any) -> tuple[str | None, int | None]:
    """``server.address`` and ``server.port`` from a driver's host and port (a unix socket's
    directory is the address, with no port)."""
    address = host if isinstance(host, str) and host else None
    try:
        number = int(port) if port not in (None, "") else None
    except (TypeError, ValueError):
        number = None
    if address is not None and address.startswith("/"):
        number = None
    return address, number
