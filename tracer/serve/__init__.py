"""``tracer serve``: a local trace viewer, service map and dashboards, in one command.

A receiver (OTLP/HTTP traces and metrics, Zipkin v2, tracer's own batches) stores everything in
one SQLite file, and a web UI on 127.0.0.1 shows it. :class:`Viewer` is the same thing inside a
process (the demo and the tests start one); docs/serve.md describes the command and the JSON API.
"""

from __future__ import annotations

from tracer.serve.server import Viewer

__all__ = ["Viewer"]
