"""A stand-in for Logstash's beats input: a Lumberjack v2 server on 127.0.0.1.

Written from the published protocol description. Every frame starts with the version byte ``2``
and a type byte, followed by big-endian uint32 fields:

* ``2W count``: a window of ``count`` events follows (client to server);
* ``2J seq length payload``: one JSON event;
* ``2C length zlib-data``: the zlib-compressed bytes of whole frames;
* ``2A seq``: the server acknowledges every event of the window up to ``seq`` (server to client).

The server reads a window's events, records them, and then answers as ``mode`` says:

* ``"ack"``: acknowledges the last sequence number at once;
* ``"partial"``: a keep-alive (sequence 0) and half the window first, then, ``partial_delay``
  seconds later, the last sequence number;
* ``"partial-only"``: the keep-alive and the half, never the rest;
* ``"silent"``: reads the window and never answers;
* ``"close"``: closes the connection after the window frame and one frame header, mid-window;
* ``"overshoot"``: acknowledges a sequence number beyond the window's last, which is an error.

With ``ack_limit`` set, the server answers that many windows and then falls silent.
"""

from __future__ import annotations

import io
import queue
import socket
import ssl
import struct
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.support.servers import TcpListener, strict_loads

# How long a connection may sit without a whole frame before the server gives up on it.
_IDLE_LIMIT = 30.0
_POLL = 0.05


class ProtocolError(Exception):
    """The client sent something that is not Lumberjack v2."""


@dataclass
class Window:
    """One window as it arrived."""

    count: int
    compressed: bool = False
    sequences: list[int] = field(default_factory=list)


class _SocketReader:
    """Exact-size reads from a socket, giving up when the server stops or the peer goes quiet."""

    def __init__(self, sock: socket.socket, stop: threading.Event) -> None:
        self.sock = sock
        self.stop = stop
        self.buffer = b""

    def __call__(self, n: int) -> bytes:
        deadline = time.monotonic() + _IDLE_LIMIT
        for _ in range(int(_IDLE_LIMIT / _POLL) * 4 + n):
            if len(self.buffer) >= n:
                break
            if self.stop.is_set() or time.monotonic() > deadline:
                raise EOFError("server stopping or client idle")
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                raise EOFError("client closed the connection")
            self.buffer += chunk
        if len(self.buffer) < n:
            raise EOFError("client sent too little")
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data


class _BytesReader:
    """Exact-size reads from the decompressed content of one compressed frame."""

    def __init__(self, data: bytes) -> None:
        self.stream = io.BytesIO(data)
        self.size = len(data)

    def __call__(self, n: int) -> bytes:
        chunk = self.stream.read(n)
        if len(chunk) != n:
            raise ProtocolError("a compressed frame ends inside a frame")
        return chunk

    @property
    def remaining(self) -> int:
        return self.size - self.stream.tell()


class LumberjackServer(TcpListener):
    """A Lumberjack v2 server: collects events in ``events``, windows in ``windows``."""

    def __init__(
        self,
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        mode: str = "ack",
        partial_delay: float = 0.3,
        ack_limit: int | None = None,
    ) -> None:
        self.ssl_context = ssl_context
        self.mode = mode
        self.partial_delay = partial_delay
        self.ack_limit = ack_limit
        self.windows_answered = 0
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.windows: list[Window] = []
        self.acks_sent: list[int] = []
        self.errors: queue.Queue[BaseException] = queue.Queue()
        super().__init__(port)

    def serve(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        stream = conn
        try:
            if self.ssl_context is not None:
                stream = self.ssl_context.wrap_socket(conn, server_side=True)
                self._conns.append(stream)
            stream.settimeout(_POLL)
            read = _SocketReader(stream, self._stop)
            # One window per round; a connection carries at most this many.
            for _ in range(10_000):
                if not self._serve_window(stream, read):
                    return
        except EOFError:
            return
        except (ProtocolError, ssl.SSLError, ConnectionError) as exc:
            self.errors.put(exc)
        except OSError:
            return
        finally:
            conn.close()

    def _serve_window(self, stream: socket.socket, read: Callable[[int], bytes]) -> bool:
        head = read(2)
        if head != b"2W":
            raise ProtocolError(f"expected a window frame, got {head!r}")
        (count,) = struct.unpack(">I", read(4))
        window = Window(count)
        if self.mode == "close":
            read(2)
            return False
        events: list[dict[str, Any]] = []
        # Each round reads at least one event or raises.
        for _ in range(count):
            if len(window.sequences) >= count:
                break
            self._read_frame(read, window, events)
        if len(window.sequences) != count:
            raise ProtocolError(f"window of {count} carried {len(window.sequences)} events")
        self.windows.append(window)
        for event in events:
            self.events.put(event)
        self._answer(stream, count)
        return True

    def _read_frame(
        self, read: Callable[[int], bytes], window: Window, events: list[dict[str, Any]]
    ) -> None:
        head = read(2)
        if head == b"2J":
            sequence, length = struct.unpack(">II", read(8))
            window.sequences.append(sequence)
            events.append(strict_loads(read(length)))
        elif head == b"2C":
            (length,) = struct.unpack(">I", read(4))
            inner = zlib.decompress(read(length))
            window.compressed = True
            inner_read = _BytesReader(inner)
            # Every frame takes at least 10 bytes, which bounds the frames in `inner`.
            for _ in range(len(inner) // 10 + 1):
                if inner_read.remaining == 0:
                    break
                self._read_frame(inner_read, window, events)
        else:
            raise ProtocolError(f"unknown frame {head!r}")

    def _answer(self, stream: socket.socket, count: int) -> None:
        if self.mode == "silent":
            return
        if self.ack_limit is not None and self.windows_answered >= self.ack_limit:
            return
        self.windows_answered += 1
        if self.mode == "overshoot":
            self._ack(stream, count + 8)
            return
        if self.mode in ("partial", "partial-only"):
            self._ack(stream, 0)
            if count // 2:
                self._ack(stream, count // 2)
            if self.mode == "partial-only":
                return
            time.sleep(self.partial_delay)
        self._ack(stream, count)

    def _ack(self, stream: socket.socket, sequence: int) -> None:
        self.acks_sent.append(sequence)
        stream.sendall(b"2A" + struct.pack(">I", sequence))

    def send_keepalives(self) -> None:
        """Send a keep-alive (an ack for sequence 0) on every open connection, as a busy
        Logstash does."""
        self.send_ack(0)

    def send_ack(self, sequence: int) -> None:
        """Send an ack for ``sequence`` on every open connection, out of turn."""
        for conn in list(self._conns):
            # With TLS the list holds both the plain socket and its TLS wrapper; use the latter.
            if isinstance(conn, ssl.SSLSocket) or self.ssl_context is None:
                try:
                    conn.sendall(b"2A" + struct.pack(">I", sequence))
                except OSError:
                    pass

    def get_events(self, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        return [self.events.get(timeout=timeout) for _ in range(n)]
