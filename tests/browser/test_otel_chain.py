"""An OpenTelemetry-SDK service calls a tracer service: one trace, one waterfall.

Service A is a plain Python process instrumented with the OpenTelemetry SDK and its requests
instrumentation (W3C Trace Context), exporting with the SDK's ``OTLPSpanExporter`` to the viewer's
OTLP receiver; service B is an ``http.server`` application run by ``tracer run``, reporting to the
viewer with tracer's HTTP reporter. The trace page must show both services' spans, B's server
span nested under A's client span.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")
pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
pytest.importorskip("opentelemetry.instrumentation.requests")

from tests.browser.conftest import ROW, Viewer, open_page
from tests.support.children import Child, subprocess_env

SERVICE_B = """
import http.server


class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"hello")

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
print("LISTENING", server.server_port, flush=True)
try:
    server.serve_forever()
except KeyboardInterrupt:
    pass
"""

SERVICE_A = """
import sys

import requests
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

receiver, callee = sys.argv[1], sys.argv[2]
provider = TracerProvider(resource=Resource.create({"service.name": "otel-a"}))
provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=receiver + "/v1/traces")))
trace.set_tracer_provider(provider)
RequestsInstrumentor().instrument()
with trace.get_tracer("service-a").start_as_current_span("nightly job") as job:
    assert requests.get(callee + "/hello", timeout=30).text == "hello"
    print(format(job.get_span_context().trace_id, "032x"), flush=True)
provider.shutdown()
"""


def test_an_otel_client_span_and_tracers_server_span_join_in_one_waterfall(
    driver: Any, viewer: Viewer, tmp_path: Path
) -> None:
    app = tmp_path / "service_b.py"
    app.write_text(SERVICE_B)
    reporter = {"url": viewer.url + "api/v1/batches", "gzip": True}
    service_b = Child(
        "run",
        str(app),
        cwd=tmp_path,
        TRACE_APP_NAME="tracer-b",
        TRACE_REPORTER_TYPE="http",
        TRACE_REPORTER_CONFIG=json.dumps(reporter),
        TRACE_SAMPLE_RATE="1",
        TRACE_FLUSH_INTERVAL="0.05",
        TRACE_METRICS="0",
        TRACE_SPOOL="0",
    )
    try:
        port = int(service_b.wait_for("LISTENING").split()[1])
        done = subprocess.run(
            [sys.executable, "-c", SERVICE_A, viewer.receiver, f"http://127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            timeout=120,
            env=subprocess_env(),
        )
        assert done.returncode == 0, done.stderr
        trace_id = done.stdout.strip()
        spans = viewer.wait_trace(trace_id, 3)
    finally:
        service_b.stop()
    by_service = {(s["service"], s["kind"]): s for s in spans}
    assert set(by_service) == {("otel-a", "internal"), ("otel-a", "client"), ("tracer-b", "server")}
    client, server = by_service["otel-a", "client"], by_service["tracer-b", "server"]
    assert server["parent_id"] == client["span_id"]
    assert client["source"] == "otlp" and server["source"] == "tracer"

    open_page(driver, f"{viewer.url}trace/{trace_id}", ROW, 3)
    rows = driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0])).map(r => "
        "[r.getAttribute('data-span-id'), r.getAttribute('data-parent-id') || null, "
        "Number(r.getAttribute('data-depth')), r.getAttribute('data-service')]);",
        ROW,
    )
    assert [row[3] for row in rows] == ["otel-a", "otel-a", "tracer-b"]
    job, call, hello = rows
    assert call[0] == client["span_id"] and hello[0] == server["span_id"]
    assert hello[1] == call[0] and call[1] == job[0]
    assert (job[2], call[2], hello[2]) == (0, 1, 2)
