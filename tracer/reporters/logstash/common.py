"""What every Logstash transport shares: the defaults, the events of a batch, and
:class:`LogstashReporter`, the base of the four transports' classes."""

from __future__ import annotations

import datetime as _dt
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any, ClassVar

from tracer.encoding import encode_json
from tracer.reporters.base import Batch, Callback, ConnectionReporter, DeliveryError

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
    """A Logstash reporter, whichever its transport; build one with
    :func:`tracer.reporters.logstash.create`.

    ``send`` is meant to be called from one thread at a time (the pipeline's worker); ``flush``
    and ``close`` may be called from any thread. Connecting, each write and each wait for an
    acknowledgement are bounded by ``timeout`` seconds, so ``send`` cannot block forever.
    """

    #: The transport: ``"tcp"``, ``"udp"``, ``"beats"`` or ``"http"``.
    type: ClassVar[str]
    #: Where batches are POSTed (http only).
    url: str | None = None

    def __init__(self, *, host: str, port: int, timeout: float) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        super().__init__()
        self._sock: socket.socket | None = None

    def __repr__(self) -> str:
        return f"<LogstashReporter {self.type}://{self.host}:{self.port}>"

    def send(self, data: Batch, callback: Callback) -> None:
        """Send one batch, then call ``callback`` exactly once; never raises on a delivery error.

        A network failure, or a batch the peer did not acknowledge within ``timeout`` (TCP on
        Linux, beats), gives ``callback(DeliveryError(..., retryable=True))``; what else each
        transport does is said by its class. Exceptions raised by ``callback`` itself propagate
        to the caller.
        """
        error: BaseException | None
        try:
            events = [encode_json(record) for record in iter_records(data)]
            with self._locked():
                if self._closed:
                    error = DeliveryError("logstash reporter is closed", retryable=True)
                elif not events:
                    error = None
                else:
                    error = self._deliver(events)
        except Exception as exc:
            # Not a network problem (those are handled above), so sending again would fail again.
            error = DeliveryError(
                f"logstash reporter failed on this batch: {type(exc).__name__}: {exc}",
                retryable=False,
            )
        callback(error)

    def _deliver(self, events: list[bytes]) -> DeliveryError | None:
        """Send the batch's encoded events, with this reporter's lock held."""
        raise NotImplementedError

    def _drop_connection(self) -> None:
        sock, self._sock = self._sock, None
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
