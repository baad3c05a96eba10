"""Issue 23's proof across libraries: an aiohttp server whose handler calls httpx, urllib,
PostgreSQL (asyncpg) and Redis records each call as a child of its server span, in one trace;
and secrets put in statement literals and Redis values never reach a reporter."""

from __future__ import annotations

import gzip
import http.client
import json
import urllib.request
from collections.abc import Iterator

import asyncpg
import httpx
import pytest
import redis
import redis.asyncio
from aiohttp import web

import reporters
import tracer
from reporters.memory import MemoryReporter
from tests.support.aio import AioServer
from tests.support.postgres import PostgresServer
from tests.support.receivers import HttpSink
from tests.support.redis_server import RedisServer
from tests.support.servers import HttpServer, QuietHandler
from tests.support.waiting import eventually
from tracer.context import suppressed

SECRET = "pa55-w0rd-7741"


class Downstream(QuietHandler):
    """The service the handler calls over HTTP."""

    def do_GET(self) -> None:
        self.reply(200, {"Content-Type": "text/plain"}, b"downstream")


class Service:
    """The aiohttp service under test: ``/work`` makes every kind of call, with :data:`SECRET`
    in statement literals, parameters and Redis values."""

    def __init__(self, downstream: HttpServer, pg: PostgresServer, rds: RedisServer) -> None:
        self.downstream = downstream
        self.pg = pg
        self.rds = rds

    async def work(self, request: web.Request) -> web.Response:
        secret = SECRET
        base = self.downstream.url
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"{base}/httpx")).status_code == 200
        # A blocking call in a handler: fine for a test, and it runs in the handler's context.
        with urllib.request.urlopen(f"{base}/urllib", timeout=30) as answer:
            assert answer.read() == b"downstream"
        conn = await asyncpg.connect(
            host=self.pg.host, port=self.pg.port, user=self.pg.user, database=self.pg.database
        )
        try:
            # The secret as a literal, as a parameter, and in a statement the server refuses.
            assert await conn.fetchval(f"SELECT length('{secret}') + 0 * 42") == len(secret)
            assert await conn.fetchval("SELECT $1::text", secret) == secret
            with pytest.raises(asyncpg.PostgresError):
                await conn.execute(f"SELECT * FROM no_such_table WHERE name = '{secret}'")
        finally:
            await conn.close()
        cache = redis.asyncio.Redis(host=self.rds.host, port=self.rds.port, db=1)
        try:
            await cache.set("session", secret)
            assert await cache.get("session") == secret.encode()
            async with cache.pipeline() as pipe:
                pipe.hset("user", "password", secret)
                pipe.expire("user", 60)
                await pipe.execute()
            with pytest.raises(redis.ResponseError):
                await cache.execute_command("NOSUCH", secret)
        finally:
            await cache.aclose()
        return web.Response(text="done")


@pytest.fixture(scope="module")
def service(postgres_server: PostgresServer, redis_server: RedisServer) -> Iterator[AioServer]:
    downstream = HttpServer(Downstream)
    handler = Service(downstream, postgres_server, redis_server).work
    served = AioServer(handler=handler)
    yield served
    served.close()
    downstream.close()


def call(service: AioServer, path: str) -> None:
    # The test's own call stands for another process: it is not traced here.
    with suppressed():
        conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=60)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            assert response.read() == b"done", response.status
        finally:
            conn.close()


def test_every_call_is_a_child_of_the_server_span_in_one_trace(
    memory: MemoryReporter, service: AioServer, postgres_server: PostgresServer
) -> None:
    call(service, "/work")
    (server,) = eventually(
        lambda: memory.find(kind="server", parent_id=None), what="the aiohttp server span"
    )
    assert server["http"]["path"] == "/work"
    # The downstream service's own server spans (http.server, in this process) end before
    # the calls that wait for them.
    spans = list(memory.spans)
    assert {s["trace_id"] for s in spans} == {server["trace_id"]}
    children = [s for s in spans if s["parent_id"] == server["span_id"]]
    names = [s["name"] for s in sorted(children, key=lambda s: s["start_us"])]
    port = postgres_server.port
    downstream = [s for s in children if s["name"].startswith("GET 127.0.0.1:")]
    assert [s["http"]["path"] for s in downstream] == [
        "/httpx",
        "/urllib",
    ]
    pg = [s for s in children if s.get("db", {}).get("db.system.name") == "postgresql"]
    rds = [s for s in children if s.get("db", {}).get("db.system.name") == "redis"]
    assert len(pg) == 3 and len(rds) == 4, names
    assert len(children) == 2 + 3 + 4, names
    assert all(s["kind"] == "client" for s in children)
    assert {s["db"]["server.port"] for s in pg} == {port}
    assert [s["name"] for s in rds] == ["redis SET", "redis GET", "redis MULTI", "redis NOSUCH"]
    # Each HTTP call reached the downstream server as the parent of its server span.
    for client in downstream:
        (callee,) = [s for s in spans if s["parent_id"] == client["span_id"]]
        assert callee["kind"] == "server"
        assert callee["http"]["path"] == client["http"]["path"]
    # Nothing else in the trace: the server span, its nine calls, the two callees.
    assert len(spans) == 1 + 9 + 2


def test_secrets_in_literals_and_values_never_reach_a_reporter(service: AioServer) -> None:
    sink = HttpSink().start()
    try:
        tracer.install(
            app_name="test-service",
            reporter=reporters.create("http", url=f"http://127.0.0.1:{sink.port}/spans"),
            flush_interval=0.02,
            metrics=False,
        )
        call(service, "/work")

        def bodies() -> list[bytes]:
            out = []
            for got in sink.received:
                raw = got.raw_body
                out.append(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)
            return out

        def server_span_sent() -> bool:
            return any(b'"path":"/work"' in body for body in bodies())

        eventually(server_span_sent, what="the server span at the sink")
        assert tracer.flush()
        sent = b"".join(bodies()) + b"".join(
            json.dumps(got.headers).encode() for got in sink.received
        )
        records = [span for body in bodies() for span in json.loads(body)["spans"]]
        # What went out did record the calls, only not the secret.
        texts = [s["db"].get("db.query.text") for s in records if s.get("db")]
        assert "SELECT length(?) + ? * ?" in texts
        assert "SET ? ?" in texts
        assert SECRET.encode() not in sent
    finally:
        tracer.uninstall()
        sink.stop()
