"""A Logstash that accepts but stops reading, then restarts: no span counted delivered is lost.

The reported bug: a Logstash that accepted connections but stopped reading for 15 s and was then
restarted (its connections reset) left tracer reporting delivered=25000 while the listener had
received 13,015. Under the old TCP rule a batch counted as delivered once this host's kernel had
taken its bytes; on loopback that is megabytes of send buffer, all lost at the reset.

Here, through tracer's real pipeline and real sockets on 127.0.0.1: a stand-in Logstash with a
small receive buffer reads for a second, stops reading for the stall, then resets every
connection it holds, and a reading listener takes over the same port. The port stays bound
throughout: a paused LineServer's holder socket keeps it, and the stand-in shares it through
SO_REUSEADDR.
"""

from __future__ import annotations

import json
import queue
import socket
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import reporters
import tracer

from .helpers import LineServer

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the acknowledgement wait needs Linux's SIOCOUTQ"
)

RCVBUF = 4096
HEALTHY_SECONDS = 1.0
STALL_SECONDS = 5.0
SPANS_PER_SECOND = 3000
MAX_SPANS = 25_000
# A few hundred bytes per span, so a batch is far larger than the stand-in's receive buffer.
PAD = "p" * 300
SAMPLE_EVERY = 0.05


class StallingLogstash:
    """Accepts connections and reads lines until :meth:`stop_reading`; from then on it reads
    nothing, on the connections it has or on new ones. :meth:`reset` aborts every connection
    (SO_LINGER 0, then close), as a restarting Logstash does, and stops listening."""

    def __init__(self, port: int, rcvbuf: int = RCVBUF) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Set before listen(): accepted connections inherit it.
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(64)
        self.listener.settimeout(0.01)
        self.read_ids: list[str] = []
        self.accepted = 0
        self._held: list[socket.socket] = []
        # The most complete lines each held connection was ever seen holding unread.
        self._unread_max: list[int] = []
        self._readers = 0
        self._lock = threading.Lock()
        self._stop_reading = threading.Event()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        for _ in range(int(120 / 0.01)):
            if self._closing.is_set():
                return
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.accepted += 1
                self._held.append(conn)
                self._unread_max.append(0)
                if self._stop_reading.is_set():
                    continue
                self._readers += 1
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        # Reading stops only at a quiet moment with no partial line read: then whatever arrives
        # afterwards is a batch, or the rest of one, that this side never read.
        conn.settimeout(0.02)
        buffer = b""
        deadline = time.monotonic() + 120
        try:
            while time.monotonic() < deadline:
                try:
                    chunk = conn.recv(65536)
                except TimeoutError:
                    if self._stop_reading.is_set() and not buffer:
                        return
                    continue
                if not chunk:
                    return
                buffer += chunk
                *complete, buffer = buffer.split(b"\n")
                ids = [json.loads(line)["span_id"] for line in complete]
                with self._lock:
                    self.read_ids += ids
        except OSError:
            return
        finally:
            with self._lock:
                self._readers -= 1

    def stop_reading(self, timeout: float = 10.0) -> bool:
        """Stop reading; True once no connection is being read any more."""
        self._stop_reading.set()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self._readers == 0:
                    return True
            time.sleep(0.005)
        return False

    def could_have_received(self) -> int:
        """Distinct spans read, plus the complete lines sitting unread in held connections'
        receive buffers (the most ever seen per connection): all a peer that stopped reading
        could ever have received."""
        with self._lock:
            held = list(enumerate(self._held))
            read = len(set(self.read_ids))
        for i, conn in held:
            try:
                data = conn.recv(1 << 22, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except OSError:
                data = b""
            with self._lock:
                self._unread_max[i] = max(self._unread_max[i], data.count(b"\n"))
        with self._lock:
            return read + sum(self._unread_max)

    def reset(self) -> None:
        self._closing.set()
        self._thread.join(5)
        self.listener.close()
        with self._lock:
            held, self._held = self._held, []
        for conn in held:
            try:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
            conn.close()


def make_spans(made: list[str], until: float, started: float, sample: Any = None) -> None:
    """Spans at a steady SPANS_PER_SECOND (counted from ``started``) until ``until``, never more
    than MAX_SPANS in all; ``sample()`` every SAMPLE_EVERY seconds."""
    next_sample = time.monotonic()
    while (now := time.monotonic()) < until:
        if sample is not None and now >= next_sample:
            sample()
            next_sample = now + SAMPLE_EVERY
        if len(made) >= min(MAX_SPANS, (now - started) * SPANS_PER_SECOND):
            time.sleep(0.001)
            continue
        with tracer.span("stalled-op", pad=PAD, n=len(made)) as s:
            assert s is not None
            made.append(s.span_id)


def test_a_logstash_that_stops_reading_then_restarts_loses_no_span_counted_delivered(
    tmp_path: Path, record_property: Any
) -> None:
    server = LineServer()
    port = server.port
    server.pause()  # the port stays bound, not listening, for the stand-in and then the server
    stand_in = StallingLogstash(port)
    tracer.install(
        app_name="stall",
        reporter=reporters.logstash.create(type="tcp", host="127.0.0.1", port=port, timeout=2.0),
        batch_size=500,
        flush_interval=0.05,
        spool_path=str(tmp_path / "stall.sqlite"),
    )
    made: list[str] = []
    # (delivered, could have received, seconds into the stall) whenever the first exceeded the
    # second: spans counted delivered that the stand-in can never have received.
    overcounts: list[tuple[int, int, float]] = []
    delivered_max = 0
    stall_started = 0.0

    def sample() -> None:
        nonlocal delivered_max
        # delivered first: the bound only grows while nothing is read.
        delivered = tracer.stats()["delivered"]
        bound = stand_in.could_have_received()
        delivered_max = max(delivered_max, delivered)
        if delivered > bound:
            overcounts.append((delivered, bound, round(time.monotonic() - stall_started, 2)))

    received: list[str] = []
    try:
        started = time.monotonic()
        make_spans(made, started + HEALTHY_SECONDS, started)
        assert stand_in.stop_reading(), "the stand-in found no quiet moment to stop reading"
        stall_started = time.monotonic()
        read_before_stall = len(set(stand_in.read_ids))
        delivered_before_stall = tracer.stats()["delivered"]
        make_spans(made, stall_started + STALL_SECONDS, started, sample)
        sample()
        delivered_at_reset = tracer.stats()["delivered"]
        bound_at_reset = stand_in.could_have_received()
        connections = stand_in.accepted
        stand_in.reset()
        server.resume()
        flushed = tracer.flush(60)
        stats = tracer.stats()
        # Every span should arrive now; 30 s at most, which only a real loss waits out, then a
        # short look for duplicates behind them.
        wanted = set(made) - set(stand_in.read_ids)
        deadline = time.monotonic() + 30
        while wanted - set(received) and time.monotonic() < deadline:
            try:
                received.append(json.loads(server.lines.get(timeout=0.1))["span_id"])
            except queue.Empty:
                pass
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            try:
                received.append(json.loads(server.lines.get(timeout=0.1))["span_id"])
            except queue.Empty:
                pass
    finally:
        stand_in.reset()
        server.close()

    lines = stand_in.read_ids + received
    got = set(lines)
    lost = set(made) - got
    duplicates = len(lines) - len(got)
    figures = {
        "spans_made": len(made),
        "read_before_stall": read_before_stall,
        "delivered_before_stall": delivered_before_stall,
        "delivered_max_during_stall": delivered_max,
        "delivered_at_reset": delivered_at_reset,
        "could_have_received_at_reset": bound_at_reset,
        "stall_connections": connections,
        "lines_received": len(lines),
        "distinct_received": len(got),
        "duplicates": duplicates,
        "lost": len(lost),
        "stats": {k: stats[k] for k in ("created", "delivered", "dropped", "spooled", "pending")},
    }
    for name, value in figures.items():
        record_property(name, value)
    print(f"stall then restart: {figures}")

    assert not overcounts, (
        f"during the stall tracer counted spans delivered that the stand-in could not have "
        f"received (delivered, could have received, s into the stall): {overcounts[:5]}; "
        f"{figures}"
    )
    assert not lost, f"{len(lost)} spans never reached a listener: {figures}"
    assert got == set(made), figures
    assert flushed, figures
    assert stats["created"] == len(made), figures
    assert stats["delivered"] == stats["created"], figures
    assert stats["spooled"] == 0 and stats["pending"] == 0, figures
    assert stats["dropped"] == 0, figures
    assert stats["created"] == (
        stats["delivered"] + stats["dropped"] + stats["spooled"] + stats["pending"]
    ), figures
