"""Logstash reporter: one JSON line per span, over TCP (optionally TLS) or UDP.

Each span of a batch becomes one line for Logstash's ``json_lines`` codec: the span record plus
``@timestamp`` (ISO 8601 UTC with milliseconds, from the span's ``start_us``), ``@version: "1"``
and the batch's ``service``, ``host`` and ``pid`` when the span lacks them. A batch without
``"spans"`` (a metrics batch) is sent as one line. A matching Logstash input::

    input { tcp { port => 12201 codec => json_lines } }

Options not given are read from ``LOGSTASH_TYPE``, ``LOGSTASH_HOST`` and ``LOGSTASH_PORT``, then
default to ``tcp``, ``localhost`` and ``12201``.

Delivery guarantees, plainly:

* TCP: a batch is reported delivered once all its bytes were accepted by the kernel. TCP has no
  application-level acknowledgement, so a batch written just before Logstash dies can still be
  lost. Before each write the reporter checks whether the peer has already closed the connection
  (Logstash never writes back), which catches the common case of a restarted Logstash; it cannot
  catch a peer that dies after that check. A write that fails half-way is reported as a retryable
  error and the whole batch is sent again later, so Logstash may see some spans twice, and the
  torn line on the dead connection is lost with it.
* UDP: one datagram per line and no acknowledgement at all; a batch is delivered once the
  datagrams left this process.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import socket
import ssl
import time
from collections.abc import Iterator
from typing import Any

from reporters.base import Batch, Callback, ConnectionReporter, DeliveryError

__all__ = [
    "DEFAULT_MAX_DATAGRAM_BYTES",
    "LogstashReporter",
    "create",
    "encode_json",
    "iter_records",
]

DEFAULT_TYPE = "tcp"
DEFAULT_HOST = "localhost"
DEFAULT_PORT = 12201
DEFAULT_TIMEOUT = 5.0
# Below the 65,507-byte payload limit of a UDP datagram over IPv4, with room to spare.
DEFAULT_MAX_DATAGRAM_BYTES = 65_000

_MAX_DEPTH = 64


def encode_json(value: Any) -> bytes:
    """Serialise ``value`` to compact UTF-8 JSON that is always valid.

    NaN and infinities become ``null``; objects JSON cannot represent become their ``str()``;
    cycles, over-deep nesting and non-string keys are flattened to strings. Never raises for any
    input.
    """
    try:
        text = json.dumps(
            value, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str
        )
    except (ValueError, TypeError, RecursionError):
        # allow_nan=False, a circular reference, a non-string key or a failing __str__: rebuild
        # a plain copy that json.dumps accepts as it is.
        text = json.dumps(
            _sanitise(value, 0, set()), separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    # A lone surrogate (from surrogateescape-decoded input) cannot be encoded as UTF-8.
    return text.encode("utf-8", errors="replace")


def _sanitise(value: Any, depth: int, active: set[int]) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if depth >= _MAX_DEPTH:
        return _safe_str(value)
    if isinstance(value, (dict, list, tuple)):
        if id(value) in active:
            return "<cycle>"
        active.add(id(value))
        try:
            if isinstance(value, dict):
                return {_key(k): _sanitise(v, depth + 1, active) for k, v in list(value.items())}
            return [_sanitise(v, depth + 1, active) for v in list(value)]
        finally:
            active.discard(id(value))
    return _safe_str(value)


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, float) and not math.isfinite(key):
        return "null"
    if key is None or isinstance(key, (bool, int, float)):
        # The same spelling json.dumps would use for these keys.
        return json.dumps(key)
    return _safe_str(key)


def _safe_str(value: Any) -> str:
    try:
        return str(value)
    except Exception:
        try:
            return repr(value)
        except Exception:
            return f"<unprintable {type(value).__name__}>"


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
    and ``close`` may be called from any thread. Every socket operation is bounded by ``timeout``
    seconds, so ``send`` cannot block forever.
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
        max_datagram_bytes: int,
    ) -> None:
        self.type = type
        self.host = host
        self.port = port
        self.timeout = timeout
        self.max_datagram_bytes = max_datagram_bytes
        #: Records dropped because they were larger than ``max_datagram_bytes`` (UDP only).
        self.dropped_oversize = 0
        self._ssl_context = ssl_context
        self._server_hostname = server_hostname or host
        super().__init__()
        self._sock: socket.socket | None = None
        self._udp_addr: tuple[Any, ...] | None = None
        self._udp_family = socket.AF_INET

    def __repr__(self) -> str:
        tls = "+tls" if self._ssl_context is not None else ""
        return f"<LogstashReporter {self.type}{tls}://{self.host}:{self.port}>"

    def send(self, data: Batch, callback: Callback) -> None:
        """Send one batch, then call ``callback`` exactly once; never raises on a delivery error.

        A network failure gives ``callback(DeliveryError(..., retryable=True))``. With UDP, a
        record over ``max_datagram_bytes`` is dropped and counted in ``dropped_oversize``; the
        batch still counts as delivered when at least one of its records was sent, and fails with
        a non-retryable ``DeliveryError`` when every record was oversize. Exceptions raised by
        ``callback`` itself propagate to the caller.
        """
        error: BaseException | None
        try:
            lines = [encode_json(record) + b"\n" for record in iter_records(data)]
            with self._locked():
                if self._closed:
                    error = DeliveryError("logstash reporter is closed", retryable=True)
                elif not lines:
                    error = None
                elif self.type == "udp":
                    error = self._send_udp(lines)
                else:
                    error = self._send_tcp(b"".join(lines))
        except Exception as exc:
            # Not a network problem (those are handled above), so sending again would fail again.
            error = DeliveryError(
                f"logstash reporter failed on this batch: {type(exc).__name__}: {exc}",
                retryable=False,
            )
        callback(error)

    # TCP -----------------------------------------------------------------------------------

    def _send_tcp(self, payload: bytes) -> DeliveryError | None:
        reused = self._sock is not None and not self._peer_closed(self._sock)
        if not reused:
            self._drop_connection()
        try:
            if self._sock is None:
                self._sock = self._connect()
            self._sock.sendall(payload)
            return None
        except OSError as exc:
            self._drop_connection()
            if not reused:
                return self._error("send to", exc)
        # A reused connection can die between the check and the write; one fresh connection
        # before giving up saves the batch a whole backoff cycle.
        try:
            self._sock = self._connect()
            self._sock.sendall(payload)
            return None
        except OSError as exc:
            self._drop_connection()
            return self._error("send to", exc)

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._ssl_context is not None:
                sock = self._ssl_context.wrap_socket(sock, server_hostname=self._server_hostname)
        except BaseException:
            sock.close()
            raise
        return sock

    @staticmethod
    def _peer_closed(sock: socket.socket) -> bool:
        """True when the peer has closed or reset the connection (it never sends us data)."""
        timeout = sock.gettimeout()
        try:
            sock.setblocking(False)
            try:
                data = sock.recv(4096)
            finally:
                sock.settimeout(timeout)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return False
        except OSError:
            return True
        # b"" is an orderly shutdown; anything else is unexpected chatter we can ignore.
        return data == b""

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
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def _error(self, verb: str, exc: OSError) -> DeliveryError:
        error = DeliveryError(
            f"logstash: could not {verb} {self.host}:{self.port} ({self.type}): "
            f"{type(exc).__name__}: {exc}",
            retryable=True,
        )
        error.__cause__ = exc
        return error


def create(
    type: str | None = None,
    host: str | None = None,
    port: int | str | None = None,
    *,
    tls: bool = False,
    ca_file: str | os.PathLike[str] | None = None,
    verify: bool = True,
    server_hostname: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    max_datagram_bytes: int = DEFAULT_MAX_DATAGRAM_BYTES,
) -> LogstashReporter:
    """Create a Logstash reporter.

    ``type`` is ``"tcp"`` or ``"udp"``; ``type``, ``host`` and ``port`` fall back to
    ``LOGSTASH_TYPE``, ``LOGSTASH_HOST`` and ``LOGSTASH_PORT``, then to ``tcp``, ``localhost``
    and ``12201``. ``tls=True`` (implied by ``ca_file``) wraps the TCP connection in TLS, with the
    certificate and the host name verified against the system's CAs or ``ca_file``;
    ``verify=False`` turns that verification off and must be asked for. ``server_hostname``
    overrides the name checked against the certificate (default: ``host``). ``timeout`` bounds
    connecting and each send, in seconds. ``max_datagram_bytes`` caps one UDP datagram.

    Raises ``ValueError`` for an unknown type, a bad port, TLS over UDP or a bad limit.
    """
    kind = (type if type is not None else os.environ.get("LOGSTASH_TYPE") or DEFAULT_TYPE).lower()
    if kind not in ("tcp", "udp"):
        raise ValueError(f"logstash: type must be 'tcp' or 'udp', not {kind!r}")
    address = host if host is not None else os.environ.get("LOGSTASH_HOST") or DEFAULT_HOST
    if not address:
        raise ValueError("logstash: host must not be empty")
    port_number = _parse_port(port if port is not None else os.environ.get("LOGSTASH_PORT"))
    if not timeout > 0:
        raise ValueError(f"logstash: timeout must be a positive number of seconds, not {timeout}")
    if max_datagram_bytes < 1:
        raise ValueError(f"logstash: max_datagram_bytes must be positive, not {max_datagram_bytes}")
    use_tls = tls or ca_file is not None
    context: ssl.SSLContext | None = None
    if use_tls:
        if kind == "udp":
            raise ValueError("logstash: TLS needs type='tcp'")
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
    )


def _parse_port(value: int | str | None) -> int:
    if value is None or value == "":
        return DEFAULT_PORT
    try:
        if isinstance(value, bool):
            raise ValueError
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"logstash: port must be a number, not {value!r}") from None
    if not 0 < number < 65536:
        raise ValueError(f"logstash: port must be between 1 and 65535, not {number}")
    return number
