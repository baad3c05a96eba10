"""The application gunicorn serves in tests/wsgi: the Flask application, and ``/metrics``
(tracer's exposition, the total of every worker with ``metrics_dir``) beside it.

With ``INSTALL_IN_APP=1`` in the environment the module installs tracer itself, the one line an
application adds.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

import tracer

if os.environ.get("INSTALL_IN_APP") == "1":
    tracer.install()

import tracer.metrics
from tests.wsgi.apps import flask_app


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ.get("PATH_INFO") == "/metrics":
        return tracer.metrics.wsgi_app()(environ, start_response)
    return flask_app(environ, start_response)
