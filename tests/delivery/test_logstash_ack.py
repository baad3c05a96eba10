"""TCP delivery means the peer's TCP stack acknowledged the batch, not that our kernel took it.

Each test faces the reporter with a Logstash that accepted the connection and stopped reading.
The listeners get a small SO_RCVBUF before listen(), which accepted connections inherit, so
almost all of a big batch stays in the reporter's send queue, unacknowledged.
"""

from __future__ import annotations

import fcntl
import queue
import re
import socket
import ssl
import struct
import sys
import termios
import threading
import time
from typing import Any

import pytest

from reporters import logstash
from reporters.base import DeliveryError

from .helpers import Certs, LineServer, Outcomes

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the acknowledgement wait needs Linux's SIOCOUTQ"
)

START_US = 1_714_564_800_123_456
SPANS = 2000


def big_batch(n: int = SPANS) -> dict[str, Any]:
    """``n`` spans of a few hundred bytes each: far more than the peer's receive buffer."""
    spans = [
        {
            "trace_id": f"{i:032x}",
            "span_id": f"{i:016x}",
            "parent_id": None,
            "kind": "client",
            "name": f"GET /items/{i}",
            "start_us": START_US + i,
            "duration_us": 1500,
            "tags": {"http.url": f"http://inventory.internal/items/{i}", "pad": "x" * 160},
        }
        for i in range(n)
    ]
    return {
        "service": "checkout",
        "host": "web-1",
        "pid": 4242,
        "sent_at_us": START_US,
        "spans": spans,
    }


def payload_size(data: dict[str, Any]) -> int:
    return sum(len(logstash.encode_json(r)) + 1 for r in logstash.iter_records(data))


def unacked_in(error: DeliveryError) -> int:
    found = re.search(r"(\d+) bytes (?:still )?unacknowledged", str(error))
    assert found, f"no byte count in {error}"
    return int(found.group(1))


class StalledListener:
    """A Logstash that accepts connections, reads at most ``read_first`` bytes of each, and then
    stops reading. ``reset()`` aborts the accepted connections, as a restarting Logstash does."""

    def __init__(
        self,
        port: int = 0,
        rcvbuf: int = 4096,
        read_first: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # SO_REUSEADDR lets it share the port with a paused LineServer's holder socket, which
        # keeps the port reserved for the LineServer that takes over later.
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen()
        self.listener.settimeout(0.05)
        self.port: int = self.listener.getsockname()[1]
        self.read_first = read_first
        self.ssl_context = ssl_context
        self.read = 0
        self.stopped_reading = threading.Event()
        self.raw: queue.Queue[socket.socket] = queue.Queue()
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        for _ in range(int(60 / 0.05)):
            if self._stop.is_set():
                return
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._held.append(conn)
            self.raw.put(conn)
            stream = conn
            try:
                conn.settimeout(5)
                if self.ssl_context is not None:
                    stream = self.ssl_context.wrap_socket(conn, server_side=True)
                    self._held.append(stream)
                for _ in range(self.read_first):
                    if self.read >= self.read_first:
                        break
                    chunk = stream.recv(min(4096, self.read_first - self.read))
                    if not chunk:
                        break
                    self.read += len(chunk)
            except OSError:
                pass
            self.stopped_reading.set()

    def unread(self, conn: socket.socket) -> int:
        """Bytes sitting in this side's receive buffer of ``conn``, never read."""
        answer = fcntl.ioctl(conn.fileno(), termios.FIONREAD, bytes(4))
        return int(struct.unpack("i", answer)[0])

    def reset(self) -> None:
        for conn in self._held:
            try:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
            conn.close()
        self._held = []

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.reset()
        self.listener.close()


def test_a_peer_that_stops_reading_gets_no_delivery_and_a_reading_one_gets_the_batch() -> None:
    server = LineServer()
    server.pause()  # its port stays bound, not listening, for the stalled Logstash to use
    stalled = StalledListener(port=server.port)
    reporter = logstash.create(host="127.0.0.1", port=server.port, timeout=2)
    data = big_batch()
    try:
        started = time.monotonic()
        error = send(reporter, data).error()
        elapsed = time.monotonic() - started

        assert error.retryable is True
        assert isinstance(error.__cause__, TimeoutError)
        unacked = unacked_in(error)
        conn = stalled.raw.get(timeout=1)
        print(
            f"stalled: batch {payload_size(data)} bytes, {unacked} unacknowledged after "
            f"{elapsed:.2f} s; the peer held {stalled.unread(conn)} unread"
        )
        assert 0 < unacked <= payload_size(data)
        assert 2.0 <= elapsed < 5.0

        # Logstash restarts on the same port, and reads this time: the batch sent again arrives
        # whole on a new connection.
        stalled.close()
        server.resume()
        assert send(reporter, data).only is None
        records = server.get_records(SPANS)
        assert [r["span_id"] for r in records] == [f"{i:016x}" for i in range(SPANS)]
        assert server.accepted == 1
    finally:
        reporter.close()
        stalled.close()
        server.close()


def test_a_reset_while_waiting_for_the_acknowledgement_is_an_error_not_a_delivery() -> None:
    stalled = StalledListener(read_first=64 * 1024)
    reporter = logstash.create(host="127.0.0.1", port=stalled.port, timeout=10)
    data = big_batch()
    outcomes = Outcomes()
    sender = threading.Thread(target=reporter.send, args=(data, outcomes))
    try:
        sender.start()
        conn = stalled.raw.get(timeout=5)
        assert stalled.stopped_reading.wait(5)
        # Let the send settle into its wait: the write has long returned, nothing is acked.
        time.sleep(0.3)
        assert outcomes.calls == []
        held_unread = stalled.unread(conn)

        started = time.monotonic()
        stalled.reset()
        sender.join(5)
        assert not sender.is_alive()
        elapsed = time.monotonic() - started

        error = outcomes.error()
        print(
            f"reset: batch {payload_size(data)} bytes, peer read {stalled.read} and held "
            f"{held_unread} unread; {error}; answered {elapsed:.3f} s after the reset"
        )
        assert error.retryable is True
        assert isinstance(error.__cause__, ConnectionResetError)
        assert unacked_in(error) > 0
        # Well before the 10 s timeout: the reset itself ends the wait.
        assert elapsed < 2.0
    finally:
        sender.join(5)
        reporter.close()
        stalled.close()


def test_over_tls_the_wait_uses_the_tcp_socket_under_it(certs: Certs) -> None:
    stalled = StalledListener(ssl_context=certs.server_context())
    reporter = logstash.create(
        host="127.0.0.1", port=stalled.port, ca_file=str(certs.ca), timeout=2
    )
    try:
        error = send(reporter, big_batch()).error()
        print(f"tls stalled: {error}")
        assert error.retryable is True
        assert isinstance(error.__cause__, TimeoutError)
        assert unacked_in(error) > 0
    finally:
        reporter.close()
        stalled.close()


def test_what_fits_in_the_peers_receive_buffer_counts_as_delivered() -> None:
    # The limit the module documents: the peer's TCP stack acknowledges what sits in its
    # receive buffer, read or not, so a small batch to a stalled Logstash counts as delivered.
    stalled = StalledListener()
    reporter = logstash.create(host="127.0.0.1", port=stalled.port, timeout=2)
    data = big_batch(1)
    try:
        assert send(reporter, data).only is None
        conn = stalled.raw.get(timeout=1)
        assert stalled.unread(conn) == payload_size(data)
    finally:
        reporter.close()
        stalled.close()


def test_without_siocoutq_the_kernel_accepted_rule_applies() -> None:
    # As on a system without the ioctl: the write alone counts, and a stalled peer cannot tell.
    stalled = StalledListener()
    reporter = logstash.create(host="127.0.0.1", port=stalled.port, timeout=2)
    reporter._can_ask_unacked = False
    try:
        assert send(reporter, big_batch()).only is None
    finally:
        reporter.close()
        stalled.close()


def test_a_reading_peer_is_answered_at_once(line_server: LineServer) -> None:
    reporter = logstash.create(host="127.0.0.1", port=line_server.port, timeout=5)
    try:
        started = time.monotonic()
        for i in range(20):
            assert send(reporter, big_batch(50)).only is None, i
        # Far below one timeout per batch: each wait ends as soon as the peer has acked.
        assert time.monotonic() - started < 5
        assert len(line_server.get_lines(20 * 50)) == 1000
        assert line_server.accepted == 1
    finally:
        reporter.close()


def send(reporter: logstash.LogstashReporter, data: dict[str, Any]) -> Outcomes:
    outcomes = Outcomes()
    reporter.send(data, outcomes)
    return outcomes
