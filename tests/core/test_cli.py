"""`python -m tracer run app.py` and `python -m tracer demo`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, subprocess_env


def test_run_script_traced_without_code_change(tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text(
        "import sys, threading, http.server, requests\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        self.send_response(204); self.end_headers()\n"
        "    def log_message(self, *a): pass\n"
        "srv = http.server.HTTPServer(('127.0.0.1', 0), H)\n"
        "threading.Thread(target=srv.handle_request).start()\n"
        "r = requests.get(f'http://127.0.0.1:{srv.server_port}/ping', timeout=10)\n"
        "print('status', r.status_code, 'argv', sys.argv[1:], 'name', __name__, file=sys.stderr)\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "tracer", "run", str(app), "--flag", "v"],
        capture_output=True,
        text=True,
        timeout=60,
        env=subprocess_env(TRACE_APP_NAME="runner", TRACE_REPORTER_TYPE="stdout"),
    )
    assert out.returncode == 0, out.stderr
    assert "status 204 argv ['--flag', 'v'] name __main__" in out.stderr
    spans = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    kinds = sorted(s["kind"] for s in spans)
    assert kinds == ["client", "server"]
    client = next(s for s in spans if s["kind"] == "client")
    server = next(s for s in spans if s["kind"] == "server")
    assert server["parent_id"] == client["span_id"] and server["service"] == "runner"


def test_demo_prints_a_multi_service_trace_with_the_failure() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tracer", "demo"],
        capture_output=True,
        text=True,
        timeout=120,
        env=subprocess_env(),
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    text = out.stdout
    traces = [b for b in re.split(r"\n(?=trace )", text) if b.startswith("trace ")]
    assert len(traces) >= 3
    for block in traces:
        for service in ("[demo-client]", "[frontend]", "[users]", "[inventory]"):
            assert service in block, block
    failing = [b for b in traces if "ERROR" in b]
    assert failing, text
    assert "network-error" in failing[0] and "RuntimeError" in failing[0]
    assert "502" in failing[0]
