"""Flask: every application's requests traced by the WSGI core, named by their URL rule.

``Flask.__call__`` goes through :func:`tracer.instrumentation.wsgi.call`, so middleware applied
as ``app.wsgi_app = Middleware(app.wsgi_app)`` is inside the span. The route is the matched rule
as written (``/users/<int:id>``, a blueprint's ``url_prefix`` included), set on the server span
when Flask matches the request (``RequestContext.match_request``); a request no rule matched
(a 404) keeps no route, so it is ``_OTHER`` in metrics and named by its method alone.

An exception raised in a view (or a ``before_request`` hook) is recorded on the span where Flask
starts handling it (``handle_user_exception``, ``handle_exception``), without changing what
Flask does with it: the application's error handlers run and the client gets the same response.
The status is the response's (500 for Flask's default handler). ``HTTPException`` (``abort()``)
is a response, not an error, and is not recorded.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

from tracer import safety
from tracer.context import current
from tracer.instrumentation.base import Instrumentation
from tracer.instrumentation.wsgi import call
from tracer.span import SERVER


class FlaskInstrumentation(Instrumentation):
    name = "flask"
    module = "flask"

    def _install(self, module: types.ModuleType) -> None:
        runtime = self.runtime
        assert runtime is not None
        from flask import ctx
        from werkzeug.exceptions import HTTPException

        def make_call(original: Callable[..., Any]) -> Any:
            def __call__(self: Any, environ: dict[str, Any], start_response: Any) -> Any:
                # Flask's own __call__ is ``self.wsgi_app(environ, start_response)``.
                return call(runtime, self.wsgi_app, environ, start_response)

            return __call__

        def make_match_request(original: Callable[..., Any]) -> Any:
            def match_request(self: Any) -> None:
                original(self)
                try:
                    rule = self.request.url_rule
                    if rule is not None:
                        span = current.get()
                        if span is not None and span.kind == SERVER:
                            span.route = rule.rule
                except Exception as exc:
                    safety.internal_error("flask.route", exc)

            return match_request

        def make_handler(original: Callable[..., Any]) -> Any:
            def handle(self: Any, e: Any) -> Any:
                if not isinstance(e, HTTPException):
                    try:
                        span = current.get()
                        if span is not None and span.kind == SERVER:
                            span.record_exception(e)
                    except Exception as exc:
                        safety.internal_error("flask.error", exc)
                return original(self, e)

            return handle

        self.replace(module.Flask, "__call__", make_call)
        self.replace(ctx.RequestContext, "match_request", make_match_request)
        self.replace(module.Flask, "handle_user_exception", make_handler)
        self.replace(module.Flask, "handle_exception", make_handler)
