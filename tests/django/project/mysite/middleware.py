"""A middleware of the project's own, listed after Django's: tracer does not depend on where (or
whether) it sits in MIDDLEWARE."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse


class Stamp:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response["X-Stamp"] = "1"
        return response
