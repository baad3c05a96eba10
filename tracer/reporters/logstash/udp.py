"""Logstash over UDP: one datagram per event, for ``input { udp { codec => json_lines } }``; no
acknowledgement at all (see :mod:`tracer.reporters.logstash`)."""

from __future__ import annotations

import socket
from typing import Any

from tracer.reporters.base import DeliveryError
from tracer.reporters.logstash.common import DEFAULT_MAX_DATAGRAM_BYTES, LogstashReporter


class LogstashUdpReporter(LogstashReporter):
    """A datagram per event; build one with ``logstash.create(type="udp", ...)``.

    A record over ``max_datagram_bytes`` is dropped and counted in ``dropped_oversize``; the
    batch still counts as delivered when at least one of its records was sent, and fails with a
    non-retryable ``DeliveryError`` when every record was oversize.
    """

    type = "udp"

    def __init__(
        self,
        *,
        host: str,
        port: int,
        timeout: float,
        max_datagram_bytes: int = DEFAULT_MAX_DATAGRAM_BYTES,
    ) -> None:
        super().__init__(host=host, port=port, timeout=timeout)
        self.max_datagram_bytes = max_datagram_bytes
        #: Records dropped because they were larger than ``max_datagram_bytes``.
        self.dropped_oversize = 0
        self._udp_addr: tuple[Any, ...] | None = None

    def _deliver(self, events: list[bytes]) -> DeliveryError | None:
        return self._send_udp([event + b"\n" for event in events])

    def _drop_connection(self) -> None:
        self._udp_addr = None
        super()._drop_connection()

    def _send_udp(self, lines: list[bytes]) -> DeliveryError | None:
        sent = oversize = 0
        try:
            if self._sock is None or self._udp_addr is None:
                self._open_udp()
            assert self._sock is not None and self._udp_addr is not None
            for line in lines:
                if len(line) > self.max_datagram_bytes:
                    oversize += 1
                    continue
                self._sock.sendto(line, self._udp_addr)
                sent += 1
        except OSError as exc:
            # Resolve the address again next time: the host may have moved.
            self._drop_connection()
            self.dropped_oversize += oversize
            return self._error("send datagram to", exc)
        self.dropped_oversize += oversize
        if sent == 0:
            return DeliveryError(
                f"every record of the batch ({oversize}) is larger than the "
                f"{self.max_datagram_bytes}-byte datagram limit; dropped",
                retryable=False,
            )
        return None

    def _open_udp(self) -> None:
        family, socktype, proto, _, addr = socket.getaddrinfo(
            self.host, self.port, type=socket.SOCK_DGRAM
        )[0]
        sock = socket.socket(family, socktype, proto)
        sock.settimeout(self.timeout)
        self._sock = sock
        self._udp_addr = tuple(addr)
