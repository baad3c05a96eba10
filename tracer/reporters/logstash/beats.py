"""Logstash's beats input (Lumberjack v2, optionally over TLS), what Filebeat speaks: windows
of events, each delivered once the server acknowledged its last sequence number (see
:mod:`tracer.reporters.logstash`)."""

from __future__ import annotations

import socket
import ssl
import struct
import time
import zlib

from tracer.reporters.base import DeliveryError
from tracer.reporters.logstash.common import DEFAULT_COMPRESSION_LEVEL, DEFAULT_WINDOW_SIZE
from tracer.reporters.logstash.stream import StreamReporter

# Lumberjack v2 frames: a version byte, a type byte, then big-endian uint32 fields.
_LJ_WINDOW = b"2W"
_LJ_JSON = b"2J"
_LJ_COMPRESSED = b"2C"
_LJ_ACK = b"2A"
_LJ_ACK_SIZE = 6
_LJ_MAX_SEQUENCE = 0xFFFF_FFFF


class LumberjackProtocolError(Exception):
    """The beats server sent something that is not a valid acknowledgement for this window."""


class LogstashBeatsReporter(StreamReporter):
    """Lumberjack v2 over TCP (or TLS); build one with ``logstash.create(type="beats", ...)``.

    ``window_size`` is the most events per window; ``compression_level`` the zlib level of its
    compressed frame (0 sends plain JSON frames).
    """

    type = "beats"

    def __init__(
        self,
        *,
        host: str,
        port: int,
        timeout: float,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        window_size: int = DEFAULT_WINDOW_SIZE,
        compression_level: int = DEFAULT_COMPRESSION_LEVEL,
    ) -> None:
        super().__init__(
            host=host,
            port=port,
            timeout=timeout,
            ssl_context=ssl_context,
            server_hostname=server_hostname,
        )
        #: Most events per Lumberjack window.
        self.window_size = window_size
        #: zlib level of the compressed frame; 0 sends plain JSON frames.
        self.compression_level = compression_level
        # Bytes from the beats server that do not make a whole acknowledgement frame yet.
        self._ack_buffer = b""

    def _deliver(self, events: list[bytes]) -> DeliveryError | None:
        return self._send_beats(events)

    def _drop_connection(self) -> None:
        self._ack_buffer = b""
        super()._drop_connection()

    def _send_beats(self, events: list[bytes]) -> DeliveryError | None:
        reused = self._sock is not None and self._keep_beats_connection(self._sock)
        if not reused:
            self._drop_connection()
        done = 0
        error: DeliveryError | None = None
        for attempt in (1, 2):
            try:
                if self._sock is None:
                    self._sock = self._connect()
                sock = self._sock
                for start in range(done, len(events), self.window_size):
                    window = events[start : start + self.window_size]
                    self._send_window(sock, window)
                    done = start + len(window)
                return None
            except (OSError, LumberjackProtocolError) as exc:
                self._abort_connection()
                error = self._error("send to", exc)
                lost = isinstance(exc, (ConnectionError, ssl.SSLEOFError, ssl.SSLZeroReturnError))
                if attempt == 2 or not reused or not lost:
                    break
            # The server may close an idle connection between the check and the write; the
            # windows it has not acknowledged get one fresh connection before giving up.
            reused = False
        return error

    def _keep_beats_connection(self, sock: socket.socket) -> bool:
        """False when the server closed the idle connection; drops what it sent meanwhile."""
        stale = self._idle_read(sock)
        if stale is None:
            return False
        # Whole frames that arrived between batches (keep-alives) answer no window of this one.
        pending = self._ack_buffer + stale
        self._ack_buffer = pending[len(pending) - len(pending) % _LJ_ACK_SIZE :]
        return True

    def _send_window(self, sock: socket.socket, events: list[bytes]) -> None:
        """Write one window and wait until the server acknowledged its last sequence number."""
        parts: list[bytes] = []
        for sequence, event in enumerate(events, 1):
            parts.append(struct.pack(">2sII", _LJ_JSON, sequence, len(event)))
            parts.append(event)
        frames = b"".join(parts)
        if self.compression_level > 0:
            packed = zlib.compress(frames, self.compression_level)
            frames = struct.pack(">2sI", _LJ_COMPRESSED, len(packed)) + packed
        sock.sendall(struct.pack(">2sI", _LJ_WINDOW, len(events)) + frames)
        self._await_beats_ack(sock, len(events))

    def _await_beats_ack(self, sock: socket.socket, count: int) -> None:
        deadline = time.monotonic() + self.timeout
        buffer = self._ack_buffer
        acked = 0
        try:
            # Each read gives at least one byte, so this bounds the frames a chatty server can
            # make us read: one per event (partial acknowledgements) and some keep-alives.
            for _ in range(_LJ_ACK_SIZE * (count + 1024)):
                for _ in range(len(buffer) // _LJ_ACK_SIZE):
                    kind, sequence = struct.unpack(">2sI", buffer[:_LJ_ACK_SIZE])
                    buffer = buffer[_LJ_ACK_SIZE:]
                    if kind != _LJ_ACK:
                        raise LumberjackProtocolError(f"expected an ack frame, got {kind!r}")
                    if sequence > count:
                        raise LumberjackProtocolError(
                            f"ack for sequence {sequence} in a window of {count} events"
                        )
                    if sequence == count:
                        self._ack_buffer = buffer
                        return
                    # A lower sequence (0 is Logstash's keep-alive) acknowledges part of the window.
                    acked = max(acked, sequence)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                sock.settimeout(remaining)
                try:
                    chunk = sock.recv(4096)
                except TimeoutError:
                    break
                if not chunk:
                    raise ConnectionError(
                        f"the server closed the connection with {acked} of the window's "
                        f"{count} events acknowledged"
                    )
                buffer += chunk
            else:
                raise LumberjackProtocolError(f"too many frames without the ack for {count}")
        finally:
            sock.settimeout(self.timeout)
        raise TimeoutError(
            f"{acked} of the window's {count} events acknowledged within {self.timeout:g} s"
        )
