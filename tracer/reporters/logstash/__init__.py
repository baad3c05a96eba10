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

One class per transport, each in its own module (:mod:`~tracer.reporters.logstash.tcp`,
:mod:`~tracer.reporters.logstash.udp`, :mod:`~tracer.reporters.logstash.beats`,
:mod:`~tracer.reporters.logstash.http`), all of them a :class:`LogstashReporter`; :func:`create`
picks one by ``type``.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping

from tracer.encoding import encode_json
from tracer.reporters import http as _http
from tracer.reporters.logstash.beats import (
    _LJ_MAX_SEQUENCE,
    LogstashBeatsReporter,
    LumberjackProtocolError,
)
from tracer.reporters.logstash.common import (
    _DEFAULT_PORTS,
    DEFAULT_BEATS_PORT,
    DEFAULT_COMPRESSION_LEVEL,
    DEFAULT_HOST,
    DEFAULT_HTTP_PORT,
    DEFAULT_MAX_DATAGRAM_BYTES,
    DEFAULT_PORT,
    DEFAULT_TIMEOUT,
    DEFAULT_TYPE,
    DEFAULT_WINDOW_SIZE,
    TYPES,
    LogstashReporter,
    iter_records,
)
from tracer.reporters.logstash.http import LogstashHttpReporter
from tracer.reporters.logstash.tcp import LogstashTcpReporter
from tracer.reporters.logstash.udp import LogstashUdpReporter

__all__ = [
    "DEFAULT_BEATS_PORT",
    "DEFAULT_COMPRESSION_LEVEL",
    "DEFAULT_HOST",
    "DEFAULT_HTTP_PORT",
    "DEFAULT_MAX_DATAGRAM_BYTES",
    "DEFAULT_PORT",
    "DEFAULT_TIMEOUT",
    "DEFAULT_TYPE",
    "DEFAULT_WINDOW_SIZE",
    "TYPES",
    "LogstashBeatsReporter",
    "LogstashHttpReporter",
    "LogstashReporter",
    "LogstashTcpReporter",
    "LogstashUdpReporter",
    "LumberjackProtocolError",
    "create",
    "encode_json",
    "iter_records",
]


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
    if kind == "udp":
        return LogstashUdpReporter(
            host=address,
            port=port_number,
            timeout=float(timeout),
            max_datagram_bytes=max_datagram_bytes,
        )
    if kind == "beats":
        return LogstashBeatsReporter(
            host=address,
            port=port_number,
            timeout=float(timeout),
            ssl_context=context,
            server_hostname=server_hostname,
            window_size=window_size,
            compression_level=compression_level,
        )
    return LogstashTcpReporter(
        host=address,
        port=port_number,
        timeout=float(timeout),
        ssl_context=context,
        server_hostname=server_hostname,
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
    target = _http.HttpTarget.create(
        url, headers=headers, timeout=timeout, ca_file=ca_file, verify=verify, name="logstash"
    )
    return LogstashHttpReporter(target, gzip=gzip)


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
