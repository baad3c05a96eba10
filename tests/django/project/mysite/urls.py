from __future__ import annotations

from django.urls import include, path, re_path

from . import views

urlpatterns = [
    path("hello/", views.hello),
    path("api/", include(f"{__package__}.api_urls")),
    re_path(r"^articles/(?P<year>[0-9]{4})/$", views.article),
    path("boom/", views.boom),
    path("missing/", views.missing),
    path("sync-to-async/", views.async_view_with_sync_work),
    path("async-to-sync/", views.sync_view_with_async_work),
    path("call/", views.call),
]

handler500 = f"{__package__}.views.server_error"
