"""``tracer.client_call``: the client span and trace headers of a call made with urllib, which
tracer does not instrument (the demo's standard-library hops use it)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from tests.cli.conftest import spans_in, tracer_cmd
from tests.conftest import assert_child_prints_ok, refused_port

APP = textwrap.dedent(
    """
    import http.server, json, sys, threading, urllib.error, urllib.request
    import tracer

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            code = 404 if self.path == "/missing" else 200
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    sent = []
    with tracer.span("job"):
        with tracer.client_call("GET", base + "/ok") as call:
            sent.append(dict(call.headers))
            request = urllib.request.Request(base + "/ok", headers=call.headers)
            with urllib.request.urlopen(request, timeout=10) as response:
                call.response(response.status, response.headers)
        try:
            # Not caught inside the block: the HTTPError is the answer, 404.
            with tracer.client_call("GET", base + "/missing") as call:
                urllib.request.urlopen(
                    urllib.request.Request(base + "/missing", headers=call.headers), timeout=10
                )
        except urllib.error.HTTPError:
            pass
        refused = f"http://127.0.0.1:{sys.argv[1]}/down"
        try:
            with tracer.client_call("GET", refused) as call:
                urllib.request.urlopen(urllib.request.Request(refused, headers=call.headers))
        except OSError:
            pass
    tracer.flush()
    server.shutdown()
    print("SENT", json.dumps(sent), file=sys.stderr)
    """
)


def test_client_call_records_the_call_and_carries_the_trace(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(APP)
    with refused_port() as port:
        out = tracer_cmd("run", "app.py", str(port), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    spans = spans_in(out.stdout)
    job = next(s for s in spans if s["name"] == "job")
    clients = {s["http"]["path"]: s for s in spans if s["kind"] == "client"}
    servers = {s["http"]["path"]: s for s in spans if s["kind"] == "server"}
    assert set(clients) == {"/ok", "/missing", "/down"} and set(servers) == {"/ok", "/missing"}
    for path in ("/ok", "/missing"):
        client, server = clients[path], servers[path]
        assert client["parent_id"] == job["span_id"]
        assert server["parent_id"] == client["span_id"]
        assert server["trace_id"] == client["trace_id"] == job["trace_id"]
        assert client["error"] is None
    assert clients["/ok"]["http"]["status_code"] == 200
    assert clients["/missing"]["http"]["status_code"] == 404
    down = clients["/down"]
    assert down["http"]["status_code"] is None and down["error"]["type"] == "network-error"
    (sent,) = json.loads(out.stderr.split("SENT ", 1)[1])
    assert "traceparent" in sent and sent["request-id"] == job["request_id"]


def test_client_call_without_tracer_installed_does_nothing() -> None:
    assert_child_prints_ok(
        """
import tracer
with tracer.client_call("GET", "http://127.0.0.1:9/x") as call:
    assert call.headers == {}
    call.response(200, {"x-must-collect": "1"})
print("ok")
"""
    )
