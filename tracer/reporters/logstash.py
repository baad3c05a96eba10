"""Logstash reporter: each span as one Logstash event, over TCP (optionally TLS), UDP, the Beats
protocol (Lumberjack v2, optionally over TLS) or HTTP.

Each span of a batch becomes one event: the span record plus ``@timestamp`` (ISO 8601 UTC with
milliseconds, from the span's ``start_us``), ``@version: "1"`` and the batch's ``service``,
``host`` and ``pid`` when the span lacks them. A batch without ``"spans"`` (a metrics batch) is
one event. The transports, and a matching Logstash input for each::

    type="tcp"    input { tcp   { port => 12201 codec => json_lines } }   one JSON line per event
    type="udp"    input { udp   { port => 12201 codec => json_lines } }   one datagram per event
    type="beats"  input { beats { port => 5044 } }                         what Filebeat speaks
    type="http"   input { http  { port => 8080 } }                         a JSON array per batch

Options not given are read from ``LOGSTASH_TYPE``, ``LOGSTASH_HOST`` and ``LOGSTASH_PORT``, then
default to ``tcp``, ``localhost`` and the type's port: 12201 for tcp and udp, 5044 for beats,
8080 for http.

Delivery guarantees, plainly:

* TCP (and TLS over it): on Linux a batch is reported delivered only once the peer's TCP stack
  has acknowledged every byte of it. After the write the reporter polls the socket's queue of
  unacknowledged bytes (the ``SIOCOUTQ`` ioctl) until it is empty, for up to ``timeout``
  seconds. The peer's TCP stack acknowledges data as soon as it sits in the peer's receive
  buffer, so what can still be lost is only what sat unread in Logstash's own socket buffer when
  Logstash died or reset the connection. A batch not fully acknowledged within ``timeout`` (a
  Logstash that accepted the connection but stopped reading), or whose connection fails or is
  reset meanwhile, gets a retryable error: the connection is aborted and the whole batch is sent
  again later, so Logstash may see some of its spans twice. Where ``SIOCOUTQ`` is unavailable
  (not Linux, or the kernel refuses the ioctl) the rule is the weaker one: delivered once the
  kernel accepted all the bytes, so what sat in this host's send buffer can be lost as well.
  Before each write the reporter checks whether the peer has already closed the connection
  (Logstash never writes back), which catches the common case of a restarted Logstash. A write
  that fails half-way is a retryable error and the whole batch is sent again later; the torn
  line on the dead connection is lost with it.
* UDP: one datagram per line and no acknowledgement at all; a batch is delivered once the
  datagrams left this process.
* Beats: a batch goes out as windows of at most ``window_size`` events: a window frame, then one
  JSON data frame per event with sequence numbers from 1, all in one zlib-compressed frame
  unless ``compression_level=0``. It is delivered only once the server has acknowledged the last
  sequence number of every window. Partial acknowledgements, and the sequence-0 keep-alives
  Logstash sends while its pipeline is blocked, keep the reporter waiting, for at most
  ``timeout`` seconds per window. Logstash's beats input acknowledges a window once it has
  pushed the window's events into its pipeline queue, so what can still be lost is what Logstash
  itself loses: the events in an in-memory queue when Logstash crashes (a persisted queue keeps
  them). No acknowledgement in time, a protocol error or a broken connection is a retryable
  error, and the whole batch is sent again later, windows already acknowledged included, so
  duplicates are possible.
* HTTP: one POST per batch to Logstash's http input, the body a JSON array of the events (the
  input's json codec makes one event per element); 2xx is delivered, other statuses and
  ``Retry-After`` are handled as :mod:`tracer.reporters.http` does. The http input answers once
  it has pushed the events into its pipeline queue, so what can still be lost is, as with beats,
  what Logstash itself loses. ``gzip`` is off by default: an input that does not decode ``Content-
  Encoding: gzip`` (an old one, or a proxy in front of it) still answers 200 and turns the
  compressed body into a parse-failure event, which is a loss nobody sees; turn it on once you
  know your Logstash decodes it.
"""

from __future__ import annotations

import datetime as _dt
import errno
import os
import socket
import ssl
import struct
import sys
import time
import urllib.parse
import zlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from tracer.encoding import encode_json
from tracer.reporters.base import Batch, Callback, ConnectionReporter, DeliveryError

if TYPE_CHECKING:
    from tracer.reporters.http import HttpReporter

try:
    import fcntl as _fcntl
    import termios as _termios
except ImportError:  # Windows: no ioctl, so TCP falls back to the kernel-accepted rule.
    _fcntl = None  # type: ignore[assignment]
    _termios = None  # type: ignore[assignment]

__all__ = [
    "DEFAULT_MAX_DATAGRAM_BYTES",
    "TYPES",
    "LogstashReporter",
    "LumberjackProtocolError",
    "create",
    "encode_json",
    "iter_records",
]

#: The transports ``create`` knows, in the order its error message lists them.
TYPES = ("tcp", "udp", "beats", "http")
DEFAULT_TYPE = "tcp"
DEFAULT_HOST = "localhost"
DEFAULT_PORT = 12201
DEFAULT_BEATS_PORT = 5044
DEFAULT_HTTP_PORT = 8080
_DEFAULT_PORTS = {
    "tcp": DEFAULT_PORT,
    "udp": DEFAULT_PORT,
    "beats": DEFAULT_BEATS_PORT,
    "http": DEFAULT_HTTP_PORT,
}
DEFAULT_TIMEOUT = 5.0
# Below the 65,507-byte payload limit of a UDP datagram over IPv4, with room to spare.
DEFAULT_MAX_DATAGRAM_BYTES = 65_000
# Filebeat's own window is larger; a smaller one means less to send again when one window fails.
DEFAULT_WINDOW_SIZE = 1024
# Filebeat's default level: most of zlib's gain on JSON for a fraction of the CPU of level 9.
DEFAULT_COMPRESSION_LEVEL = 3

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

# Lumberjack v2 frames: a version byte, a type byte, then big-endian uint32 fields.
_LJ_WINDOW = b"2W"
_LJ_JSON = b"2J"
_LJ_COMPRESSED = b"2C"
_LJ_ACK = b"2A"
_LJ_ACK_SIZE = 6
_LJ_MAX_SEQUENCE = 0xFFFF_FFFF


class LumberjackProtocolError(Exception):
    """The beats server sent something that is not a valid acknowledgement for this window."""


def _iso_timestamp(epoch_us: Any) -> str | None:
    """``epoch_us`` (microseconds) as ``2024-05-01T12:00:00.123Z``, or None if it is not a time."""
    if isinstance(epoch_us, bool) or not isinstance(epoch_us, (int, float)):
        return None
    try:
        # Integer arithmetic, so a float's rounding cannot move the milliseconds.
        seconds, micros = divmod(int(epoch_us), 1_000_000)
        moment = _dt.datetime.fromtimestamp(seconds, tz=_dt.timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{micros // 1000:03d}Z"


def _now_timestamp() -> str:
    result = _iso_timestamp(time.time_ns() // 1000)
    assert result is not None
    return result


def iter_records(data: Batch) -> Iterator[dict[str, Any]]:
    """The Logstash events for one batch: one per span, or the whole batch when it has no spans."""
    batch_time = _iso_timestamp(data.get("sent_at_us")) or _now_timestamp()
    spans = data.get("spans")
    if not isinstance(spans, list):
        record: dict[str, Any] = {"@timestamp": batch_time, "@version": "1"}
        record.update(data)
        yield record
        return
    for span in spans:
        if not isinstance(span, dict):
            span = {"value": span}
        record = {"@timestamp": _iso_timestamp(span.get("start_us")) or batch_time}
        record["@version"] = "1"
        for field in ("service", "host", "pid"):
            if span.get(field) is None and field in data:
                record[field] = data[field]
        record.update(span)
        yield record


class LogstashReporter(ConnectionReporter):
    """Sends batches to Logstash; build one with :func:`create`.

    ``send`` is meant to be called from one thread at a time (the pipeline's worker); ``flush``
    and ``close`` may be called from any thread. Connecting, each write and each wait for an
    acknowledgement are bounded by ``timeout`` seconds, so ``send`` cannot block forever.
    """

    def __init__(
        self,
        *,
        type: str,
        host: str,
        port: int,
        timeout: float,
        ssl_context: ssl.SSLContext | None,
        server_hostname: str | None,
        max_datagram_bytes: int = DEFAULT_MAX_DATAGRAM_BYTES,
        window_size: int = DEFAULT_WINDOW_SIZE,
        compression_level: int = DEFAULT_COMPRESSION_LEVEL,
        http_reporter: HttpReporter | None = None,
    ) -> None:
        self.type = type
        self.host = host
        self.port = port
        self.timeout = timeout
        self.max_datagram_bytes = max_datagram_bytes
        #: Most events per Lumberjack window (beats only).
        self.window_size = window_size
        #: zlib level of the beats compressed frame; 0 sends plain JSON frames.
        self.compression_level = compression_level
        #: Where batches are POSTed (http only).
        self.url: str | None = http_reporter.url if http_reporter is not None else None
        #: Records dropped because they were larger than ``max_datagram_bytes`` (UDP only).
        self.dropped_oversize = 0
        self._ssl_context = ssl_context
        self._server_hostname = server_hostname or host
        self._http = http_reporter
        super().__init__()
        self._sock: socket.socket | None = None
        self._udp_addr: tuple[Any, ...] | None = None
        self._udp_family = socket.AF_INET
        # Cleared the first time the kernel refuses SIOCOUTQ, which then is not asked again.
        self._can_ask_unacked = _CAN_ASK_UNACKED
        # Bytes from the beats server that do not make a whole acknowledgement frame yet.
        self._ack_buffer = b""

    def __repr__(self) -> str:
        if self.url is not None:
            return f"<LogstashReporter http {self.url}>"
        tls = "+tls" if self._ssl_context is not None else ""
        return f"<LogstashReporter {self.type}{tls}://{self.host}:{self.port}>"

    def send(self, data: Batch, callback: Callback) -> None:
        """Send one batch, then call ``callback`` exactly once; never raises on a delivery error.

        A network failure, or a batch the peer did not acknowledge within ``timeout`` (TCP on
        Linux, beats), gives ``callback(DeliveryError(..., retryable=True))``. With UDP, a
        record over ``max_datagram_bytes`` is dropped and counted in ``dropped_oversize``; the
        batch still counts as delivered when at least one of its records was sent, and fails with
        a non-retryable ``DeliveryError`` when every record was oversize. HTTP answers are
        handled as :meth:`tracer.reporters.http.HttpReporter.send` handles them. Exceptions
        raised by ``callback`` itself propagate to the caller.
        """
        if self._http is not None:
            # The http reporter keeps its own connection, lock and status handling.
            self._http.send(data, callback)
            return
        error: BaseException | None
        try:
            events = [encode_json(record) for record in iter_records(data)]
            with self._locked():
                if self._closed:
                    error = DeliveryError("logstash reporter is closed", retryable=True)
                elif not events:
                    error = None
                elif self.type == "udp":
                    error = self._send_udp([event + b"\n" for event in events])
                elif self.type == "beats":
                    error = self._send_beats(events)
                else:
                    error = self._send_tcp(b"\n".join(events) + b"\n")
        except Exception as exc:
            # Not a network problem (those are handled above), so sending again would fail again.
            error = DeliveryError(
                f"logstash reporter failed on this batch: {type(exc).__name__}: {exc}",
                retryable=False,
            )
        callback(error)

    def close(self) -> None:
        """Close the connection; later sends fail with a retryable ``DeliveryError``."""
        super().close()
        if self._http is not None:
            self._http.close()

    # TCP -----------------------------------------------------------------------------------

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

    # Beats (Lumberjack v2) -----------------------------------------------------------------

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

    # UDP -----------------------------------------------------------------------------------

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

    # Shared --------------------------------------------------------------------------------

    def _drop_connection(self) -> None:
        sock, self._sock, self._udp_addr = self._sock, None, None
        self._ack_buffer = b""
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def _abort_connection(self) -> None:
        """Drop the connection with a reset rather than a close.

        The batch is to be sent again whole, so what the kernel still holds for the old
        connection must not trickle in later as a second, possibly torn, copy.
        """
        if self._sock is not None:
            try:
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        self._drop_connection()

    def _error(self, verb: str, exc: BaseException) -> DeliveryError:
        error = DeliveryError(
            f"logstash: could not {verb} {self.host}:{self.port} ({self.type}): "
            f"{type(exc).__name__}: {exc}",
            retryable=True,
        )
        error.__cause__ = exc
        return error


def _json_array(data: Batch) -> bytes | None:
    """The body for Logstash's http input: the batch's events as one JSON array."""
    events = [encode_json(record) for record in iter_records(data)]
    if not events:
        return None
    return b"[" + b",".join(events) + b"]"


def create(
    type: str | None = None,
    host: str | None = None,
    port: int | str | None = None,
    *,
    url: str | None = None,
    tls: bool = False,
    ca_file: str | os.PathLike[str] | None = None,
    verify: bool = True,
    server_hostname: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    max_datagram_bytes: int = DEFAULT_MAX_DATAGRAM_BYTES,
    window_size: int = DEFAULT_WINDOW_SIZE,
    compression_level: int = DEFAULT_COMPRESSION_LEVEL,
    headers: Mapping[str, str] | None = None,
    gzip: bool = False,
) -> LogstashReporter:
    """Create a Logstash reporter.

    ``type`` is ``"tcp"`` (JSON lines), ``"udp"`` (a datagram per line), ``"beats"`` (the
    Lumberjack v2 protocol of Logstash's beats input) or ``"http"`` (a POST per batch to its
    http input); ``url`` alone implies ``"http"``. ``type``, ``host`` and ``port`` fall back to
    ``LOGSTASH_TYPE``, ``LOGSTASH_HOST`` and ``LOGSTASH_PORT``, then to ``tcp``, ``localhost``
    and the type's port (12201 for tcp and udp, 5044 for beats, 8080 for http).

    ``tls=True`` (implied by ``ca_file``) wraps a tcp or beats connection in TLS, with the
    certificate and the host name verified against the system's CAs or ``ca_file``;
    ``verify=False`` turns that verification off and must be asked for. ``server_hostname``
    overrides the name checked against the certificate (default: ``host``). ``timeout`` bounds
    connecting, each write and each wait for an acknowledgement, in seconds.

    Per type: ``max_datagram_bytes`` caps one UDP datagram. ``window_size`` is the most events
    per beats window and ``compression_level`` the zlib level of its compressed frame (0 sends
    plain frames). For http, ``url`` is the input's address (default: ``http://host:port/``, or
    ``https://`` with ``tls``), ``headers`` are added to every request and ``gzip`` compresses
    the body (off by default; see the module's notes).

    Raises ``ValueError`` for an unknown type, a bad port, URL or limit, TLS over UDP, or an
    option that belongs to another type (``url`` or ``headers`` without http).
    """
    if type is not None:
        kind = type.lower()
    elif url is not None:
        kind = "http"
    else:
        kind = (os.environ.get("LOGSTASH_TYPE") or DEFAULT_TYPE).lower()
    if kind not in TYPES:
        known = ", ".join(repr(name) for name in TYPES)
        raise ValueError(f"logstash: type must be one of {known}, not {kind!r}")
    if not timeout > 0:
        raise ValueError(f"logstash: timeout must be a positive number of seconds, not {timeout}")
    if max_datagram_bytes < 1:
        raise ValueError(f"logstash: max_datagram_bytes must be positive, not {max_datagram_bytes}")
    if not 1 <= window_size <= _LJ_MAX_SEQUENCE:
        raise ValueError(f"logstash: window_size must be between 1 and 2**32-1, not {window_size}")
    if not 0 <= compression_level <= 9:
        raise ValueError(
            f"logstash: compression_level must be between 0 and 9, not {compression_level}"
        )
    use_tls = tls or ca_file is not None
    if use_tls and kind == "udp":
        raise ValueError("logstash: TLS needs type='tcp', 'beats' or 'http'")
    if kind != "http" and (url is not None or headers):
        raise ValueError(f"logstash: url and headers are for type='http', not {kind!r}")
    if kind == "http":
        return _create_http(
            host, port, url, use_tls, ca_file, verify, server_hostname, timeout, headers, gzip
        )
    address = host if host is not None else os.environ.get("LOGSTASH_HOST") or DEFAULT_HOST
    if not address:
        raise ValueError("logstash: host must not be empty")
    port_number = _parse_port(
        port if port is not None else os.environ.get("LOGSTASH_PORT"), _DEFAULT_PORTS[kind]
    )
    context: ssl.SSLContext | None = None
    if use_tls:
        context = ssl.create_default_context(cafile=ca_file)
        if not verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    return LogstashReporter(
        type=kind,
        host=address,
        port=port_number,
        timeout=float(timeout),
        ssl_context=context,
        server_hostname=server_hostname,
        max_datagram_bytes=max_datagram_bytes,
        window_size=window_size,
        compression_level=compression_level,
    )


def _create_http(
    host: str | None,
    port: int | str | None,
    url: str | None,
    use_tls: bool,
    ca_file: str | os.PathLike[str] | None,
    verify: bool,
    server_hostname: str | None,
    timeout: float,
    headers: Mapping[str, str] | None,
    gzip: bool,
) -> LogstashReporter:
    # Imported here, not at the top: tracer.reporters.http imports this module.
    from tracer.reporters import http as _http

    if server_hostname is not None:
        raise ValueError("logstash: server_hostname is not supported with type='http'")
    if url is None:
        address = host if host is not None else os.environ.get("LOGSTASH_HOST") or DEFAULT_HOST
        if not address:
            raise ValueError("logstash: host must not be empty")
        port_number = _parse_port(
            port if port is not None else os.environ.get("LOGSTASH_PORT"), DEFAULT_HTTP_PORT
        )
        netloc = f"[{address}]" if ":" in address else address
        url = f"{'https' if use_tls else 'http'}://{netloc}:{port_number}/"
    elif host is not None or port is not None:
        raise ValueError("logstash: give either url or host and port, not both")
    elif use_tls and not url.strip().lower().startswith("https://"):
        raise ValueError(f"logstash: tls and ca_file need an https:// url, not {url!r}")
    try:
        inner = _http.create(
            url,
            headers=headers,
            gzip=gzip,
            timeout=timeout,
            ca_file=ca_file,
            verify=verify,
            encoder=_json_array,
        )
    except ValueError as exc:
        raise ValueError(str(exc).replace("http reporter", "logstash", 1)) from None
    parts = urllib.parse.urlsplit(inner.url)
    return LogstashReporter(
        type="http",
        host=parts.hostname or "",
        port=parts.port or (443 if parts.scheme == "https" else 80),
        timeout=float(timeout),
        ssl_context=None,
        server_hostname=None,
        http_reporter=inner,
    )


def _parse_port(value: int | str | None, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        if isinstance(value, bool):
            raise ValueError
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"logstash: port must be a number, not {value!r}") from None
    if not 0 < number < 65536:
        raise ValueError(f"logstash: port must be between 1 and 65535, not {number}")
    return number
