"""A plain http.server service, traced without changing its code:

    TRACE_APP_NAME=greeter python -m tracer run examples/http_service.py 8080

then `curl -H 'request-id: my-request-1' http://127.0.0.1:8080/hello`. Each request prints its span
as a JSON line (a tree on a terminal). Stop it with Ctrl-C.
"""

from __future__ import annotations

import http.server
import sys
from typing import Any


class Greeter(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = f"hello from {self.path}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
    with http.server.ThreadingHTTPServer(("127.0.0.1", port), Greeter) as server:
        print(f"listening on http://127.0.0.1:{server.server_port}", file=sys.stderr)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
