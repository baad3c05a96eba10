"""Zipkin reporter: each batch as one Zipkin v2 JSON list, ``POST /api/v2/spans``.

Zipkin itself, Jaeger's collector (its Zipkin port, 9411, once enabled) and Grafana Tempo (its
Zipkin receiver) accept it. :mod:`tracer.reporters.zipkin_encode` says what goes where.

The connection handling and the outcomes are :mod:`tracer.reporters.http`'s: 2xx (Zipkin answers
202) is delivered; 408, 429, 500, 502, 503, 504, connection errors and timeouts are retried
(``Retry-After`` honoured); any other status drops the batch, counted as ``rejected``. Zipkin
answers 202 once it has parsed the spans and handed them to its storage, which stores them
asynchronously: a storage failure after that answer is lost without the reporter knowing.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping

from tracer.encoding import encode_json
from tracer.reporters import http as _http
from tracer.reporters import otel_env, zipkin_encode
from tracer.reporters.base import Batch

__all__ = ["DEFAULT_URL", "ZipkinReporter", "create"]

DEFAULT_URL = otel_env.DEFAULT_ZIPKIN_ENDPOINT
DEFAULT_TIMEOUT = 10.0


class ZipkinReporter(_http.HttpReporter):
    """POSTs batches as Zipkin v2 JSON; build one with :func:`create`.

    ``rejected_spans`` counts the records it could not encode (ids that are not hex), which are
    left out of batches that are then counted as delivered.
    """

    def __init__(self, target: _http.HttpTarget, *, gzip: bool = True) -> None:
        super().__init__(target, gzip=gzip, encoder=self._encode_batch)
        self.rejected_spans = 0
        self._count_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<ZipkinReporter {self.url}>"

    def _encode_batch(self, data: Batch) -> bytes | None:
        spans, skipped = zipkin_encode.encode_spans(data)
        if skipped:
            with self._count_lock:
                self.rejected_spans += skipped
        if not spans:
            return None
        return encode_json(spans)


def create(
    url: str | None = None,
    headers: Mapping[str, str] | None = None,
    gzip: bool = True,
    timeout: float | None = None,
    ca_file: str | os.PathLike[str] | None = None,
    verify: bool = True,
    *,
    env: Mapping[str, str] | None = None,
) -> ZipkinReporter:
    """Create a reporter that POSTs each batch to a Zipkin v2 endpoint.

    ``url`` defaults to ``OTEL_EXPORTER_ZIPKIN_ENDPOINT``, else
    ``http://localhost:9411/api/v2/spans``; ``timeout`` (seconds, for connecting and each socket
    read or write) to ``OTEL_EXPORTER_ZIPKIN_TIMEOUT`` (milliseconds), else 10. ``headers``,
    ``gzip`` (Zipkin, Jaeger and the OpenTelemetry Collector decode it), ``ca_file`` and
    ``verify`` are as for :func:`tracer.reporters.http.create`. ``env`` is where the variables
    are read (default ``os.environ``). Raises ``ValueError`` for a URL, header or timeout it
    cannot use.
    """
    found = otel_env.zipkin_settings(os.environ if env is None else env)
    if url is None:
        url = found["url"][0] if "url" in found else DEFAULT_URL
    if timeout is None:
        timeout = found["timeout"][0] if "timeout" in found else DEFAULT_TIMEOUT
    target = _http.HttpTarget.create(
        url, headers=headers, timeout=timeout, ca_file=ca_file, verify=verify,
        name="zipkin reporter",
    )  # fmt: skip
    return ZipkinReporter(target, gzip=gzip)
