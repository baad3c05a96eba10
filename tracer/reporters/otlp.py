"""OTLP reporter: spans to an OpenTelemetry Collector, Jaeger, Grafana Tempo or any backend that
speaks OTLP/HTTP, as ``POST <endpoint>/v1/traces``, and metrics batches as
``POST <endpoint>/v1/metrics`` (an ``ExportMetricsServiceRequest`` of cumulative points, see
:mod:`tracer.reporters.otlp_metrics`), each signal on its own connection with its own
``OTEL_EXPORTER_OTLP_<SIGNAL>_*`` settings and the same outcomes.

The body is an ``ExportTraceServiceRequest`` (:mod:`tracer.reporters.otlp_encode` says what goes
where): binary protobuf (``protocol="http/protobuf"``, the default, built with the official
``opentelemetry-proto`` classes of the ``otlp`` extra) or OTLP's JSON mapping
(``protocol="http/json"``, no dependency). gzip-compressed unless ``compression="none"``.

The HTTP layer is :mod:`tracer.reporters.http`'s (its target, ``post()`` and a status policy of
OTLP's own): one keep-alive connection through
``http.client`` (never ``requests``, which is instrumented), sent once more on a fresh connection
when the server had closed it while idle, TLS verified against the system's CAs or ``ca_file``.

Outcomes, as the OTLP/HTTP specification has them:

* 200: delivered. A ``partial_success`` in the answer is still delivered, never retried (the
  specification forbids it): its ``rejected_spans`` are added to :attr:`OtlpReporter.
  rejected_spans` and said in one log line (at most one per 10 s, with the counts since the
  last). The count is the receiver's word, checked: at most the spans of that request (data
  points, for metrics); a negative one, a fraction or anything but a number (or the decimal
  string the JSON mapping writes an int64 as) counts 0, and its ``error_message`` is still said,
  escaped and cut to 512 characters. A body that is not an ``Export*ServiceResponse`` (not
  JSON, nested too deep, not protobuf, a gzip body that inflates past 64 KiB) is still a 200:
  delivered, with one warning for the reporter's lifetime.
* 429, 502, 503, 504, a connection error, a timeout, or a server that closed the connection
  without answering: ``DeliveryError(retryable=True)`` with ``retry_after`` from
  ``Retry-After``; the pipeline retries with backoff, then spools.
* any other status (400, 401, 403, 404, 408, 413, 500, ...): ``DeliveryError(retryable=False)``;
  the pipeline drops the batch, counted as ``rejected``. The answer's ``google.rpc.Status``
  message, if any, is in the error.

A batch whose request would pass ``max_request_bytes`` (20 MiB before compression, the limit the
specification recommends) goes out as several requests, halving until each fits; if one of them
fails the whole batch is sent again later, so the receiver may see the first ones twice.

gRPC (port 4317) is not offered: it would bring grpcio, a large native dependency with threads
of its own and limited support for ``os.fork()``, for no gain in what delivered means; every
OTLP receiver that takes gRPC takes OTLP/HTTP too (port 4318).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import urllib.parse
import zlib
from collections.abc import Mapping
from typing import Any

from tracer.encoding import clean_text
from tracer.reporters import http as _http
from tracer.reporters import otel_env, otlp_encode, otlp_metrics
from tracer.reporters.base import Batch, Callback, ConnectionReporter, DeliveryError

__all__ = [
    "DEFAULT_ENDPOINT",
    "MAX_REQUEST_BYTES",
    "PROTOCOLS",
    "RETRYABLE_STATUSES",
    "OtlpReporter",
    "create",
]

log = logging.getLogger("tracer")

DEFAULT_ENDPOINT = "http://localhost:4318"
PROTOCOLS = ("http/protobuf", "http/json")
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
MAX_REQUEST_BYTES = 20 * 1024 * 1024
DEFAULT_TIMEOUT = 10.0
CONTENT_TYPES = {"http/protobuf": "application/x-protobuf", "http/json": "application/json"}
# How much of a success answer is read for its partial_success; a longer one is not parsed.
_MAX_RESPONSE = 64 * 1024
_LOG_EVERY = 10.0
# How much of a receiver's error_message goes into the log line.
_MAX_MESSAGE = 512
# A count as OTLP/JSON writes an int64: a decimal string (a longer one is no count at all).
_DECIMAL = re.compile(r"[0-9]{1,64}")


class OtlpReporter(ConnectionReporter):
    """POSTs batches as OTLP ``ExportTraceServiceRequest`` messages; build one with
    :func:`create`.

    ``rejected_spans`` counts the spans receivers said they rejected in a ``partial_success``
    answer, and records this reporter could not encode (ids that are not hex): they are part of
    batches counted as delivered, and lost. ``rejected_data_points`` counts the same for metrics
    batches, which :attr:`metrics` (the reporter for ``/v1/metrics``) sends.
    """

    def __init__(
        self,
        target: _http.HttpTarget,
        *,
        protocol: str,
        resource_attributes: Mapping[str, Any],
        max_request_bytes: int,
        gzip: bool = True,
        signal: str = "traces",
    ) -> None:
        super().__init__()
        self.target = target
        self.url = target.url
        self.timeout = target.timeout
        self.gzip = gzip
        self._connection = _http.Connection(target)
        self.signal = signal
        self.metrics: OtlpReporter | None = None
        self._rejected_points = 0
        self.protocol = protocol
        self.resource_attributes = dict(resource_attributes)
        self.max_request_bytes = max_request_bytes
        self.rejected_spans = 0
        self._write = (
            otlp_encode.to_protobuf if protocol == "http/protobuf" else otlp_encode.to_json
        )
        self._last_log = 0.0
        self._unlogged_answers = 0
        self._unlogged_spans = 0
        # Spans (data points) in the request on the wire: a partial_success is capped at it.
        self._sending = 0
        self._unreadable_warned = False

    def __repr__(self) -> str:
        return f"<OtlpReporter {self.protocol} {self.url}>"

    @property
    def rejected_data_points(self) -> int:
        """Data points of delivered metrics batches that receivers said they rejected."""
        inner = self.metrics
        return self._rejected_points + (0 if inner is None else inner._rejected_points)

    def close(self) -> None:
        """Close the connections (spans' and metrics'); later sends fail, retryably."""
        inner = self.metrics
        if inner is not None:
            inner.close()
        super().close()

    def encode(self, data: Batch) -> tuple[list[bytes], int]:
        """The request bodies for one batch (uncompressed; none when it has nothing of this
        reporter's signal) and how many records were left out as unusable."""
        requests, skipped = self._requests(data)
        return [body for body, _ in requests], skipped

    def _requests(self, data: Batch) -> tuple[list[tuple[bytes, int]], int]:
        """``encode``'s bodies, each with the spans (data points) it carries."""
        if self.signal == "metrics":
            # A metrics batch is one registry's state: small, never split.
            write = (
                otlp_metrics.to_protobuf
                if self.protocol == "http/protobuf"
                else otlp_metrics.to_json
            )
            body = write(data, self.resource_attributes) if "metrics" in data else None
            if body is None:
                return [], 0
            points = sum(len(metric[4]) for metric in otlp_metrics.prepare(data))
            return [(body, points)], 0
        groups, skipped = otlp_encode.prepare(data, self.resource_attributes)
        bodies: list[tuple[bytes, int]] = []
        pending = [groups] if groups else []
        while pending:
            part = pending.pop(0)
            body = self._write(part)
            count = otlp_encode.count(part)
            if len(body) > self.max_request_bytes and count > 1:
                first, second = otlp_encode.split(part)
                pending[:0] = [first, second]
                continue
            bodies.append((body, count))
        return bodies, skipped

    def send(self, data: Batch, callback: Callback) -> None:
        """POST one batch (in several requests when it is too large), then call ``callback``
        exactly once; never raises on a delivery error. A metrics batch goes to :attr:`metrics`."""
        inner = self.metrics
        if inner is not None and "metrics" in data:
            inner.send(data, callback)
            return
        error: BaseException | None = None
        try:
            bodies, skipped = self._requests(data)
            requests = [(*self.target.request(body, self.gzip), count) for body, count in bodies]
        except Exception as exc:
            error = DeliveryError(
                f"otlp reporter failed on this batch: {type(exc).__name__}: {exc}",
                retryable=False,
            )
        else:
            with self._locked():
                if self._closed:
                    error = DeliveryError("otlp reporter is closed", retryable=True)
                else:
                    for body, headers, count in requests:
                        self._sending = count
                        error = self._post(body, headers)
                        if error is not None:
                            break
                    if error is None and skipped:
                        self._note_rejected(skipped, "records without valid trace or span ids")
        callback(error)

    def _post(self, body: bytes, headers: Mapping[str, str]) -> DeliveryError | None:
        answer = self._connection.post(body, headers, POLICY.max_answer)
        if isinstance(answer, DeliveryError):
            return answer
        if answer.status == 200 and answer.body:
            self._read_partial_success(answer, answer.body)
        return POLICY.judge(answer, self.url)

    def _read_partial_success(self, answer: _http.Answer, body: bytes) -> None:
        try:
            if (answer.header("Content-Encoding") or "").lower() == "gzip":
                body = _gunzip(body, _MAX_RESPONSE)
            rejected, message = _partial_success(
                body, _content_type(answer, self.protocol), self.signal
            )
        except Exception as exc:
            # Whatever the receiver's bytes make the decoders raise (not JSON, nested past the
            # recursion limit, not protobuf, a gzip bomb): still a 200, the batch was taken.
            self._warn_unreadable(exc)
            return
        # The receiver cannot have rejected more than it was sent.
        rejected = min(rejected, self._sending)
        if rejected or message:
            self._note_rejected(rejected, message or "no reason given")

    def _drop_connection(self) -> None:
        self._connection.drop()

    def _warn_unreadable(self, exc: BaseException) -> None:
        if self._unreadable_warned:
            return
        self._unreadable_warned = True
        what = (
            "ExportMetricsServiceResponse"
            if self.signal == "metrics"
            else ("ExportTraceServiceResponse")
        )
        log.warning(
            "tracer: OTLP receiver %s answered 200 with a body tracer could not read as an %s"
            " (%s: %s); the batches count as delivered and any partial_success in such an"
            " answer is not counted (said once)",
            self.url,
            what,
            type(exc).__name__,
            clean_text(str(exc), 200),
        )

    def _note_rejected(self, rejected: int, message: str) -> None:
        # Called with the connection's lock held (inside send), so the counts need no other.
        message = clean_text(message, _MAX_MESSAGE)
        what = "data points" if self.signal == "metrics" else "spans"
        if self.signal == "metrics":
            self._rejected_points += rejected
        else:
            self.rejected_spans += rejected
        self._unlogged_answers += 1
        self._unlogged_spans += rejected
        now = time.monotonic()
        if self._last_log and now - self._last_log < _LOG_EVERY:
            return
        self._last_log = now
        answers, spans = self._unlogged_answers, self._unlogged_spans
        self._unlogged_answers = self._unlogged_spans = 0
        more = ""
        if answers > 1:
            more = f" ({answers} such answers, {spans} spans, since the last line)"
        if spans:
            log.warning(
                "tracer: OTLP receiver %s rejected %d %s of delivered batches: %s%s;"
                " rejected_%s=%d",
                self.url,
                rejected,
                what,
                message,
                more.replace("spans", what),
                what.replace(" ", "_"),
                self._rejected_points if self.signal == "metrics" else self.rejected_spans,
            )
        else:
            log.warning("tracer: OTLP receiver %s warned: %s%s", self.url, message, more)


def _gunzip(data: bytes, limit: int) -> bytes:
    """``data`` gunzipped, refused (ValueError) past ``limit`` bytes: a small answer can inflate
    a thousandfold."""
    inflater = zlib.decompressobj(wbits=31)
    out = inflater.decompress(data, limit + 1)
    if len(out) > limit:
        raise ValueError(f"the gzip body inflates past {limit} bytes")
    return out


def _count(value: object) -> int:
    """A ``rejected_*`` count of an OTLP/JSON answer: a whole number, or the decimal string the
    JSON mapping writes an int64 as; anything else (negative, a fraction, a bool, text) is 0."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(0, value)
    if isinstance(value, float):
        return int(value) if value.is_integer() and value > 0 else 0
    if isinstance(value, str) and _DECIMAL.fullmatch(value.strip()):
        return int(value.strip())
    return 0


def _content_type(answer: _http.Answer, protocol: str) -> str:
    value = (answer.header("Content-Type") or "").split(";")[0].strip().lower()
    return value or CONTENT_TYPES[protocol]


def _partial_success(answer: bytes, content_type: str, signal: str = "traces") -> tuple[int, str]:
    """``(rejected_spans, error_message)`` of an ``ExportTraceServiceResponse``, or
    ``(rejected_data_points, error_message)`` of an ``ExportMetricsServiceResponse``."""
    field, camel = (
        ("rejected_data_points", "rejectedDataPoints")
        if signal == "metrics"
        else ("rejected_spans", "rejectedSpans")
    )
    if content_type == "application/json" or answer[:1] == b"{":
        document = json.loads(answer)
        if not isinstance(document, dict):
            return 0, ""
        partial = document.get("partialSuccess", document.get("partial_success"))
        if not isinstance(partial, dict):
            return 0, ""
        rejected = partial.get(camel, partial.get(field, 0))
        message = partial.get("errorMessage", partial.get("error_message", ""))
        return _count(rejected), message if isinstance(message, str) else ""
    if signal == "metrics":
        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
            ExportMetricsServiceResponse,
        )

        metrics_response = ExportMetricsServiceResponse.FromString(answer)
        if not metrics_response.HasField("partial_success"):
            return 0, ""
        points = metrics_response.partial_success
        return max(0, int(points.rejected_data_points)), points.error_message
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceResponse,
    )

    response = ExportTraceServiceResponse.FromString(answer)
    if not response.HasField("partial_success"):
        return 0, ""
    partial = response.partial_success
    return max(0, int(partial.rejected_spans)), partial.error_message


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7


def _status_message(data: bytes) -> str | None:
    """The ``message`` (field 2) of a binary ``google.rpc.Status``, read without its classes."""
    at = 0
    while at < len(data):
        key, at = _varint(data, at)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, at = _varint(data, at)
        elif wire == 1:
            at += 8
        elif wire == 5:
            at += 4
        elif wire == 2:
            length, at = _varint(data, at)
            chunk = data[at : at + length]
            at += length
            if field == 2:
                return chunk.decode("utf-8", errors="replace")
        else:
            return None
    return None


def _describe_error(snippet: bytes, answer: _http.Answer) -> str:
    """The reason an error answer gives: its Status message, else its text."""
    if not snippet:
        return ""
    content_type = (answer.header("Content-Type") or "").split(";")[0].strip().lower()
    try:
        if content_type == "application/x-protobuf":
            message = _status_message(snippet)
            if message is not None:
                return message.strip()
        elif content_type == "application/json":
            document = json.loads(snippet)
            if isinstance(document, dict) and isinstance(document.get("message"), str):
                return str(document["message"]).strip()
    except (ValueError, RecursionError):
        pass
    return snippet.decode("utf-8", errors="replace").strip()


#: OTLP/HTTP's statuses: only 429, 502, 503 and 504 retry; a 200 is read for partial_success.
POLICY = _http.StatusPolicy(
    retryable=RETRYABLE_STATUSES, max_answer=_MAX_RESPONSE, describe=_describe_error
)


def traces_url(endpoint: str) -> str:
    """``<endpoint>/v1/traces``; an endpoint whose path already ends so is used as it is."""
    parts = urllib.parse.urlsplit(endpoint.strip())
    path = parts.path.rstrip("/")
    if path.endswith("/v1/traces"):
        return endpoint.strip()
    return urllib.parse.urlunsplit(parts._replace(path=path + "/v1/traces"))


def metrics_url(endpoint: str) -> str:
    """``<endpoint>/v1/metrics``; an endpoint whose path already ends so is used as it is, and
    one that ends in ``/v1/traces`` has that replaced."""
    parts = urllib.parse.urlsplit(endpoint.strip())
    path = parts.path.rstrip("/")
    if path.endswith("/v1/metrics"):
        return endpoint.strip()
    if path.endswith("/v1/traces"):
        path = path[: -len("/v1/traces")]
    return urllib.parse.urlunsplit(parts._replace(path=path + "/v1/metrics"))


def create(
    endpoint: str | None = None,
    protocol: str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float | None = None,
    compression: str | None = None,
    *,
    ca_file: str | os.PathLike[str] | None = None,
    client_cert: str | os.PathLike[str] | None = None,
    client_key: str | os.PathLike[str] | None = None,
    verify: bool = True,
    resource_attributes: Mapping[str, Any] | None = None,
    max_request_bytes: int = MAX_REQUEST_BYTES,
    env: Mapping[str, str] | None = None,
    metrics_endpoint: str | None = None,
) -> OtlpReporter:
    """Create a reporter that sends each batch to an OTLP/HTTP receiver.

    Every option left out is read from OpenTelemetry's variables (see
    :mod:`tracer.reporters.otel_env`: the ``OTEL_EXPORTER_OTLP_TRACES_*`` one, else the
    ``OTEL_EXPORTER_OTLP_*`` one), else takes its default:

    * ``endpoint``: the receiver's base URL; batches go to ``<endpoint>/v1/traces`` (a URL that
      already ends in ``/v1/traces`` is used as it is). Default ``http://localhost:4318``.
      ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is used as it is, ``OTEL_EXPORTER_OTLP_ENDPOINT``
      gets ``/v1/traces``.
    * ``protocol``: ``"http/protobuf"`` (default; needs the ``otlp`` extra:
      ``pip install 'dapper-tracer[otlp]'``) or ``"http/json"``. ``"grpc"`` is refused.
    * ``headers``: added to every request (an API key, say).
    * ``timeout``: seconds for connecting and each socket read or write (default 10; the
      variables give milliseconds).
    * ``compression``: ``"gzip"`` (default) or ``"none"``.
    * ``ca_file`` (``..._CERTIFICATE``), ``client_cert`` and ``client_key``
      (``..._CLIENT_CERTIFICATE``, ``..._CLIENT_KEY``) for TLS and mutual TLS; ``verify=False``
      turns certificate checks off and must be asked for.

    ``resource_attributes`` are added to every span's resource (default:
    ``OTEL_RESOURCE_ATTRIBUTES``). ``env`` is where the variables are read (default
    ``os.environ``). Raises ``ValueError`` for anything it cannot use, naming the option or the
    variable.

    Metrics batches go to ``metrics_endpoint`` (a full URL, used as it is), else
    ``<endpoint>/v1/metrics``, else ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`` (as it is), else
    ``<OTEL_EXPORTER_OTLP_ENDPOINT>/v1/metrics``; the options left out come from the
    ``OTEL_EXPORTER_OTLP_METRICS_*`` variables, else the generic ones.
    """
    env = os.environ if env is None else env
    options: dict[str, Any] = {
        "protocol": protocol,
        "headers": headers,
        "timeout": timeout,
        "compression": compression,
        "ca_file": ca_file,
        "client_cert": client_cert,
        "client_key": client_key,
        "verify": verify,
        "resource_attributes": resource_attributes,
        "max_request_bytes": max_request_bytes,
        "env": env,
    }
    reporter = _build("traces", endpoint, None, **options)
    reporter.metrics = _build("metrics", endpoint, metrics_endpoint, **options)
    return reporter


def _build(
    signal: str,
    endpoint: str | None,
    full_url: str | None,
    *,
    protocol: str | None,
    headers: Mapping[str, str] | None,
    timeout: float | None,
    compression: str | None,
    ca_file: str | os.PathLike[str] | None,
    client_cert: str | os.PathLike[str] | None,
    client_key: str | os.PathLike[str] | None,
    verify: bool,
    resource_attributes: Mapping[str, Any] | None,
    max_request_bytes: int,
    env: Mapping[str, str],
) -> OtlpReporter:
    """One signal's reporter (see :func:`create`)."""
    found = otel_env.otlp_settings(env, signal)
    to_url = metrics_url if signal == "metrics" else traces_url

    def pick(name: str, given: Any) -> tuple[Any, str]:
        if given is not None:
            return given, name
        if name in found:
            value, where = found[name]
            return value, where
        return None, name

    url_value, url_where = pick("endpoint", endpoint)
    if full_url is not None:
        url_value, url_where = full_url, "metrics_endpoint"
    if url_value is None:
        url = to_url(DEFAULT_ENDPOINT)
    elif not isinstance(url_value, str):
        raise ValueError(f"otlp reporter: {url_where} must be a URL string")
    elif url_where == "endpoint":
        url = to_url(url_value)
    else:
        url = url_value

    protocol_value, protocol_where = pick("protocol", protocol)
    chosen = "http/protobuf" if protocol_value is None else str(protocol_value).strip().lower()
    if chosen == "grpc":
        raise ValueError(
            f"otlp reporter: {protocol_where}: grpc is not offered; use http/protobuf (or"
            " http/json) and the receiver's OTLP/HTTP port, 4318 by default"
        )
    if chosen not in PROTOCOLS:
        raise ValueError(
            f"otlp reporter: {protocol_where} must be one of {', '.join(PROTOCOLS)},"
            f" got {protocol_value!r}"
        )
    available = (
        otlp_metrics.protobuf_available if signal == "metrics" else otlp_encode.protobuf_available
    )
    if chosen == "http/protobuf" and not available():
        raise ValueError(
            f"otlp reporter: {protocol_where} http/protobuf needs the opentelemetry-proto"
            " package: pip install 'dapper-tracer[otlp]', or use protocol http/json"
        )

    compression_value, compression_where = pick("compression", compression)
    squeeze = "gzip" if compression_value is None else str(compression_value).strip().lower()
    if squeeze not in ("gzip", "none"):
        raise ValueError(
            f"otlp reporter: {compression_where} must be gzip or none, got {compression_value!r}"
        )

    timeout_value, timeout_where = pick("timeout", timeout)
    seconds = DEFAULT_TIMEOUT if timeout_value is None else timeout_value
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
        raise ValueError(f"otlp reporter: {timeout_where} must be a positive number of seconds")

    extra_headers, headers_where = pick("headers", headers)
    for name, value in (extra_headers or {}).items():
        try:
            _http.check_header(name, value)
        except ValueError as exc:
            # Named once, with where the header came from: an OTEL_* variable or the option.
            raise ValueError(f"otlp reporter: {headers_where}: {exc}") from None
    ca, _ = pick("ca_file", ca_file)
    cert, cert_where = pick("client_cert", client_cert)
    key, _ = pick("client_key", client_key)
    if resource_attributes is None:
        resource_attributes = otel_env.resource_attributes(env)
    if isinstance(max_request_bytes, bool) or not isinstance(max_request_bytes, int):
        raise ValueError("otlp reporter: max_request_bytes must be a whole number")
    if max_request_bytes < 1024:
        raise ValueError("otlp reporter: max_request_bytes must be at least 1024")

    # The body's type is the protocol's; Accept and User-Agent are ours unless given.
    own = {
        "User-Agent": f"tracer-otlp/{otlp_encode.sdk_version()}",
        "Accept": CONTENT_TYPES[chosen],
    }
    target = _http.HttpTarget.create(
        url, headers=extra_headers, timeout=seconds, ca_file=ca, verify=verify,
        defaults=own, fixed={"Content-Type": CONTENT_TYPES[chosen]}, name="otlp reporter",
    )  # fmt: skip
    if cert is not None:
        if target.ssl_context is None:
            raise ValueError(f"otlp reporter: {cert_where} needs an https endpoint, not {url!r}")
        try:
            target.ssl_context.load_cert_chain(cert, key)
        except (OSError, ValueError) as exc:
            raise ValueError(f"otlp reporter: {cert_where}: cannot load {cert!r}: {exc}") from None
    return OtlpReporter(
        target,
        signal=signal,
        protocol=chosen,
        resource_attributes=resource_attributes,
        max_request_bytes=max_request_bytes,
        gzip=squeeze == "gzip",
    )
