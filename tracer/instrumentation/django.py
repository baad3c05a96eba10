"""Django: a server span for every request of its WSGI and ASGI handlers, named by its route.

Three patches, none of them a middleware, so the order of ``MIDDLEWARE`` does not matter and a
project needs no change:

* ``WSGIHandler.__call__`` goes through the WSGI core and ``ASGIHandler.__call__`` through the
  ASGI core (:mod:`tracer.instrumentation.wsgi`, :mod:`tracer.instrumentation.asgi`), which make
  the server span, or only adopt the one already made for the request (``runserver`` is
  ``http.server`` underneath; ``tracer.asgi()`` around Django's ASGI application), so a request
  never gets two.
* ``BaseHandler.resolve_request`` is where Django resolves the URL, on both handlers: once it
  returned, ``resolver_match.route`` is the whole template, ``include()`` prefixes joined, and the
  span is named after it (``GET /api/users/<int:id>/``). A request that no URL matched (the
  resolver's 404) has no route, which metrics label ``_OTHER``, and is named by its method alone.
* ``django.core.handlers.exception.response_for_exception`` is where Django turns an exception
  into a response; when that response is a 5xx the span records the exception. The response
  itself, and so the project's ``handler500``, the debug page and its exception middleware, are
  Django's as before.

Django is patched when ``django`` is imported (or at install, when it already is): the handler
modules are imported then, which needs no settings.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

from tracer import safety
from tracer.context import current
from tracer.instrumentation.base import Instrumentation
from tracer.span import SERVER, Span

#: At most this many distinct route templates are remembered (an application's are few).
MAX_ROUTES = 1024


def _server_span() -> Span | None:
    """The server span of the request being served (``current`` may hold a child of it)."""
    span = current.get()
    if span is None or span.kind == SERVER:
        return span
    root = span.local.root
    return root if root is not None and root.kind == SERVER and not root.finished else None


def template(route: str) -> str:
    """Django's joined route (``api/users/<int:id>/``, or a ``re_path`` regex) as a path
    template: a leading ``/``, a regex's anchors left out."""
    if route[:1] == "^":
        route = route[1:]
    if route[-1:] == "$":
        route = route[:-1]
    return "/" + route


class DjangoInstrumentation(Instrumentation):
    """Server spans for Django's WSGI and ASGI handlers, named by ``resolver_match.route``."""

    name = "django"
    module = "django"

    def _install(self, module: types.ModuleType) -> None:
        import django.core.handlers.asgi as asgi_handlers
        import django.core.handlers.base as base
        import django.core.handlers.exception as exception
        import django.core.handlers.wsgi as wsgi_handlers

        from tracer.instrumentation import asgi as asgi_core
        from tracer.instrumentation import wsgi as wsgi_core

        runtime = self.runtime
        assert runtime is not None
        wsgi_call = wsgi_core.call
        asgi_call = asgi_core.call
        # Django's route (the joined template) -> its path template.
        templates: dict[str, str] = {}

        def make_wsgi_call(original: Callable[..., Any]) -> Any:
            def __call__(self: Any, environ: dict[str, Any], start_response: Any) -> Any:
                return wsgi_call(runtime, original.__get__(self), environ, start_response)

            return __call__

        def make_asgi_call(original: Callable[..., Any]) -> Any:
            async def __call__(self: Any, scope: Any, receive: Any, send: Any) -> Any:
                return await asgi_call(runtime, original.__get__(self), scope, receive, send)

            return __call__

        def make_resolve_request(original: Callable[..., Any]) -> Any:
            def resolve_request(self: Any, request: Any) -> Any:
                # A request no URL matched raises Resolver404 here and keeps no route: the core
                # names it by its method alone.
                match = original(self, request)
                span = _server_span()
                if span is not None:
                    try:
                        route = match.route
                        path = templates.get(route)
                        if path is None:
                            path = template(route)
                            if len(templates) >= MAX_ROUTES:
                                templates.clear()
                            templates[route] = path
                        # The core names the span after it when the request ends.
                        span.route = path
                    except Exception as exc:
                        safety.internal_error("django.route", exc)
                return match

            return resolve_request

        def response_for_exception(
            wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kw: dict[str, Any]
        ) -> Any:
            response = wrapped(*args, **kw)
            try:
                if getattr(response, "status_code", 0) >= 500:
                    exc = args[1] if len(args) > 1 else kw.get("exc")
                    span = _server_span()
                    if span is not None and isinstance(exc, BaseException):
                        span.record_exception(exc)
            except Exception as exc:
                safety.internal_error("django.exception", exc)
            return response

        self.replace(wsgi_handlers.WSGIHandler, "__call__", make_wsgi_call)
        self.replace(asgi_handlers.ASGIHandler, "__call__", make_asgi_call)
        self.replace(base.BaseHandler, "resolve_request", make_resolve_request)
        self.wrap(exception, "response_for_exception", response_for_exception)
