"""Flask, instrumented when imported: served by wsgiref (http.server underneath) and by
werkzeug's development server from a thread of this process, called by ``requests``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from wsgiref import simple_server

import flask
import flask.ctx
import pytest
import requests

import tracer
from tests.conftest import assert_child_prints_ok
from tests.metrics.helpers import local_text, samples
from tests.support.waiting import eventually
from tests.wsgi import apps
from tests.wsgi.servers import Werkzeug, Wsgiref
from tracer import context
from tracer.reporters.memory import MemoryReporter

SERVER_COUNT = "http_server_request_duration_seconds_count"


@pytest.fixture(scope="module")
def served() -> Iterator[Wsgiref]:
    server = Wsgiref(apps.flask_app)
    yield server
    server.close()


def servers(memory: MemoryReporter, count: int = 1) -> list[dict[str, Any]]:
    eventually(lambda: len(memory.find(kind="server")) >= count, what="server spans")
    tracer.flush()
    return memory.find(kind="server")


def get(url: str) -> requests.Response:
    with context.suppressed():
        return requests.get(url, timeout=30)


def test_a_request_is_named_by_its_rule_with_one_span(
    memory: MemoryReporter, served: Wsgiref
) -> None:
    with tracer.span("caller"):
        response = requests.get(f"{served.url}/users/7", timeout=30)
    assert response.status_code == 200
    body = response.json()
    assert body["user"] == 7
    # tracer's headers once, though http.server's instrumentation saw the request first.
    assert response.headers["x-parent"] == "test-service"
    (span,) = servers(memory)
    assert span["name"] == "GET /users/<int:user_id>"
    assert span["http"]["route"] == "/users/<int:user_id>"
    assert span["http"]["status_code"] == 200
    assert span["span_id"] == body["span_id"]
    (client,) = memory.find(kind="client")
    assert span["parent_id"] == client["span_id"]
    assert body["transaction_id"] == client["request_id"]


def test_a_blueprint_route_has_its_prefix(memory: MemoryReporter, served: Wsgiref) -> None:
    assert get(f"{served.url}/shop/items/pen").text == "pen"
    (span,) = servers(memory)
    assert span["name"] == "GET /shop/items/<name>"


def test_no_rule_matched_is_other_and_named_by_method(
    memory: MemoryReporter, served: Wsgiref
) -> None:
    assert get(f"{served.url}/users/7").status_code == 200
    assert get(f"{served.url}/no/such/page").status_code == 404
    spans = servers(memory, 2)
    (missing,) = [s for s in spans if s["http"]["status_code"] == 404]
    assert missing["name"] == "GET"
    assert missing["http"]["route"] is None
    routes = {labels["http_route"]: labels for labels, _ in samples(local_text(), SERVER_COUNT)}
    assert routes["_OTHER"]["http_response_status_code"] == "404"
    assert routes["/users/<int:user_id>"]["http_response_status_code"] == "200"


def test_an_exception_with_flasks_default_handler(memory: MemoryReporter, served: Wsgiref) -> None:
    response = get(f"{served.url}/boom")
    assert response.status_code == 500
    assert "Internal Server Error" in response.text  # Flask's own page, as without tracer
    (span,) = servers(memory)
    assert span["http"]["status_code"] == 500
    assert span["error"]["type"] == "ValueError"
    assert span["name"] == "GET /boom"


def test_an_exception_with_the_applications_error_handler(
    memory: MemoryReporter, served: Wsgiref
) -> None:
    response = get(f"{served.url}/handled")
    assert (response.status_code, response.text) == (500, "handled by the application")
    (span,) = servers(memory)
    assert span["http"]["status_code"] == 500
    assert span["error"]["type"] == "KeyError"


def test_abort_is_a_response_not_an_error(memory: MemoryReporter, served: Wsgiref) -> None:
    assert get(f"{served.url}/forbidden").status_code == 403
    (span,) = servers(memory)
    assert span["http"]["status_code"] == 403
    assert span["error"] is None


def test_stream_with_context_ends_at_close(memory: MemoryReporter, served: Wsgiref) -> None:
    apps.RELEASE.clear()
    apps.LAST_CHUNK_US.clear()
    try:
        with context.suppressed():
            with requests.get(f"{served.url}/stream", stream=True, timeout=30) as response:
                assert response.raw.read(6) == b"first,"
                tracer.flush()
                assert memory.find(kind="server") == []
                apps.RELEASE.set()
                assert response.raw.read() == b"last"
    finally:
        apps.RELEASE.set()
    (span,) = servers(memory)
    assert span["name"] == "GET /stream"
    assert span["start_us"] + span["duration_us"] >= apps.LAST_CHUNK_US[0]
    (inner,) = memory.find(name="in-stream")
    assert inner["parent_id"] == span["span_id"]


def test_tracer_wsgi_around_flask_gives_one_span(memory: MemoryReporter) -> None:
    server = Wsgiref(tracer.wsgi(apps.flask_app))
    try:
        response = get(f"{server.url}/users/3")
    finally:
        server.close()
    assert response.headers["x-parent"] == "test-service"
    (span,) = servers(memory)
    assert span["name"] == "GET /users/<int:user_id>"


def test_werkzeugs_development_server_gives_one_span_and_headers_once(
    memory: MemoryReporter,
) -> None:
    server = Werkzeug(apps.flask_app)
    try:
        response = get(f"{server.url}/users/3")
    finally:
        server.close()
    assert response.headers["x-parent"] == "test-service"  # not "test-service, test-service"
    (span,) = servers(memory)
    assert span["name"] == "GET /users/<int:user_id>"
    assert span["http"]["status_code"] == 200


def test_uninstall_restores_every_patched_object() -> None:
    originals = {
        (flask.Flask, "__call__"): flask.Flask.__dict__["__call__"],
        (flask.Flask, "handle_user_exception"): flask.Flask.__dict__["handle_user_exception"],
        (flask.Flask, "handle_exception"): flask.Flask.__dict__["handle_exception"],
        (flask.ctx.RequestContext, "match_request"): (
            flask.ctx.RequestContext.__dict__["match_request"]
        ),
        (simple_server.WSGIRequestHandler, "handle"): (
            simple_server.WSGIRequestHandler.__dict__["handle"]
        ),
        (simple_server.WSGIServer, "get_app"): simple_server.WSGIServer.__dict__["get_app"],
    }
    import reporters

    tracer.install(reporter=reporters.create("memory"))
    for (owner, name), original in originals.items():
        assert owner.__dict__[name] is not original, name
    tracer.uninstall()
    for (owner, name), original in originals.items():
        assert owner.__dict__[name] is original, name


def test_flask_imported_after_install_is_instrumented() -> None:
    assert_child_prints_ok(
        """
import sys, reporters, tracer
reporter = reporters.create("memory")
tracer.install(reporter=reporter, flush_interval=0.02)
assert "flask" not in sys.modules
from flask import Flask
app = Flask("late")
@app.route("/orders/<int:order>")
def order(order):
    return "ok"
response = app.test_client().get("/orders/5")
assert response.status_code == 200
response.close()  # the span ends when the server closes the response
tracer.flush()
(span,) = reporter.find(kind="server")
assert span["name"] == "GET /orders/<int:order>", span["name"]
print("ok")
"""
    )


def test_an_ignored_path_gets_no_span_from_any_layer(served: Wsgiref) -> None:
    import reporters

    reporter = reporters.create("memory")
    tracer.install(reporter=reporter, flush_interval=0.02, ignore_paths=["/users/*"])
    response = get(f"{served.url}/users/1")
    assert response.status_code == 200 and "x-parent" not in response.headers
    assert get(f"{served.url}/shop/items/x").headers["x-parent"]
    (span,) = servers(reporter)
    assert span["name"] == "GET /shop/items/<name>"
