"""A traced service in a process of its own: ``python -m tests.metrics.service_child KIND``.

KIND is ``aiohttp`` or ``http-server``; ``--workers N`` forks N workers of an http.server that
share one listening socket, with ``metrics_dir`` (the environment's TRACE_METRICS_DIR). The
service serves ``/metrics`` itself, prints ``port <n>`` (and ``metrics <n>`` for tracer's own
metrics port), and runs until its stdin closes.
"""

from __future__ import annotations

import argparse
import http.server
import os
import signal
import socket
import sys
import threading
import time

import reporters
import tracer
import tracer.metrics
from tests.metrics.helpers import Handler


class RoutedHandler(Handler):
    """The helpers' handler, naming its route as an application without a router may."""

    def do_GET(self) -> None:
        span = tracer.current_span()
        if span is not None:
            for prefix, route in (
                ("/sleep/", "/sleep/{ms}"),
                ("/status/", "/status/{code}"),
                ("/metrics", "/metrics"),
            ):
                if self.path.startswith(prefix):
                    span.route = route
        super().do_GET()


def wait_for_stdin_close() -> None:
    sys.stdin.read()


def http_server() -> None:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RoutedHandler)
    httpd.daemon_threads = True
    print(f"port {httpd.server_address[1]}", flush=True)
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    wait_for_stdin_close()


def aiohttp_server() -> None:
    from tests.metrics.helpers import AioService

    service = AioService()
    print(f"port {service.port}", flush=True)
    wait_for_stdin_close()
    service.close()


def serving(listener: socket.socket) -> http.server.ThreadingHTTPServer:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RoutedHandler, False)
    httpd.socket.close()
    httpd.socket = listener
    httpd.daemon_threads = True
    return httpd


def exit_with_parent(parent: int) -> None:
    """A worker whose parent was killed (a failed test's cleanup) must not serve on forever."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


def preforked(workers: int) -> None:
    """A parent that binds and serves until told ``fork``; then ``workers`` forked children
    serve the socket and the parent only answers scrapes (tracer's metrics port)."""
    listener = socket.create_server(("127.0.0.1", 0))
    print(f"port {listener.getsockname()[1]}", flush=True)
    print(f"metrics {tracer.metrics.metrics_port()}", flush=True)
    before = serving(listener)
    thread = threading.Thread(target=before.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    assert sys.stdin.readline().strip() == "fork"
    before.shutdown()
    thread.join()
    children = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            httpd = serving(listener)
            signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
            threading.Thread(target=exit_with_parent, args=(os.getppid(),), daemon=True).start()
            # One write: the workers share the pipe, and print() may write the text and its
            # newline separately, so that two workers' lines interleave.
            os.write(sys.stdout.fileno(), f"worker {os.getpid()}\n".encode())
            httpd.serve_forever(poll_interval=0.05)
            os._exit(0)
        children.append(pid)
    wait_for_stdin_close()
    for pid in children:
        os.kill(pid, signal.SIGTERM)
    for pid in children:
        os.waitpid(pid, 0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=("aiohttp", "http-server", "prefork"))
    parser.add_argument("--workers", type=int, default=3)
    args = parser.parse_args()
    tracer.install(
        app_name=f"metrics-{args.kind}",
        reporter=reporters.create("memory"),
        memory_watch=False,
        metrics_interval=None,
    )
    if args.kind == "http-server":
        http_server()
    elif args.kind == "aiohttp":
        aiohttp_server()
    else:
        preforked(args.workers)


if __name__ == "__main__":
    main()
