"""A gunicorn configuration file that installs tracer: in each worker once it is forked
(``post_fork``), or with ``INSTALL_AT=top`` in the environment at its top level, in the master
before any worker is forked."""

from __future__ import annotations

import os
from typing import Any

import tracer

if os.environ.get("INSTALL_AT") == "top":
    tracer.install()


def post_fork(server: Any, worker: Any) -> None:
    if os.environ.get("INSTALL_AT") != "top":
        tracer.install()
