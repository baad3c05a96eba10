"""Settings of the test project; importable as ``mysite.settings`` (the servers' children, from
the project folder) and as ``tests.django.project.mysite.settings`` (in-process tests)."""

from __future__ import annotations

import os

PACKAGE = __package__ or "mysite"

SECRET_KEY = "tests-only"
DEBUG = os.environ.get("MYSITE_DEBUG") == "1"
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS: list[str] = []
DATABASES: dict[str, dict[str, str]] = {}
MIDDLEWARE = [
    "django.middleware.common.CommonMiddleware",
    f"{PACKAGE}.middleware.Stamp",
]
ROOT_URLCONF = f"{PACKAGE}.urls"
WSGI_APPLICATION = f"{PACKAGE}.wsgi.application"
USE_TZ = True
LOGGING_CONFIG = None
