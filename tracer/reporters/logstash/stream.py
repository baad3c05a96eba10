"""What the TCP and beats transports share: a stream connection, optionally TLS."""

from __future__ import annotations

import socket
import ssl

from tracer.reporters.logstash.common import LogstashReporter


class StreamReporter(LogstashReporter):
    """A Logstash transport over one TCP connection, wrapped in TLS when ``ssl_context`` is
    given (the certificate checked against ``server_hostname``, by default ``host``)."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        timeout: float,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> None:
        super().__init__(host=host, port=port, timeout=timeout)
        self._ssl_context = ssl_context
        self._server_hostname = server_hostname or host

    def __repr__(self) -> str:
        tls = "+tls" if self._ssl_context is not None else ""
        return f"<LogstashReporter {self.type}{tls}://{self.host}:{self.port}>"

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # SO_SNDBUF is left to the kernel: nothing in our send buffer counts as delivered
            # until the peer acknowledged it, so its size decides how long a write blocks, not
            # what can be lost, and a fixed size would switch off the kernel's autotuning.
            if self._ssl_context is not None:
                sock = self._ssl_context.wrap_socket(sock, server_hostname=self._server_hostname)
        except BaseException:
            sock.close()
            raise
        return sock

    @classmethod
    def _peer_closed(cls, sock: socket.socket) -> bool:
        """True when the peer has closed or reset the connection (it never sends us data)."""
        return cls._idle_read(sock) is None

    @staticmethod
    def _idle_read(sock: socket.socket) -> bytes | None:
        """What the peer sent while the connection sat idle, or None if it closed or reset it."""
        timeout = sock.gettimeout()
        try:
            sock.setblocking(False)
            try:
                data = sock.recv(65536)
            finally:
                sock.settimeout(timeout)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return b""
        except OSError:
            return None
        # b"" is an orderly shutdown.
        return data or None
