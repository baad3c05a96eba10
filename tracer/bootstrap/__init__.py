"""The folder ``tracer run`` puts first on ``PYTHONPATH``: its ``sitecustomize`` installs tracer
in every Python process started from ``tracer run`` (see :mod:`tracer.cli`)."""
