"""A traced http.server whose every request makes a label set of its own:
``python -m tests.metrics.cap_child --max-series N --overflow-series M``.

``/r/<route>/<status>`` answers ``status`` under the route ``/r/<route>``, for any method the
handler knows (the standard ones and ``BREW``). With ``metrics_dir`` (the environment's
TRACE_METRICS_DIR) the process writes its counts there; the series cap is the one given. It
prints ``port <n>`` and runs until its stdin closes, then uninstalls (a last write).
"""

from __future__ import annotations

import argparse
import http.server
import sys
import threading
from typing import Any

import reporters
import tracer
from tracer.metrics import recording


class RouteHandler(http.server.BaseHTTPRequestHandler):
    """``/r/<route>/<status>``: that status, the route named on the span; else 200."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def answer(self) -> None:
        parts = self.path.split("?")[0].split("/")
        code = 200
        if len(parts) == 4 and parts[1] == "r":
            span = tracer.current_span()
            if span is not None:
                span.route = f"/r/{parts[2]}"
            code = int(parts[3])
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_BREW = answer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-series", type=int, required=True)
    parser.add_argument("--overflow-series", type=int, required=True)
    args = parser.parse_args()
    recording.MAX_SERIES = args.max_series
    recording.OVERFLOW_SERIES = args.overflow_series
    tracer.install(
        app_name="metrics-cap",
        reporter=reporters.create("memory"),
        memory_watch=False,
        metrics_interval=None,
    )
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RouteHandler)
    httpd.daemon_threads = True
    print(f"port {httpd.server_address[1]}", flush=True)
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    sys.stdin.read()
    httpd.shutdown()
    tracer.uninstall()


if __name__ == "__main__":
    main()
