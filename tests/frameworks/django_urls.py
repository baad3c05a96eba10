"""The URLconf of the cross-service tests' Django service: its route under an ``include()``."""

from django.urls import include, path

from tests.frameworks.services import django_hop

urlpatterns = [path("django/", include([path("<int:n>/", django_hop)]))]
