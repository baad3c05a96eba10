from __future__ import annotations

from django.urls import include, path

from . import views

urlpatterns = [
    path("users/<int:id>/", views.user),
    path("v2/", include([path("items/<slug:name>/", views.item)])),
]
