"""Logstash over TCP (optionally TLS): one JSON line per event, for ``input { tcp { codec =>
json_lines } }``; a batch is delivered once the peer's TCP stack acknowledged every byte of it
(see :mod:`tracer.reporters.logstash`)."""

from __future__ import annotations

import errno
import os
import socket
import struct
import sys
import time
from typing import Any

from tracer.reporters.base import DeliveryError
from tracer.reporters.logstash.stream import StreamReporter

try:
    import fcntl as _fcntl
    import termios as _termios
except ImportError:  # Windows: no ioctl, so TCP falls back to the kernel-accepted rule.
    _fcntl = None  # type: ignore[assignment]
    _termios = None  # type: ignore[assignment]

# SIOCOUTQ is the terminal ioctl TIOCOUTQ reused for sockets; its number differs between CPU
# architectures, so it is taken from termios where Python knows it.
_SIOCOUTQ: int = getattr(_termios, "TIOCOUTQ", 0x5411)
_CAN_ASK_UNACKED = _fcntl is not None and sys.platform.startswith("linux")
# What a kernel that does not implement SIOCOUTQ for sockets answers.
_IOCTL_UNSUPPORTED = frozenset(
    {errno.ENOTTY, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS, errno.ENOPROTOOPT}
)
# The acknowledgement wait polls quickly first, since on a healthy link the peer answers within a
# round trip, then backs off so that a stalled peer costs little CPU for the rest of the timeout.
_ACK_POLL_FIRST = 0.001
_ACK_POLL_MAX = 0.05


class LogstashTcpReporter(StreamReporter):
    """JSON lines over TCP (or TLS); build one with ``logstash.create(type="tcp", ...)``."""

    type = "tcp"

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        # Cleared the first time the kernel refuses SIOCOUTQ, which then is not asked again.
        self._can_ask_unacked = _CAN_ASK_UNACKED

    def _deliver(self, events: list[bytes]) -> DeliveryError | None:
        return self._send_tcp(b"\n".join(events) + b"\n")

    def _send_tcp(self, payload: bytes) -> DeliveryError | None:
        reused = self._sock is not None and not self._peer_closed(self._sock)
        if not reused:
            self._drop_connection()
        try:
            sock = self._sock or self._connect()
            self._sock = sock
            sock.sendall(payload)
        except OSError as exc:
            self._drop_connection()
            if not reused:
                return self._error("send to", exc)
            # A reused connection can die between the check and the write; one fresh connection
            # before giving up saves the batch a whole backoff cycle.
            try:
                sock = self._sock = self._connect()
                sock.sendall(payload)
            except OSError as retry_exc:
                self._drop_connection()
                return self._error("send to", retry_exc)
        return self._await_acknowledged(sock, len(payload))

    def _await_acknowledged(self, sock: socket.socket, size: int) -> DeliveryError | None:
        """None once the peer's TCP stack has acknowledged every byte written to ``sock``.

        Without SIOCOUTQ this is None at once: the bytes the kernel accepted count as delivered.
        """
        deadline = time.monotonic() + self.timeout
        pause = _ACK_POLL_FIRST
        unacked = size
        # Every round but the last sleeps at least _ACK_POLL_FIRST, which bounds the count.
        for _ in range(int(self.timeout / _ACK_POLL_FIRST) + 2):
            try:
                pending = self._unacked_bytes(sock)
                if pending is None:
                    return None
                # A reset leaves the unacknowledged bytes counted but sets the socket's error.
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            except OSError as exc:
                self._abort_connection()
                return self._error("confirm delivery to", exc)
            unacked = pending
            if code:
                self._abort_connection()
                lost = OSError(
                    code,
                    f"{os.strerror(code)}, with {unacked} bytes unacknowledged "
                    f"(a batch of {size} bytes)",
                )
                return self._error("deliver to", lost)
            if unacked == 0:
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, _ACK_POLL_MAX)
        self._abort_connection()
        stalled = TimeoutError(
            f"{unacked} bytes still unacknowledged after {self.timeout:g} s "
            f"(a batch of {size} bytes): the peer is not reading"
        )
        return self._error("deliver to", stalled)

    def _unacked_bytes(self, sock: socket.socket) -> int | None:
        """Bytes written to ``sock`` that the peer has not acknowledged, or None if unknowable."""
        if not self._can_ask_unacked or _fcntl is None:
            return None
        try:
            # An SSL socket's fileno() is the TCP socket under it, so this works for TLS too.
            answer = _fcntl.ioctl(sock.fileno(), _SIOCOUTQ, bytes(4))
        except OSError as exc:
            if exc.errno not in _IOCTL_UNSUPPORTED:
                raise
            self._can_ask_unacked = False
            return None
        return int(struct.unpack("i", answer)[0])
