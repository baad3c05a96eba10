"""Starlette and FastAPI: every request through the ASGI core, named by the route that matched.

``Starlette.__call__`` (FastAPI's application calls it too) serves each ``http`` and
``websocket`` scope through :func:`tracer.instrumentation.asgi.call`, so the application's own
middleware (CORS, GZip, user middleware) and exception handlers all run inside the span; when an
outer layer (uvicorn's, ``tracer.asgi()``, a parent application this one is mounted in) already
traces the scope, the call goes straight to Starlette.

The route is named where Starlette dispatches to it, never by matching again: the router calls
``handle()`` on the one route that matched, and that ``handle()`` (of ``Route`` and
``WebSocketRoute``) sets the span's route to the route's path template. ``Mount.handle()`` adds
its path to a prefix kept in the scope (:data:`PREFIX_KEY`), so a route of a mounted
application or router is named by its whole template (``/api/users/{id}``). FastAPI versions
whose included routers are not flattened into the application's routes dispatch through
``APIRoute.handle()`` with the inclusion's context in the scope: that context's full path (the
routers' prefixes included) names the route there. A request no route matched keeps no route:
it is named by its method alone, and ``_OTHER`` in metrics.

Work a request starts keeps its trace because it inherits the request's context: background
tasks run in the request's task after the response, ``run_in_threadpool`` copies the context to
its thread and task groups to their tasks. The route lives on the request's span, never in
shared state, so nothing of one request is seen by another.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable
from typing import Any

from tracer.instrumentation.asgi import SCOPE_KEY, call
from tracer.instrumentation.base import Instrumentation

#: The scope key holding the path templates of the mounts the request went through, joined.
PREFIX_KEY = "tracer.mount_prefix"


def _name(scope: Any, path: str) -> None:
    """Set the request's route to ``path`` under the mounts it went through."""
    span = scope.get(SCOPE_KEY)
    if span is not None:
        prefix = scope.get(PREFIX_KEY)
        span.route = path if prefix is None else prefix + path


class StarletteInstrumentation(Instrumentation):
    """Starlette applications (and FastAPI's, which are Starlette applications)."""

    name = "starlette"
    # Not starlette.routing: it is imported half-way through starlette.applications, before
    # the application class exists.
    module = "starlette.applications"

    def _install(self, module: types.ModuleType) -> None:
        from starlette import routing

        runtime = self.runtime
        assert runtime is not None

        def make_call(original: Callable[..., Any]) -> Any:
            async def __call__(self: Any, scope: Any, receive: Any, send: Any) -> None:
                if SCOPE_KEY in scope or scope["type"] == "lifespan":
                    await original(self, scope, receive, send)
                    return
                await call(runtime, functools.partial(original, self), scope, receive, send)

            return __call__

        def make_route_handle(original: Callable[..., Any]) -> Any:
            async def handle(self: Any, scope: Any, receive: Any, send: Any) -> None:
                _name(scope, self.path)
                await original(self, scope, receive, send)

            return handle

        def make_mount_handle(original: Callable[..., Any]) -> Any:
            async def handle(self: Any, scope: Any, receive: Any, send: Any) -> None:
                if SCOPE_KEY in scope:
                    prefix = scope.get(PREFIX_KEY)
                    scope[PREFIX_KEY] = self.path if prefix is None else prefix + self.path
                await original(self, scope, receive, send)

            return handle

        self.replace(module.Starlette, "__call__", make_call)
        self.replace(routing.Route, "handle", make_route_handle)
        self.replace(routing.WebSocketRoute, "handle", make_route_handle)
        self.replace(routing.Mount, "handle", make_mount_handle)


class FastAPIInstrumentation(Instrumentation):
    """FastAPI's ``APIRoute.handle()``, where a FastAPI version that keeps included routers
    apart dispatches with the inclusion's full path in the scope.

    On versions that flatten included routers (their routes carry the whole path) ``APIRoute``
    has no ``handle()`` of its own, Starlette's ``Route.handle()`` names the route, and nothing
    is patched here.
    """

    name = "fastapi"
    module = "fastapi.routing"

    def _install(self, module: types.ModuleType) -> None:
        route = module.APIRoute
        context_of = getattr(module, "_get_scope_effective_route_context", None)
        if "handle" not in route.__dict__ or context_of is None:
            return

        def make_handle(original: Callable[..., Any]) -> Any:
            async def handle(self: Any, scope: Any, receive: Any, send: Any) -> None:
                if SCOPE_KEY in scope:
                    context = context_of(scope)
                    path = None
                    if context is not None and getattr(context, "original_route", None) is self:
                        path = getattr(context, "path", None)
                    _name(scope, path or self.path)
                await original(self, scope, receive, send)

            return handle

        self.replace(route, "handle", make_handle)
