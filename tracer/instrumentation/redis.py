"""redis-py: a client span for every command, and one for every pipeline, sync and asyncio.

What is patched (classes, so clients made before ``install()`` are covered):

* ``redis.Redis.execute_command`` and ``redis.asyncio.Redis.execute_command``, which every
  command method (``get``, ``set``, ``hset``, ...) calls once;
* ``Pipeline.execute`` of both: the commands a pipeline queued go to the server in one round trip,
  so they are one span, transaction (``MULTI``/``EXEC``) or not;
* ``Pipeline.immediate_execute_command`` of both: what a pipeline sends at once after ``WATCH``;
* ``redis.cluster.RedisCluster.execute_command`` and its asyncio twin, one span per command
  (without the server's address: the node is chosen inside, per key slot).

What a span records (the ``db`` part, OpenTelemetry's database conventions):

* ``db.system.name`` ``redis``, ``db.operation.name`` the command (``GET``; ``PIPELINE`` or
  ``MULTI`` for a pipeline), ``db.namespace`` the database index, ``server.address`` and
  ``server.port`` (the socket path for a Unix socket);
* ``db.query.text`` the command with one ``?`` per argument (``SET ? ?``), never a key or a
  value; past :data:`MAX_PLACEHOLDERS` arguments the rest are counted (``MSET ? ? ... (40 args)``).
  A pipeline's text is its commands' texts joined by ``"; "`` (at most :data:`MAX_BATCH` of them),
  with ``db.operation.batch.size`` the number of commands;
* an error as its exception's type, with redis' message cut where the server starts quoting what
  it was sent (``ERR unknown command 'x', with args beginning with: ...``) and no stack (its
  last lines are the caller's source, which may hold the values); the exception itself reaches
  the application unchanged.

The span is named ``redis <operation>`` (``redis GET``). A command outside any trace (no current
span) is not recorded: a worker polling Redis would otherwise make a trace of every poll.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterable
from typing import Any

from tracer import safety
from tracer.context import current, suppress
from tracer.instrumentation.base import Instrumentation
from tracer.span import CLIENT, Span

#: Arguments shown as ``?`` in ``db.query.text``; beyond this many, they are counted.
MAX_PLACEHOLDERS = 8
#: Commands of a pipeline listed in its ``db.query.text``; beyond this many, they are counted.
MAX_BATCH = 32

SYSTEM = "redis"

# Per command (as redis-py passes it, usually an upper-case str): the operation name and the span
# name, so the usual command costs one dict lookup. Bounded: a caller may invent names.
_names: dict[Any, tuple[str, str]] = {}
_MAX_NAMES = 512
# " ? ? ?" for 0..MAX_PLACEHOLDERS arguments.
_MARKS = tuple(" ?" * n for n in range(MAX_PLACEHOLDERS + 1))


def operation(command: Any) -> tuple[str, str]:
    """The operation name (``GET``) and span name (``redis GET``) of ``command``."""
    names = _names.get(command)
    if names is not None:
        return names
    if isinstance(command, (bytes, bytearray, memoryview)):
        text = bytes(command).decode("utf-8", "replace")
    else:
        text = str(command)
    # Multi-word commands ("CONFIG GET") keep their words; anything else is cut short.
    op = " ".join(text.upper().split())[:64] or "?"
    if not (op.isascii() and op.isprintable()):
        op = op.encode("ascii", "replace").decode("ascii")
    names = (op, f"{SYSTEM} {op}")
    if len(_names) >= _MAX_NAMES:
        _names.clear()
    try:
        _names[command] = names
    except TypeError:
        pass
    return names


def query_text(op: str, arguments: int) -> str:
    """``op`` with one ``?`` per argument: what a command's ``db.query.text`` says."""
    if arguments <= MAX_PLACEHOLDERS:
        return op + _MARKS[arguments]
    return f"{op}{_MARKS[MAX_PLACEHOLDERS]} ... ({arguments} args)"


def batch_text(commands: Iterable[tuple[Any, ...]], size: int) -> str:
    """A pipeline's ``db.query.text``: its commands' texts, in order, joined by ``"; "``."""
    parts: list[str] = []
    for args in commands:
        if len(parts) == MAX_BATCH:
            parts.append(f"... ({size} commands)")
            break
        parts.append(query_text(operation(args[0])[0], len(args) - 1) if args else "?")
    return "; ".join(parts)


def where(client: Any) -> tuple[str, Any, Any]:
    """The database index, address and port of a client's connection pool."""
    pool = getattr(client, "connection_pool", None)
    kw = getattr(pool, "connection_kwargs", None)
    if not kw:
        return "0", None, None
    host = kw.get("host")
    if host is None:
        # A Unix socket: its path is the address.
        return str(kw.get("db") or 0), kw.get("path"), None
    return str(kw.get("db") or 0), host, kw.get("port", 6379)


def describe(
    span: Span,
    op: str,
    text: str,
    namespace: str | None,
    address: Any,
    port: Any,
    batch: int | None = None,
) -> None:
    """Put the ``db`` part of a redis call on ``span``."""
    set_tag = span.set_tag
    set_tag("db.system.name", SYSTEM)
    set_tag("db.operation.name", op)
    set_tag("db.query.text", text)
    if namespace is not None:
        set_tag("db.namespace", namespace)
    if address is not None:
        set_tag("server.address", str(address))
    if port is not None:
        set_tag("server.port", port)
    if batch is not None:
        set_tag("db.operation.batch.size", batch)


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
    span.set_tag("error.type", type(exc).__name__)


class RedisInstrumentation(Instrumentation):
    """Client spans for redis-py commands and pipelines (sync, asyncio, cluster)."""

    name = "redis"
    module = "redis"

    def _install(self, module: types.ModuleType) -> None:
        runtime = self.runtime
        assert runtime is not None
        child_span = runtime.child_span
        internal_error = safety.internal_error

        def command_span(client: Any, args: tuple[Any, ...], cluster: bool) -> Span | None:
            if suppress.get() or current.get() is None or not args:
                return None
            op, name = operation(args[0])
            span = child_span(CLIENT, name)
            if cluster:
                describe(span, op, query_text(op, len(args) - 1), None, None, None)
            else:
                namespace, address, port = where(client)
                describe(span, op, query_text(op, len(args) - 1), namespace, address, port)
            return span

        def pipeline_span(pipe: Any) -> Span | None:
            stack = pipe.command_stack
            if suppress.get() or current.get() is None or not stack:
                return None
            transaction = getattr(pipe, "is_transaction", None)
            if transaction is None:
                transaction = getattr(pipe, "transaction", False)
            op = (
                "MULTI"
                if transaction or getattr(pipe, "explicit_transaction", False)
                else ("PIPELINE")
            )
            span = child_span(CLIENT, f"{SYSTEM} {op}")
            namespace, address, port = where(pipe)
            size = len(stack)
            text = batch_text((entry[0] for entry in stack), size)
            describe(span, op, text, namespace, address, port, size)
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
