"""redis-py: a client span for every command, and one for every pipeline, sync and asyncio.

What is patched (classes, so clients made before ``install()`` are covered):

* ``redis.Redis.execute_command`` and ``redis.asyncio.Redis.execute_command``, which every
  command method (``get``, ``set``, ``hset``, ...) calls once;
* ``Pipeline.execute`` of both: the commands a pipeline queued go to the server in one round trip,
  so they are one span, transaction (``MULTI``/``EXEC``) or not;
* ``Pipeline.immediate_execute_command`` of both: what a pipeline sends at once after ``WATCH``;
* ``redis.cluster.RedisCluster.execute_command`` and its asyncio twin, one span per command
  (without the server's address: the node is chosen inside, per key slot). A cluster
  pipeline's commands go to their nodes by another way and are not traced.

What a span records, as ``Span.db`` (:data:`tracer.span.DbCall`; the record's ``db`` part has
OpenTelemetry's database names):

* ``db.system.name`` ``redis``, ``db.operation.name`` the command (``GET``; ``PIPELINE`` or
  ``MULTI`` for a pipeline), ``db.namespace`` the database index, ``server.address`` and
  ``server.port`` (the socket path for a Unix socket; neither for a cluster client);
* ``db.query.text`` the command with one ``?`` per argument (``SET ? ?``), never a key or a
  value; past :data:`MAX_PLACEHOLDERS` arguments the rest are counted (``MSET ? ? ... (40 args)``).
  A pipeline's text is its commands' texts joined by ``"; "`` (at most :data:`MAX_BATCH` of them),
  and the tag ``db.operation.batch.size`` its number of commands. ``record_queries = False``
  drops the text; the N+1 check still groups by it;
* an error as its exception's type, with redis' message cut where the server starts quoting what
  it was sent (``ERR unknown command 'x', with args beginning with: ...``) and no stack (its
  last lines are the caller's source, which may hold the values); the exception itself reaches
  the application unchanged.

The span is named ``redis <operation>`` (``redis GET``), a child of the current span; a command
made outside any trace starts one, as the other database calls do.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterable
from typing import Any

from tracer import safety
from tracer.context import suppress
from tracer.instrumentation.base import Instrumentation
from tracer.instrumentation.sqltext import Statement
from tracer.span import CLIENT, DbTarget, Span

#: Arguments shown as ``?`` in ``db.query.text``; beyond this many, they are counted.
MAX_PLACEHOLDERS = 8
#: Commands of a pipeline listed in its ``db.query.text``; beyond this many, they are counted.
MAX_BATCH = 32

SYSTEM = "redis"

# Per command (as redis-py passes it, usually an upper-case str): its statements by argument
# count, so the usual command costs two dict lookups and builds nothing. Bounded: a caller may
# invent names.
_statements: dict[Any, dict[int, Statement]] = {}
_MAX_COMMANDS = 512
# " ? ? ?" for 0..MAX_PLACEHOLDERS arguments.
_MARKS = tuple(" ?" * n for n in range(MAX_PLACEHOLDERS + 1))
# A connection's target, by the id of its pool's connection_kwargs (held, so the id is not
# reused while it is here): made once per pool, not per command.
_targets: dict[int, tuple[Any, DbTarget]] = {}


def operation(command: Any) -> str:
    """The operation name of ``command`` (``GET``, ``CONFIG GET``)."""
    if isinstance(command, (bytes, bytearray, memoryview)):
        text = bytes(command).decode("utf-8", "replace")
    else:
        text = str(command)
    # Multi-word commands ("CONFIG GET") keep their words; anything else is cut short.
    op = " ".join(text.upper().split())[:64] or "?"
    if not (op.isascii() and op.isprintable()):
        op = op.encode("ascii", "replace").decode("ascii")
    return op


def query_text(op: str, arguments: int) -> str:
    """``op`` with one ``?`` per argument: what a command's ``db.query.text`` says."""
    if arguments <= MAX_PLACEHOLDERS:
        return op + _MARKS[arguments]
    return f"{op}{_MARKS[MAX_PLACEHOLDERS]} ... ({arguments} args)"


def command_statement(command: Any, arguments: int) -> Statement:
    """The statement of a command (:data:`tracer.instrumentation.sqltext.Statement`'s shape:
    text, operation, collection, span name, grouping key), cached."""
    by_count = _statements.get(command)
    if by_count is None:
        if len(_statements) >= _MAX_COMMANDS:
            _statements.clear()
        by_count = {}
        try:
            _statements[command] = by_count
        except TypeError:
            pass
    found = by_count.get(arguments)
    if found is None:
        op = operation(command)
        text = query_text(op, arguments)
        found = (text, op, None, f"{SYSTEM} {op}", text)
        if len(by_count) < 64:
            by_count[arguments] = found
    return found


def batch_statement(commands: Iterable[tuple[Any, ...]], size: int, op: str) -> Statement:
    """A pipeline's statement: its commands' texts, in order, joined by ``"; "``."""
    parts: list[str] = []
    for args in commands:
        if len(parts) == MAX_BATCH:
            parts.append(f"... ({size} commands)")
            break
        parts.append(command_statement(args[0], len(args) - 1)[4] if args else "?")
    text = "; ".join(parts)
    return (text, op, None, f"{SYSTEM} {op}", text)


def target_of(client: Any) -> DbTarget:
    """``(system, namespace, address, port)`` of a client's connection pool."""
    kw = getattr(getattr(client, "connection_pool", None), "connection_kwargs", None)
    if not kw:
        return (SYSTEM, None, None, None)
    entry = _targets.get(id(kw))
    if entry is not None and entry[0] is kw:
        return entry[1]
    host = kw.get("host")
    namespace = str(kw.get("db") or 0)
    target: DbTarget
    if host is None:
        # A Unix socket: its path is the address.
        path = kw.get("path")
        target = (SYSTEM, namespace, None if path is None else str(path), None)
    else:
        target = (SYSTEM, namespace, str(host), int(kw.get("port") or 6379))
    if len(_targets) >= 256:
        _targets.clear()
    _targets[id(kw)] = (kw, target)
    return target


#: The target of a cluster client's commands: the node is chosen inside, per key slot.
CLUSTER_TARGET: DbTarget = (SYSTEM, None, None, None)


def failed(span: Span, exc: BaseException) -> None:
    """Record ``exc`` on ``span`` without what the server echoed of the command."""
    message = str(exc)
    # Redis quotes the command and its first arguments in some errors ("unknown command 'x',
    # with args beginning with: 'secret'"): nothing from the first quote on is kept.
    quote = message.find("'")
    if quote >= 0:
        message = message[:quote].rstrip(" :,")
    # No stack either: its last lines are the caller's source, which may hold the very values.
    span.error = {"type": type(exc).__name__, "message": message, "stack": None}


def _keep(statement: Statement) -> Statement:
    return statement


def _without_text(statement: Statement) -> Statement:
    """``record_queries = False``: the statement without its text (the key stays, unexported)."""
    return (None, statement[1], statement[2], statement[3], statement[4])


class RedisInstrumentation(Instrumentation):
    """Client spans for redis-py commands and pipelines (sync, asyncio, cluster)."""

    name = "redis"
    module = "redis"

    def _install(self, module: types.ModuleType) -> None:
        runtime = self.runtime
        assert runtime is not None
        child_span = runtime.child_span
        if runtime.database_processors:

            def child_span(kind: str, name: str, request_id: str | None = None) -> Span:
                # The runtime's first database call adds the processors only database calls
                # need; every later one goes straight to the runtime's own child_span.
                nonlocal child_span
                runtime.watch_databases()
                child_span = runtime.child_span
                return child_span(kind, name, request_id)

        internal_error = safety.internal_error
        drop = _keep if getattr(runtime.config, "record_queries", True) else _without_text

        def command_span(client: Any, args: tuple[Any, ...], cluster: bool) -> Span | None:
            if suppress.get() or not args:
                return None
            statement = drop(command_statement(args[0], len(args) - 1))
            span = child_span(CLIENT, statement[3])
            span.db = (CLUSTER_TARGET if cluster else target_of(client), statement)
            return span

        def pipeline_span(pipe: Any) -> Span | None:
            stack = pipe.command_stack
            if suppress.get() or not stack:
                return None
            transaction = getattr(pipe, "is_transaction", None)
            if transaction is None:
                transaction = getattr(pipe, "transaction", False)
            explicit = getattr(pipe, "explicit_transaction", False)
            op = "MULTI" if transaction or explicit else "PIPELINE"
            size = len(stack)
            statement = drop(batch_statement((entry[0] for entry in stack), size, op))
            span = child_span(CLIENT, statement[3])
            span.db = (target_of(pipe), statement)
            span.set_tag("db.operation.batch.size", size)
            return span

        def end(span: Span, exc: BaseException | None) -> None:
            try:
                if exc is not None:
                    failed(span, exc)
                span.finish()
            except Exception as inner:
                internal_error("redis.finish", inner)

        def sync_command(cluster: bool) -> Callable[[Callable[..., Any]], types.FunctionType]:
            def make(original: Callable[..., Any]) -> Any:
                def execute_command(self: Any, *args: Any, **options: Any) -> Any:
                    try:
                        span = command_span(self, args, cluster)
                    except Exception as exc:
                        internal_error("redis.start", exc)
                        span = None
                    if span is None:
                        return original(self, *args, **options)
                    try:
                        result = original(self, *args, **options)
                    except BaseException as exc:
                        end(span, exc)
                        raise
                    end(span, None)
                    return result

                return execute_command

            return make

        def async_command(cluster: bool) -> Callable[[Callable[..., Any]], types.FunctionType]:
            def make(original: Callable[..., Any]) -> Any:
                async def execute_command(self: Any, *args: Any, **options: Any) -> Any:
                    try:
                        span = command_span(self, args, cluster)
                    except Exception as exc:
                        internal_error("redis.start", exc)
                        span = None
                    if span is None:
                        return await original(self, *args, **options)
                    try:
                        result = await original(self, *args, **options)
                    except BaseException as exc:
                        end(span, exc)
                        raise
                    end(span, None)
                    return result

                return execute_command

            return make

        def sync_pipeline(original: Callable[..., Any]) -> Any:
            def execute(self: Any, *args: Any, **kw: Any) -> Any:
                try:
                    span = pipeline_span(self)
                except Exception as exc:
                    internal_error("redis.start", exc)
                    span = None
                if span is None:
                    return original(self, *args, **kw)
                try:
                    result = original(self, *args, **kw)
                except BaseException as exc:
                    end(span, exc)
                    raise
                end(span, None)
                return result

            return execute

        def async_pipeline(original: Callable[..., Any]) -> Any:
            async def execute(self: Any, *args: Any, **kw: Any) -> Any:
                try:
                    span = pipeline_span(self)
                except Exception as exc:
                    internal_error("redis.start", exc)
                    span = None
                if span is None:
                    return await original(self, *args, **kw)
                try:
                    result = await original(self, *args, **kw)
                except BaseException as exc:
                    end(span, exc)
                    raise
                end(span, None)
                return result

            return execute

        client = module.client
        self.replace(client.Redis, "execute_command", sync_command(False))
        self.replace(client.Pipeline, "execute", sync_pipeline)
        self.replace(client.Pipeline, "immediate_execute_command", sync_command(False))
        aio = getattr(module, "asyncio", None)
        aio_client = getattr(aio, "client", None)
        if aio_client is not None:
            self.replace(aio_client.Redis, "execute_command", async_command(False))
            self.replace(aio_client.Pipeline, "execute", async_pipeline)
            self.replace(aio_client.Pipeline, "immediate_execute_command", async_command(False))
        cluster = getattr(module, "cluster", None)
        if cluster is not None and "execute_command" in vars(cluster.RedisCluster):
            self.replace(cluster.RedisCluster, "execute_command", sync_command(True))
        aio_cluster = getattr(aio, "cluster", None)
        if aio_cluster is not None and "execute_command" in vars(aio_cluster.RedisCluster):
            self.replace(aio_cluster.RedisCluster, "execute_command", async_command(True))
