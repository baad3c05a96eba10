"""Traces into Jaeger, Grafana Tempo or an OpenTelemetry Collector, over OTLP/HTTP.

    python examples/otlp_collector.py [ENDPOINT] [--json]

ENDPOINT is the receiver's OTLP/HTTP base URL (spans go to ENDPOINT/v1/traces); without it the
OpenTelemetry variables decide (``OTEL_EXPORTER_OTLP_ENDPOINT``, ...), else
``http://localhost:4318``. Jaeger (all-in-one, 1.35 or newer), Tempo and the Collector all listen
there with their OTLP receiver enabled, e.g.::

    docker run --rm -p 16686:16686 -p 4318:4318 jaegertracing/all-in-one

It starts a small traced http.server on 127.0.0.1, calls it a few times with requests (one call
fails with a 500), flushes and prints what was delivered. The same set-up in a trace.config.py::

    from tracer import reporters

    app_name = "checkout"
    reporter = reporters.otlp.create("http://collector:4318")
"""

from __future__ import annotations

import http.server
import sys
import threading
from typing import Any

import requests

import tracer
from tracer import reporters


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        tracer.report({"greeting": "hello", "path": self.path})
        status = 500 if self.path == "/fail" else 200
        body = b"failed\n" if status == 500 else b"hello\n"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def main(argv: list[str]) -> int:
    json_protocol = "--json" in argv
    args = [a for a in argv if a != "--json"]
    endpoint = args[0] if args else None
    reporter = reporters.otlp.create(endpoint, protocol="http/json" if json_protocol else None)
    tracer.install(app_name="otlp-example", reporter=reporter, sample_rate=1)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        for path in ("/hello", "/users/7", "/fail"):
            requests.get(base + path, timeout=10)
        delivered = tracer.flush(timeout=10)
    finally:
        server.shutdown()
        server.server_close()
    stats = tracer.stats()
    print(
        f"sent to {reporter.url} ({reporter.protocol}): delivered={stats['delivered']}"
        f" dropped={stats['dropped']} spooled={stats['spooled']}"
        f" rejected by the receiver={reporter.rejected_spans}"
    )
    tracer.uninstall()
    return 0 if delivered else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
