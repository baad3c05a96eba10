"""A hello-world Django project in one module, called through its WSGI handler in-process.

The ``django`` rows of ``python -m benchmarks.instructions`` count what one request costs Django
and the tracer that instruments it, without a server or a socket: :func:`configure` must run
before either tracer is set up (OpenTelemetry's instrumentor reads ``settings.MIDDLEWARE`` when
it is installed), and :func:`calls` builds the handler afterwards, as a server would.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

BODY = b"ok"


def hello(request: Any, id: int) -> Any:
    from django.http import HttpResponse

    return HttpResponse(BODY)


def _urlpatterns() -> list[Any]:
    from django.urls import path

    return [path("hello/<int:id>/", hello)]


urlpatterns: list[Any] = []


def configure() -> None:
    """Configure Django with this module as its URLconf (once per process)."""
    import django
    from django.conf import settings

    if settings.configured:
        return
    settings.configure(
        DEBUG=False,
        SECRET_KEY="benchmark",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
        INSTALLED_APPS=[],
        DATABASES={},
        LOGGING_CONFIG=None,
        USE_TZ=True,
    )
    django.setup()
    urlpatterns[:] = _urlpatterns()


_ENVIRON = {
    "REQUEST_METHOD": "GET",
    "SCRIPT_NAME": "",
    "PATH_INFO": "/hello/7/",
    "QUERY_STRING": "",
    "SERVER_NAME": "127.0.0.1",
    "SERVER_PORT": "8000",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "HTTP_HOST": "127.0.0.1:8000",
    "wsgi.version": (1, 0),
    "wsgi.url_scheme": "http",
    "wsgi.multithread": False,
    "wsgi.multiprocess": False,
    "wsgi.run_once": False,
}


@contextmanager
def calls(url: str) -> Iterator[Callable[[int, bool], int]]:
    """``call(count, fresh)``: ``count`` requests through a new ``WSGIHandler``; how many were
    answered 200 with the expected body (``url`` is not used: nothing leaves the process)."""
    configure()
    from django.core.handlers.wsgi import WSGIHandler

    errors = io.StringIO()
    handlers: list[Any] = []
    status: list[str] = []

    def start_response(line: str, headers: Any, exc_info: Any = None) -> Any:
        status.append(line)
        return None

    def call(count: int, fresh: bool) -> int:
        # A new handler after each switch: OpenTelemetry's middleware is loaded when it is built.
        if fresh or not handlers:
            handlers[:] = [WSGIHandler()]
        handler = handlers[0]
        ok = 0
        for _ in range(count):
            status.clear()
            environ = {**_ENVIRON, "wsgi.input": io.BytesIO(), "wsgi.errors": errors}
            result = handler(environ, start_response)
            try:
                body = b"".join(result)
            finally:
                result.close()
            ok += status == ["200 OK"] and body == BODY
        return ok

    yield call
