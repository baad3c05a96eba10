"""The profiler's own CPU, with the process idle and under load.

``python -m benchmarks.profiler_cpu [--seconds S] [--rate HZ] [--threads N]``

Each phase runs one profile of ``--seconds`` at ``--rate`` samples per second and prints what
the profile measured of itself: the sampler thread's CPU time (``time.thread_time()`` on that
thread) as a share of one core, the samples taken and the lowest rate the backoff went down to.

- **idle**: tracer installed, ``--threads`` threads blocked on an event, the main thread
  waiting: the sampler wakes, finds that no thread used CPU, and sleeps again.
- **load**: an http.server service in this process (a thread per connection, each request a
  traced span that spends about a millisecond of CPU) loaded by ``--threads`` keep-alive clients
  in this process too, so the process uses its whole share of the machine; the requests
  answered per second without a profile and with one are printed beside it.

The sampler's cost per wake-up includes what the system charges a thread for sleeping and
waking, which differs a lot between machines: on a virtual machine a 10 ms sleep alone can
cost tens of microseconds of CPU.
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import socket
import threading
import time
from typing import Any

import reporters
import tracer


def _burn(ms: float) -> int:
    end = time.thread_time() + ms / 1000
    n = 0
    while time.thread_time() < end:
        n += 1
    return n


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Without it, delayed ACKs hold each small response back.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        body = str(_burn(1.0)).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _load(port: int, stop: threading.Event, counts: list[int], index: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.connect()
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while not stop.is_set():
        conn.request("GET", "/")
        conn.getresponse().read()
        counts[index] += 1
    conn.close()


def _row(phase: str, summary: dict[str, Any], extra: str = "") -> str:
    return (
        f"{phase:6}{summary['sampler_cpu_share'] * 100:>10.2f}%{summary['samples']:>10,}"
        f"{summary['lowest_rate_hz']:>14.1f}{summary['duration_s']:>10.1f}  {extra}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profiler_cpu", description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args(argv)
    tracer.install(
        app_name="profiler-cpu",
        reporter=reporters.create("memory"),
        metrics=False,
        memory_watch=False,
        heap_snapshot_signal=None,
        profile_max_seconds=max(args.seconds, 1.0),
    )
    lines = [
        f"the sampler's own CPU: {args.rate:g} Hz asked, {args.seconds:g} s per phase,"
        f" {args.threads} threads",
        "",
        f"{'phase':6}{'sampler CPU':>11}{'samples':>10}{'lowest rate':>14}{'seconds':>10}",
    ]
    # Idle.
    release = threading.Event()
    idle = [threading.Thread(target=release.wait, daemon=True) for _ in range(args.threads)]
    for thread in idle:
        thread.start()
    handle = tracer.profile(args.seconds, rate=args.rate, write=False, report=False)
    handle.wait()
    release.set()
    lines.append(_row("idle", handle.summary))
    # Under load: throughput without, then with, a profile.
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    rates = []
    for profiled in (False, True):
        stop = threading.Event()
        counts = [0] * args.threads
        clients = [
            threading.Thread(target=_load, args=(port, stop, counts, i), daemon=True)
            for i in range(args.threads)
        ]
        for client in clients:
            client.start()
        start = time.monotonic()
        if profiled:
            handle = tracer.profile(args.seconds, rate=args.rate, write=False, report=False)
            handle.wait()
        else:
            time.sleep(args.seconds)
        stop.set()
        for client in clients:
            client.join()
        rates.append(sum(counts) / (time.monotonic() - start))
    server.shutdown()
    lines.append(
        _row(
            "load",
            handle.summary,
            f"{rates[0]:,.0f} req/s without a profile, {rates[1]:,.0f} with",
        )
    )
    lines += ["", "sampler CPU: the sampler thread's CPU time / the profile's wall time"]
    tracer.uninstall()
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
