"""The ASGI entry point (uvicorn). With ``MYSITE_INSTALL=1`` tracer is installed here, after
Django was imported; with ``MYSITE_WRAP=1`` the application is also wrapped by ``tracer.asgi()``,
which must not make a second server span."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
application: object = get_asgi_application()

if os.environ.get("MYSITE_INSTALL") == "1":
    import tracer

    tracer.install()
    if os.environ.get("MYSITE_WRAP") == "1":
        application = tracer.asgi(application)
