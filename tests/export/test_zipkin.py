"""The Zipkin reporter: what real tracer services send, validated against the ``ListOfSpans``
schema of openzipkin/zipkin-api's ``zipkin2-api.yaml`` (the copy beside this file, from commit
069ec8d1c7b5 of that repository, Apache License 2.0, its header kept), the fields checked one by
one, and the delivery outcomes."""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import pytest

pytest.importorskip("jsonschema")
pytest.importorskip("yaml")

import aiohttp
import jsonschema
import requests
import yaml
from aiohttp import web

import tracer
from reporters import zipkin
from tests.conftest import Server
from tests.delivery.helpers import Outcomes
from tests.export.conftest import HERE, install
from tests.export.receiver import ZipkinReceiver
from tracer.reporters import zipkin_encode

HEX32 = re.compile(r"[0-9a-f]{32}")
HEX16 = re.compile(r"[0-9a-f]{16}")


@cache
def validator() -> Any:
    """A validator for zipkin2-api.yaml's ListOfSpans (Swagger 2.0 definitions are JSON Schema
    draft 4), formats (ipv4, ipv6) checked."""
    document = yaml.safe_load((HERE / "zipkin2-api.yaml").read_text(encoding="utf-8"))
    schema = {"$ref": "#/definitions/ListOfSpans", "definitions": document["definitions"]}
    jsonschema.Draft4Validator.check_schema(schema)
    return jsonschema.Draft4Validator(schema, format_checker=jsonschema.FormatChecker())


def valid(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    errors = [e.message for e in validator().iter_errors(spans)]
    assert errors == [], errors
    for span in spans:
        # The schema's id patterns are not anchored; Zipkin's rule is the whole string.
        assert HEX32.fullmatch(span["traceId"]) and HEX16.fullmatch(span["id"])
        assert "parentId" not in span or HEX16.fullmatch(span["parentId"])
    return spans


def one(spans: list[dict[str, Any]], **where: Any) -> dict[str, Any]:
    found = [s for s in spans if all(s.get(k) == v for k, v in where.items())]
    assert len(found) == 1, (where, spans)
    return found[0]


def test_the_schema_is_applied() -> None:
    bad = [{"traceId": "a" * 32, "id": "b" * 16, "duration": 0, "tags": {"n": 1}}]
    messages = [e.message for e in validator().iter_errors(bad)]
    assert any("less than the minimum" in m for m in messages)
    assert any("is not of type 'string'" in m for m in messages)


def test_http_server_and_requests_client(zipkin_receiver: ZipkinReceiver, server: Server) -> None:
    install(zipkin.create(zipkin_receiver.url), instrument=["http.server", "requests"])
    assert requests.get(f"{server.url}/users/7?token=secret", timeout=10).status_code == 200
    assert tracer.flush(10)
    spans = valid(zipkin_receiver.wait_spans(2))
    client = one(spans, kind="CLIENT")
    srv = one(spans, kind="SERVER")
    assert srv["traceId"] == client["traceId"]
    assert srv["parentId"] == client["id"]
    assert "parentId" not in client
    for span in (client, srv):
        assert span["name"] == "GET"
        assert span["localEndpoint"] == {"serviceName": "svc"}
        assert isinstance(span["timestamp"], int) and span["timestamp"] > 1_600_000_000_000_000
        assert span["duration"] >= 1
        assert "annotations" not in span
    assert client["remoteEndpoint"] == {"ipv4": "127.0.0.1", "port": server.port}
    assert "remoteEndpoint" not in srv
    request_id = client["traceId"]
    assert client["tags"] == {
        "http.method": "GET",
        "http.path": "/users/7",
        "http.url": f"{server.url}/users/7?token=REDACTED",
        "http.status_code": "200",
        "tracer.request_id": request_id,
    }
    assert srv["tags"] == {
        "http.method": "GET",
        "http.path": "/users/7",
        "http.status_code": "200",
        "tracer.request_id": request_id,
        "parent_service": "svc",
    }
    assert {r.path for r in zipkin_receiver.requests} == {"/api/v2/spans"}
    assert all(r.headers["Content-Encoding"] == "gzip" for r in zipkin_receiver.requests)
    assert all(r.headers["Content-Type"] == "application/json" for r in zipkin_receiver.requests)


@pytest.mark.parametrize(
    ("path", "server_error", "client_error"),
    [("/status/404", None, "404"), ("/status/503", "503", "503")],
)
def test_failed_responses_are_tagged_error(
    zipkin_receiver: ZipkinReceiver,
    server: Server,
    path: str,
    server_error: str | None,
    client_error: str,
) -> None:
    install(zipkin.create(zipkin_receiver.url), instrument=["http.server", "requests"])
    requests.get(f"{server.url}{path}", timeout=10)
    assert tracer.flush(10)
    spans = valid(zipkin_receiver.wait_spans(2))
    assert one(spans, kind="SERVER")["tags"].get("error") == server_error
    assert one(spans, kind="CLIENT")["tags"]["error"] == client_error


def test_internal_spans_annotations_and_exceptions(zipkin_receiver: ZipkinReceiver) -> None:
    install(zipkin.create(zipkin_receiver.url), instrument=[])
    with tracer.span("work", user="u1", attempt=2):
        tracer.report({"step": "a", "n": 1})
        tracer.report({"step": "b"})
        with pytest.raises(KeyError), tracer.span("inner"):
            raise KeyError("missing")
    assert tracer.flush(10)
    spans = valid(zipkin_receiver.wait_spans(2))
    work = one(spans, name="work")
    inner = one(spans, name="inner")
    assert "kind" not in work and "kind" not in inner
    assert inner["parentId"] == work["id"]
    assert work["tags"] == {"user": "u1", "attempt": "2", "tracer.request_id": work["traceId"]}
    assert [a["value"] for a in work["annotations"]] == ['{"step":"a","n":1}', '{"step":"b"}']
    for annotation in work["annotations"]:
        assert work["timestamp"] <= annotation["timestamp"] <= work["timestamp"] + work["duration"]
    assert inner["tags"]["error"] == "KeyError: 'missing'"
    assert 'raise KeyError("missing")' in inner["tags"]["exception.stacktrace"]


async def test_aiohttp_route_names_the_server_span(zipkin_receiver: ZipkinReceiver) -> None:
    install(zipkin.create(zipkin_receiver.url), instrument=["aiohttp.server", "aiohttp.client"])

    async def user(request: web.Request) -> web.Response:
        return web.Response(text=request.match_info["id"])

    app = web.Application()
    app.router.add_get("/users/{id}", user)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/users/42") as response:
                assert response.status == 200
    finally:
        await runner.cleanup()
    assert tracer.flush(10)
    spans = valid(zipkin_receiver.wait_spans(2))
    srv = one(spans, kind="SERVER")
    assert srv["name"] == "GET /users/{id}"
    assert srv["tags"]["http.route"] == "/users/{id}"
    assert srv["tags"]["http.path"] == "/users/42"
    assert one(spans, kind="CLIENT")["remoteEndpoint"] == {"ipv4": "127.0.0.1", "port": port}


def record(**fields: Any) -> dict[str, Any]:
    return {
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "span_id": "00f067aa0ba902b7",
        "parent_id": None,
        "kind": "client",
        "name": "GET example:80/",
        "start_us": 1_714_564_800_000_000,
        "duration_us": 0,
        "http": {"method": "GET", "url": "http://Example.COM/x", "path": "/x", "status_code": 200},
        **fields,
    }


@pytest.mark.parametrize(
    ("url", "remote"),
    [
        ("http://Example.COM/x", {"serviceName": "example.com", "port": 80}),
        ("https://[2001:db8::1]:8443/x", {"ipv6": "2001:db8::1", "port": 8443}),
        ("http://10.1.2.3:81/x", {"ipv4": "10.1.2.3", "port": 81}),
    ],
)
def test_remote_endpoint_and_duration_floor(url: str, remote: dict[str, Any]) -> None:
    http = {"method": "GET", "url": url, "path": "/x", "status_code": 200}
    (span,) = valid(zipkin_encode.encode_spans({"service": "svc", "spans": [record(http=http)]})[0])
    assert span["remoteEndpoint"] == remote
    # Zipkin's rule: a duration is at least 1 microsecond.
    assert span["duration"] == 1


def test_unusable_records_are_left_out_and_counted(zipkin_receiver: ZipkinReceiver) -> None:
    reporter = zipkin.create(zipkin_receiver.url)
    batch = {
        "service": "svc",
        "spans": [record(trace_id="xyz"), record(span_id="0" * 16), record()],
    }
    outcomes = Outcomes()
    reporter.send(batch, outcomes)
    assert outcomes.only is None
    assert [s["id"] for s in zipkin_receiver.spans()] == ["00f067aa0ba902b7"]
    assert reporter.rejected_spans == 2
    # Nothing left to send: delivered without a request.
    before = len(zipkin_receiver.requests)
    reporter.send({"service": "svc", "spans": [record(trace_id="xyz")]}, Outcomes())
    assert len(zipkin_receiver.requests) == before
    reporter.close()


@pytest.mark.parametrize(
    ("status", "retryable"), [(503, True), (429, True), (500, True), (400, False), (404, False)]
)
def test_statuses(zipkin_receiver: ZipkinReceiver, status: int, retryable: bool) -> None:
    zipkin_receiver.plan = [(status, {"Retry-After": "2"}, b"no")]
    reporter = zipkin.create(zipkin_receiver.url)
    outcomes = Outcomes()
    reporter.send({"service": "svc", "spans": [record()]}, outcomes)
    error = outcomes.error()
    assert error.retryable is retryable
    if retryable:
        assert error.retry_after == 2.0
    reporter.close()


def test_environment_variables(zipkin_receiver: ZipkinReceiver) -> None:
    env = {
        "OTEL_EXPORTER_ZIPKIN_ENDPOINT": zipkin_receiver.url,
        "OTEL_EXPORTER_ZIPKIN_TIMEOUT": "1500",
    }
    reporter = zipkin.create(env=env)
    assert reporter.timeout == 1.5
    outcomes = Outcomes()
    reporter.send({"service": "svc", "spans": [record()]}, outcomes)
    assert outcomes.only is None
    assert len(zipkin_receiver.spans()) == 1
    assert zipkin.create(env={}).url == "http://localhost:9411/api/v2/spans"
    with pytest.raises(ValueError, match="OTEL_EXPORTER_ZIPKIN_TIMEOUT"):
        zipkin.create(env={"OTEL_EXPORTER_ZIPKIN_TIMEOUT": "-1"})
    reporter.close()
