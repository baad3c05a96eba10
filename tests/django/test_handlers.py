"""Django's WSGI and ASGI handlers called in-process: route names, unmatched requests,
exceptions, work handed across sync_to_async / async_to_sync, and an exact uninstall.

Real servers (gunicorn, uvicorn, runserver) are in the other modules of this folder; these checks
need no socket, only the handlers' own entry points.
"""

from __future__ import annotations

from typing import Any

import pytest

import reporters
import tracer
from reporters.memory import MemoryReporter
from tests.conftest import assert_child_prints_ok
from tests.django.conftest import call_asgi, call_wsgi, setup_django
from tracer.instrumentation.django import template

setup_django()

from django.core.handlers.asgi import ASGIHandler  # noqa: E402
from django.core.handlers.wsgi import WSGIHandler  # noqa: E402


def server_span(memory: MemoryReporter) -> dict[str, Any]:
    memory.wait_for(1)
    tracer.flush()
    (span,) = memory.find(kind="server")
    return span


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/hello/", "/hello/"),
        ("/api/users/7/", "/api/users/<int:id>/"),
        ("/api/v2/items/pen/", "/api/v2/items/<slug:name>/"),
        ("/articles/2024/", "/articles/(?P<year>[0-9]{4})/"),
    ],
)
def test_the_wsgi_span_is_named_by_the_whole_route(
    memory: MemoryReporter, path: str, route: str
) -> None:
    status, _ = call_wsgi(WSGIHandler(), path)
    assert status.startswith("200")
    span = server_span(memory)
    assert span["name"] == f"GET {route}"
    assert span["http"]["route"] == route
    assert span["http"]["path"] == path
    assert span["http"]["status_code"] == 200
    assert span["error"] is None


def test_a_request_no_url_matched_is_named_by_its_method(memory: MemoryReporter) -> None:
    status, _ = call_wsgi(WSGIHandler(), "/nowhere/42")
    assert status.startswith("404")
    span = server_span(memory)
    assert span["name"] == "GET"
    assert span["http"]["route"] is None
    assert span["http"]["status_code"] == 404


def test_a_404_raised_by_a_view_keeps_its_route(memory: MemoryReporter) -> None:
    status, _ = call_wsgi(WSGIHandler(), "/missing/")
    assert status.startswith("404")
    span = server_span(memory)
    assert span["name"] == "GET /missing/"
    assert span["error"] is None


def test_a_view_exception_is_on_the_span_and_the_response_is_djangos() -> None:
    untraced = call_wsgi(WSGIHandler(), "/boom/")
    memory = reporters.create("memory")
    tracer.install(app_name="django-test", reporter=memory, flush_interval=0.02)
    traced = call_wsgi(WSGIHandler(), "/boom/")
    # The project's handler500 answered, as it did untraced.
    assert traced == untraced == ("500 Internal Server Error", b"custom 500 page")
    span = server_span(memory)
    assert span["name"] == "GET /boom/"
    assert span["http"]["status_code"] == 500
    assert span["error"]["type"] == "ValueError"
    assert span["error"]["message"] == "view failed"
    assert "in boom" in span["error"]["stack"]


def test_the_debug_page_is_unchanged_and_the_span_has_the_exception() -> None:
    from django.test.utils import override_settings

    with override_settings(DEBUG=True):
        untraced_status, untraced_body = call_wsgi(WSGIHandler(), "/boom/")
        memory = reporters.create("memory")
        tracer.install(app_name="django-test", reporter=memory, flush_interval=0.02)
        status, body = call_wsgi(WSGIHandler(), "/boom/")
    assert status == untraced_status == "500 Internal Server Error"
    # Django's technical 500 page, not the project's handler500.
    assert b"view failed" in body and b"custom 500 page" not in body
    assert body.count(b"ValueError") == untraced_body.count(b"ValueError")
    span = server_span(memory)
    assert span["error"]["type"] == "ValueError"


def test_an_exception_django_propagates_passes_through_unchanged(memory: MemoryReporter) -> None:
    from django.test.utils import override_settings

    with override_settings(DEBUG_PROPAGATE_EXCEPTIONS=True):
        with pytest.raises(ValueError, match="view failed"):
            call_wsgi(WSGIHandler(), "/boom/")
    span = server_span(memory)
    assert span["error"]["type"] == "ValueError"
    assert span["http"]["status_code"] == 500


def test_async_to_sync_work_in_a_wsgi_view_is_a_child_of_its_span(
    memory: MemoryReporter,
) -> None:
    import json

    status, body = call_wsgi(WSGIHandler(), "/async-to-sync/")
    assert status.startswith("200")
    seen = json.loads(body)
    memory.wait_for(2)
    tracer.flush()
    server = server_span(memory)
    (work,) = memory.find(name="work async")
    assert seen["view"]["span_id"] == server["span_id"]
    assert work["parent_id"] == server["span_id"]
    assert work["trace_id"] == server["trace_id"]


async def test_the_asgi_span_is_named_by_the_route(memory: MemoryReporter) -> None:
    status, _ = await call_asgi(ASGIHandler(), "/api/users/3/")
    assert status == 200
    span = server_span(memory)
    assert span["name"] == "GET /api/users/<int:id>/"
    assert span["http"]["route"] == "/api/users/<int:id>/"


async def test_an_asgi_request_no_url_matched_is_named_by_its_method(
    memory: MemoryReporter,
) -> None:
    status, _ = await call_asgi(ASGIHandler(), "/nowhere/")
    assert status == 404
    span = server_span(memory)
    assert span["name"] == "GET"
    assert span["http"]["route"] is None


async def test_an_asgi_view_exception_is_on_the_span(memory: MemoryReporter) -> None:
    status, body = await call_asgi(ASGIHandler(), "/boom/")
    assert (status, body) == (500, b"custom 500 page")
    span = server_span(memory)
    assert span["http"]["status_code"] == 500
    assert span["error"]["type"] == "ValueError"


async def test_sync_to_async_work_in_an_asgi_view_is_a_child_of_its_span(
    memory: MemoryReporter,
) -> None:
    import json

    status, body = await call_asgi(ASGIHandler(), "/sync-to-async/")
    assert status == 200
    seen = json.loads(body)
    memory.wait_for(2)
    tracer.flush()
    server = server_span(memory)
    (work,) = memory.find(name="work sync")
    assert seen["view"]["span_id"] == server["span_id"]
    assert work["parent_id"] == server["span_id"]
    assert seen["inner"]["trace_id"] == server["trace_id"]


async def test_async_to_sync_work_in_an_asgi_served_sync_view(memory: MemoryReporter) -> None:
    # A sync view under the ASGI handler runs in a thread; its async work goes back to a loop.
    status, _ = await call_asgi(ASGIHandler(), "/async-to-sync/")
    assert status == 200
    memory.wait_for(2)
    tracer.flush()
    server = server_span(memory)
    (work,) = memory.find(name="work async")
    assert work["parent_id"] == server["span_id"]


def test_uninstall_puts_back_every_original() -> None:
    import django.core.handlers.base as base
    import django.core.handlers.exception as exception

    originals = (
        WSGIHandler.__dict__["__call__"],
        ASGIHandler.__dict__["__call__"],
        base.BaseHandler.__dict__["resolve_request"],
        exception.response_for_exception,
    )
    tracer.install(app_name="django-test", reporter=reporters.create("memory"))
    patched = (
        WSGIHandler.__dict__["__call__"],
        ASGIHandler.__dict__["__call__"],
        base.BaseHandler.__dict__["resolve_request"],
        exception.response_for_exception,
    )
    assert all(p is not o for p, o in zip(patched, originals, strict=True))
    tracer.uninstall()
    assert WSGIHandler.__dict__["__call__"] is originals[0]
    assert ASGIHandler.__dict__["__call__"] is originals[1]
    assert base.BaseHandler.__dict__["resolve_request"] is originals[2]
    assert exception.response_for_exception is originals[3]


def test_uninstalled_nothing_is_traced(memory: MemoryReporter) -> None:
    tracer.uninstall()
    status, _ = call_wsgi(WSGIHandler(), "/hello/")
    assert status.startswith("200")
    tracer.flush()
    assert memory.find(kind="server") == []


def test_route_templates() -> None:
    assert template("") == "/"
    assert template("api/users/<int:id>/") == "/api/users/<int:id>/"
    assert template("^articles/(?P<year>[0-9]{4})/$") == "/articles/(?P<year>[0-9]{4})/"


@pytest.mark.parametrize("django_first", [True, False])
def test_django_is_patched_imported_before_or_after_install(django_first: bool) -> None:
    install = "tracer.install(app_name='t', reporter=reporters.create('memory'))"
    load = "import django.core.handlers.wsgi as w"
    first, second = (load, install) if django_first else (install, load)
    assert_child_prints_ok(
        "import reporters, tracer\n"
        f"{first}\n{second}\n"
        "from tracer import patching\n"
        "assert patching.is_ours(w.WSGIHandler.__dict__['__call__'])\n"
        "import django.core.handlers.base as b\n"
        "assert patching.is_ours(b.BaseHandler.__dict__['resolve_request'])\n"
        "print('ok')\n"
    )
