"""The WSGI entry point (gunicorn, runserver). With ``MYSITE_INSTALL=1`` tracer is installed here,
before Django is imported, as a project that does not use ``tracer run`` would."""

from __future__ import annotations

import os

if os.environ.get("MYSITE_INSTALL") == "1":
    import tracer

    tracer.install()

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
application = get_wsgi_application()
