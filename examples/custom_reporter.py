"""A custom reporter: any object with send(data, callback) will do.

This one appends each span as a JSON line to a file and prints a one-line summary per batch. Run it:

    python examples/custom_reporter.py spans.jsonl

It starts a small traced http.server on 127.0.0.1, calls it a few times with requests, flushes,
and exits.
"""

from __future__ import annotations

import http.server
import json
import sys
import threading
from typing import Any

import requests

import tracer


class FileReporter:
    """Writes one JSON line per span to ``path``; calls back with the error if writing fails."""

    def __init__(self, path: str) -> None:
        self.path = path

    def send(self, data: dict[str, Any], callback: Any) -> None:
        try:
            with open(self.path, "a", encoding="utf-8") as out:
                for span in data["spans"]:
                    out.write(json.dumps(span) + "\n")
        except OSError as exc:
            callback(exc)  # tracer retries with backoff, then spools
            return
        print(f"{data['service']}: wrote {len(data['spans'])} spans to {self.path}")
        callback(None)


class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        tracer.report({"greeting": "hello"})
        body = b"hello\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def main() -> None:
    path = sys.argv[1] if len(sys.argv) > 1 else "spans.jsonl"
    tracer.install(app_name="custom-reporter-example", reporter=FileReporter(path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    server.daemon_threads = False  # so that server_close() waits for the last span to finish
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with requests.Session() as session:
        for _ in range(3):
            session.get(f"http://127.0.0.1:{server.server_port}/hello", timeout=5)
    server.shutdown()
    server.server_close()
    tracer.flush()


if __name__ == "__main__":
    main()
