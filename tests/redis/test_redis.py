"""redis-py against a real redis-server: a span per command and per pipeline, sync and asyncio."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.retry import Retry

import tracer
from reporters.memory import MemoryReporter
from tests.support.redis_server import RedisServer
from tests.support.servers import refused_port

SECRET = "s3cr3t-value-0451"


def db_part(span: dict[str, Any]) -> dict[str, Any]:
    """The database attributes of a span record."""
    part: dict[str, Any] = span["db"]
    return part


def finished(memory: MemoryReporter) -> list[dict[str, Any]]:
    assert tracer.flush()
    return list(memory.spans)


def redis_spans(memory: MemoryReporter) -> list[dict[str, Any]]:
    """The redis spans made inside a trace (a test's setup calls start traces of their own)."""
    return [s for s in finished(memory) if s["name"].startswith("redis ") and s["parent_id"]]


@pytest.fixture
def client(redis_server: RedisServer) -> Any:
    conn = redis.Redis(host="127.0.0.1", port=redis_server.port, db=2)
    yield conn
    conn.close()


def test_each_command_is_a_client_span_under_the_current_one(
    memory: MemoryReporter, client: Any, redis_server: RedisServer
) -> None:
    with tracer.span("work"):
        client.set("user:1", SECRET)
        assert client.get("user:1") == SECRET.encode()
        client.hset("h", mapping={"a": SECRET, "b": SECRET})
    spans = finished(memory)
    (outer,) = [s for s in spans if s["name"] == "work"]
    calls = [s for s in spans if s["name"].startswith("redis ") and s["parent_id"]]
    assert [s["name"] for s in calls] == ["redis SET", "redis GET", "redis HSET"]
    for span in calls:
        assert span["kind"] == "client"
        assert span["parent_id"] == outer["span_id"]
        assert span["trace_id"] == outer["trace_id"]
    assert db_part(calls[0]) == {
        "db.system.name": "redis",
        "db.operation.name": "SET",
        "db.namespace": "2",
        "db.query.text": "SET ? ?",
        "server.address": "127.0.0.1",
        "server.port": redis_server.port,
    }
    assert db_part(calls[1])["db.query.text"] == "GET ?"
    assert db_part(calls[2])["db.query.text"] == "HSET ? ? ? ? ?"
    # Neither keys nor values are recorded anywhere.
    text = json.dumps(spans)
    assert SECRET not in text
    assert "user:1" not in text


def test_many_arguments_are_counted_not_listed(memory: MemoryReporter, client: Any) -> None:
    with tracer.span("work"):
        client.mset({f"k{i}": i for i in range(20)})
    (span,) = redis_spans(memory)
    assert db_part(span)["db.query.text"] == "MSET ? ? ? ? ? ? ? ? ... (40 args)"


@pytest.mark.parametrize("transaction", [True, False])
def test_a_pipeline_is_one_span_with_its_commands(
    memory: MemoryReporter, client: Any, transaction: bool
) -> None:
    with tracer.span("work"):
        with client.pipeline(transaction=transaction) as pipe:
            pipe.set("p", SECRET).incr("n").get("p")
            assert pipe.execute()[2] == SECRET.encode()
    (span,) = redis_spans(memory)
    op = "MULTI" if transaction else "PIPELINE"
    assert span["name"] == f"redis {op}"
    part = db_part(span)
    assert part["db.operation.name"] == op
    assert span["tags"]["db.operation.batch.size"] == 3
    assert part["db.query.text"] == "SET ? ?; INCRBY ? ?; GET ?"
    assert SECRET not in json.dumps(span)


def test_an_empty_pipeline_sends_nothing_and_records_nothing(
    memory: MemoryReporter, client: Any
) -> None:
    with tracer.span("work"):
        assert client.pipeline().execute() == []
    assert redis_spans(memory) == []


def test_watch_sends_at_once_and_each_such_command_is_a_span(
    memory: MemoryReporter, client: Any
) -> None:
    client.set("w", 1)
    with tracer.span("work"):
        with client.pipeline() as pipe:
            pipe.watch("w")
            assert pipe.get("w") == b"1"
            pipe.multi()
            pipe.set("w", 2)
            pipe.execute()
    assert [s["name"] for s in redis_spans(memory)] == ["redis WATCH", "redis GET", "redis MULTI"]


def test_a_server_error_reaches_the_app_unchanged_and_echoes_no_argument(
    memory: MemoryReporter, client: Any
) -> None:
    client.set("text", "x")
    with tracer.span("work"), pytest.raises(redis.ResponseError) as caught:
        client.execute_command("NOSUCHCOMMAND", SECRET)
    # What the app gets is redis' own exception, with its whole message.
    assert type(caught.value) is redis.ResponseError
    assert SECRET in str(caught.value)
    with tracer.span("work"), pytest.raises(redis.ResponseError):
        client.lpush("text", SECRET)
    failed, wrong_type = redis_spans(memory)
    assert failed["error"]["type"] == "ResponseError"
    assert failed["error"]["message"] == "unknown command"
    assert failed["error"]["stack"] is None
    assert wrong_type["error"]["type"] == "ResponseError"
    assert wrong_type["error"]["message"].startswith("WRONGTYPE")
    assert db_part(wrong_type)["error.type"] == "ResponseError"
    assert SECRET not in json.dumps(finished(memory))


def test_a_refused_connection_is_recorded_and_raised(memory: MemoryReporter) -> None:
    with refused_port() as port:
        # No retries: redis-py's default backs off for seconds before it gives up.
        conn = redis.Redis(host="127.0.0.1", port=port, retry=Retry(NoBackoff(), 0))
        with tracer.span("work"), pytest.raises(redis.ConnectionError):
            conn.ping()
    (span,) = redis_spans(memory)
    assert span["error"]["type"] == "ConnectionError"
    assert db_part(span)["server.port"] == port


def test_a_command_outside_any_trace_starts_one(memory: MemoryReporter, client: Any) -> None:
    client.set("alone", 1)
    (span,) = finished(memory)
    assert span["parent_id"] is None
    assert span["kind"] == "client"


def test_record_queries_false_drops_the_text(redis_server: RedisServer) -> None:
    import reporters

    memory: MemoryReporter = reporters.create("memory")
    tracer.install(app_name="test-service", reporter=memory, record_queries=False)
    conn = redis.Redis(host="127.0.0.1", port=redis_server.port)
    with tracer.span("work"):
        conn.get("k")
        conn.pipeline().get("k").execute()
    conn.close()
    spans = redis_spans(memory)
    assert [s["name"] for s in spans] == ["redis GET", "redis MULTI"]
    assert all("db.query.text" not in s["db"] for s in spans)
    assert spans[0]["db"]["db.operation.name"] == "GET"


def test_asyncio_commands_and_pipelines(memory: MemoryReporter, redis_server: RedisServer) -> None:
    async def main() -> list[Any]:
        conn = redis.asyncio.Redis(host="127.0.0.1", port=redis_server.port, db=5)
        try:
            with tracer.span("work"):
                await conn.set("a", SECRET)
                async with conn.pipeline(transaction=False) as pipe:
                    pipe.get("a")
                    pipe.exists("a", "b")
                    got = await pipe.execute()
                with pytest.raises(redis.ResponseError):
                    await conn.lpush("a", SECRET)
            return list(got)
        finally:
            # aclose() since redis-py 5.0.1; close() before.
            await (conn.aclose() if hasattr(conn, "aclose") else conn.close())

    assert asyncio.run(main()) == [SECRET.encode(), 1]
    spans = finished(memory)
    (outer,) = [s for s in spans if s["name"] == "work"]
    calls = [s for s in spans if s["name"].startswith("redis ") and s["parent_id"]]
    assert [s["name"] for s in calls] == ["redis SET", "redis PIPELINE", "redis LPUSH"]
    assert all(s["parent_id"] == outer["span_id"] for s in calls)
    assert db_part(calls[0])["db.namespace"] == "5"
    assert db_part(calls[1])["db.query.text"] == "GET ?; EXISTS ? ?"
    assert calls[1]["tags"]["db.operation.batch.size"] == 2
    assert calls[2]["error"]["type"] == "ResponseError"
    assert SECRET not in json.dumps(spans)


def test_uninstall_restores_every_patched_object(redis_server: RedisServer) -> None:
    import redis.asyncio.client
    import redis.asyncio.cluster
    import redis.client
    import redis.cluster

    targets = [
        (redis.client.Redis, "execute_command"),
        (redis.client.Pipeline, "execute"),
        (redis.client.Pipeline, "immediate_execute_command"),
        (redis.asyncio.client.Redis, "execute_command"),
        (redis.asyncio.client.Pipeline, "execute"),
        (redis.asyncio.client.Pipeline, "immediate_execute_command"),
        (redis.cluster.RedisCluster, "execute_command"),
        (redis.asyncio.cluster.RedisCluster, "execute_command"),
    ]
    before = [vars(owner)[name] for owner, name in targets]
    tracer.install(app_name="test-service", reporter=tracer_memory())
    assert all(vars(o)[n] is not b for (o, n), b in zip(targets, before, strict=True))
    tracer.uninstall()
    assert all(vars(o)[n] is b for (o, n), b in zip(targets, before, strict=True))


def tracer_memory() -> MemoryReporter:
    import reporters

    reporter: MemoryReporter = reporters.create("memory")
    return reporter


def test_cluster_client_commands_are_spans(
    memory: MemoryReporter, redis_cluster: RedisServer
) -> None:
    import redis.cluster

    cluster = redis.cluster.RedisCluster(host="127.0.0.1", port=redis_cluster.port)
    try:
        with tracer.span("work"):
            cluster.set("c", SECRET)
            assert cluster.get("c") == SECRET.encode()
    finally:
        cluster.close()
    calls = redis_spans(memory)
    assert [s["name"] for s in calls] == ["redis SET", "redis GET"]
    assert calls[0]["db"] == {
        "db.system.name": "redis",
        "db.operation.name": "SET",
        "db.query.text": "SET ? ?",
    }
    assert SECRET not in json.dumps(finished(memory))
