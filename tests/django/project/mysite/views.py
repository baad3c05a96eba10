"""Views that answer with what tracer saw: the current span's ids, from the view's own context
and from work handed to another thread or event loop."""

from __future__ import annotations

from typing import Any

import requests
from asgiref.sync import async_to_sync, sync_to_async
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse

import tracer


def _ids() -> dict[str, Any]:
    span = tracer.current_span()
    if span is None:
        return {"trace_id": None, "span_id": None}
    return {"trace_id": span.trace_id, "span_id": span.span_id}


def hello(request: HttpRequest) -> HttpResponse:
    return HttpResponse(b"hello")


def user(request: HttpRequest, id: int) -> JsonResponse:
    return JsonResponse({"id": id, **_ids()})


def item(request: HttpRequest, name: str) -> JsonResponse:
    return JsonResponse({"name": name})


def article(request: HttpRequest, year: str) -> JsonResponse:
    return JsonResponse({"year": year})


def boom(request: HttpRequest) -> HttpResponse:
    raise ValueError("view failed")


def missing(request: HttpRequest) -> HttpResponse:
    raise Http404("no such thing")


def server_error(request: HttpRequest) -> HttpResponse:
    # The project's own handler500: the client must still get exactly this.
    return HttpResponse(b"custom 500 page", status=500, content_type="text/plain")


def _work_in_a_span(where: str) -> dict[str, Any]:
    with tracer.span(f"work {where}"):
        return _ids()


async def _async_work() -> dict[str, Any]:
    return _work_in_a_span("async")


async def async_view_with_sync_work(request: HttpRequest) -> JsonResponse:
    inner = await sync_to_async(_work_in_a_span)("sync")
    return JsonResponse({"view": _ids(), "inner": inner})


def sync_view_with_async_work(request: HttpRequest) -> JsonResponse:
    inner = async_to_sync(_async_work)()
    return JsonResponse({"view": _ids(), "inner": inner})


def call(request: HttpRequest) -> HttpResponse:
    """Calls the URL in ``?url=`` with requests (traced) and answers with what came back."""
    answer = requests.get(request.GET["url"], timeout=30)
    return HttpResponse(answer.content, status=answer.status_code, content_type="text/plain")
