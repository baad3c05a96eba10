"""Logstash's http input: one POST per batch, the body a JSON array of the batch's events (the
input's json codec makes one event per element); the answer is judged as the HTTP reporter's
(see :mod:`tracer.reporters.logstash`)."""

from __future__ import annotations

from tracer.encoding import encode_json
from tracer.reporters import http as _http
from tracer.reporters.base import Batch, Callback
from tracer.reporters.logstash.common import LogstashReporter, iter_records


class LogstashHttpReporter(LogstashReporter):
    """POSTs each batch to Logstash's http input; build one with
    ``logstash.create(type="http", ...)``. The HTTP layer is :mod:`tracer.reporters.http`'s:
    an :class:`~tracer.reporters.http.HttpReporter` with this module's encoder and the HTTP
    reporter's status policy, which keeps its own connection and lock."""

    type = "http"

    def __init__(self, target: _http.HttpTarget, *, gzip: bool = False) -> None:
        super().__init__(host=target.host, port=target.port, timeout=target.timeout)
        self._http = _http.HttpReporter(target, gzip=gzip, encoder=json_array)
        self.url = target.url

    def __repr__(self) -> str:
        return f"<LogstashReporter http {self.url}>"

    def send(self, data: Batch, callback: Callback) -> None:
        """POST one batch; answers are handled as :meth:`tracer.reporters.http.HttpReporter.send`
        handles them."""
        self._http.send(data, callback)

    def close(self) -> None:
        """Close the connection; later sends fail with a retryable ``DeliveryError``."""
        super().close()
        self._http.close()


def json_array(data: Batch) -> bytes | None:
    """The body for Logstash's http input: the batch's events as one JSON array."""
    events = [encode_json(record) for record in iter_records(data)]
    if not events:
        return None
    return b"[" + b",".join(events) + b"]"
