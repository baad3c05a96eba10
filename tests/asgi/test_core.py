"""The ASGI core in-process: tracer.asgi() on a bare ASGI application, and what install and
uninstall do to Starlette, FastAPI and uvicorn."""

from __future__ import annotations

import asyncio
from typing import Any

import fastapi.routing
import pytest
import starlette.applications
import starlette.routing
import uvicorn.config

import reporters
import tracer
from reporters.memory import MemoryReporter
from tests.support.children import assert_child_prints_ok
from tracer.patching import is_ours

PATCHED = [
    (starlette.applications.Starlette, "__call__"),
    (starlette.routing.Route, "handle"),
    (starlette.routing.WebSocketRoute, "handle"),
    (starlette.routing.Mount, "handle"),
    (uvicorn.config.Config, "load"),
]
#: FastAPI versions that dispatch included routers themselves have an ``APIRoute.handle()`` of
#: their own, which tracer patches (see its starlette.py); older ones have neither.
FASTAPI_DISPATCHES = "handle" in fastapi.routing.APIRoute.__dict__ and hasattr(
    fastapi.routing, "_get_scope_effective_route_context"
)
if FASTAPI_DISPATCHES:
    PATCHED.append((fastapi.routing.APIRoute, "handle"))


def scope(path: str = "/x", kind: str = "http") -> dict[str, Any]:
    return {
        "type": kind,
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1")],
    }


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


def serve(app: Any, request: dict[str, Any]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(request, receive, send))
    return sent


HEADERS = [(b"content-type", b"text/plain")]


async def hello(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        scope["seen"] = tracer.current_span()
        return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": b"hi"})


def test_uninstall_restores_every_patched_object() -> None:
    originals = {(owner, name): owner.__dict__[name] for owner, name in PATCHED}
    tracer.install(app_name="x", reporter=reporters.create("memory"))
    for owner, name in PATCHED:
        assert is_ours(owner.__dict__[name]), (owner, name)
    if not FASTAPI_DISPATCHES:
        # Nothing is added where FastAPI has nothing to patch: Route.handle() names the route.
        assert "handle" not in fastapi.routing.APIRoute.__dict__
    tracer.uninstall()
    for owner, name in PATCHED:
        assert owner.__dict__[name] is originals[(owner, name)], (owner, name)


def test_starlette_imported_after_install_is_patched() -> None:
    assert_child_prints_ok(
        "import tracer, reporters\n"
        "tracer.install(app_name='x', reporter=reporters.create('memory'))\n"
        "from fastapi import FastAPI\n"
        "from starlette.routing import Route, Mount\n"
        "from tracer.patching import is_ours\n"
        "assert is_ours(FastAPI.__mro__[1].__dict__['__call__'])\n"
        "assert is_ours(Route.__dict__['handle']) and is_ours(Mount.__dict__['handle'])\n"
        "print('ok')\n"
    )


def test_a_bare_application_gets_a_span_and_its_headers_a_new_list(
    memory: MemoryReporter,
) -> None:
    sent = serve(tracer.asgi(hello), scope("/plain"))
    assert sent[0]["headers"][: len(HEADERS)] == HEADERS
    assert (b"x-parent", b"test-service") in sent[0]["headers"]
    # The application's constant list is left as it was.
    assert HEADERS == [(b"content-type", b"text/plain")]
    assert tracer.current_span() is None
    tracer.flush()
    (span,) = memory.find(kind="server")
    assert span["name"] == "GET"
    assert span["http"]["path"] == "/plain"
    assert span["http"]["status_code"] == 200


def test_lifespan_passes_through_untraced(memory: MemoryReporter) -> None:
    request = {"type": "lifespan"}
    serve(tracer.asgi(hello), request)
    assert request["seen"] is None
    assert "tracer.span" not in request
    tracer.flush()
    assert memory.find(kind="server") == []


def test_the_applications_exception_propagates_unchanged(memory: MemoryReporter) -> None:
    error = KeyError("mine")

    async def failing(scope: Any, receive: Any, send: Any) -> None:
        raise error

    with pytest.raises(KeyError) as raised:
        serve(tracer.asgi(failing), scope())
    assert raised.value is error
    assert tracer.current_span() is None
    tracer.flush()
    (span,) = memory.find(kind="server")
    assert span["http"]["status_code"] == 500
    assert span["error"]["type"] == "KeyError"


def test_an_application_that_never_answers_is_a_500(memory: MemoryReporter) -> None:
    async def silent(scope: Any, receive: Any, send: Any) -> None:
        return None

    serve(tracer.asgi(silent), scope())
    tracer.flush()
    (span,) = memory.find(kind="server")
    assert span["http"]["status_code"] == 500


def test_wrapped_before_install_is_traced_only_while_installed() -> None:
    app = tracer.asgi(hello)
    assert tracer.asgi(app) is app
    request = scope()
    serve(app, request)
    assert "tracer.span" not in request
    reporter = reporters.create("memory")
    tracer.install(app_name="x", reporter=reporter, flush_interval=0.02)
    serve(app, scope())
    tracer.flush()
    assert len(reporter.find(kind="server")) == 1
