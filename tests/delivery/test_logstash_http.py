"""The Logstash reporter's http transport: Logstash's http input with its json codec."""

from __future__ import annotations

import gzip
from typing import Any

import pytest

import reporters
from reporters import logstash

from .helpers import START_US, Certs, HttpSink, LineServer, batch, send, span


def test_one_post_per_batch_with_a_json_array_of_the_tcp_events(
    http_sink: HttpSink, line_server: LineServer
) -> None:
    data = batch(span(), span(span_id="c" * 16, service="payments", start_us=START_US + 1_000))
    over_http = logstash.create(type="http", url=f"http://127.0.0.1:{http_sink.port}/spans")
    over_tcp = logstash.create(host="127.0.0.1", port=line_server.port)
    try:
        assert send(over_http, data).only is None
        assert send(over_tcp, data).only is None

        (request,) = http_sink.received
        assert request.path == "/spans"
        assert request.headers["Content-Type"] == "application/json"
        assert "Content-Encoding" not in request.headers
        assert request.raw_body.startswith(b'[{"@timestamp":"2024-05-01T12:00:00.123Z"')
        assert request.body == line_server.get_records(2)
        assert request.body[0] == {
            "@timestamp": "2024-05-01T12:00:00.123Z",
            "@version": "1",
            "service": "checkout",
            "host": "web-1",
            "pid": 4242,
            **span(),
        }
        assert over_http.type == "http"
        assert over_http.url == f"http://127.0.0.1:{http_sink.port}/spans"
    finally:
        over_http.close()
        over_tcp.close()


def test_gzip_is_optional(http_sink: HttpSink) -> None:
    reporter = logstash.create(url=f"http://127.0.0.1:{http_sink.port}/", gzip=True)
    try:
        assert send(reporter, batch(span(name="packed"))).only is None
        (request,) = http_sink.received
        assert request.headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(request.raw_body).startswith(b"[{")
        assert request.body[0]["name"] == "packed"
    finally:
        reporter.close()


def test_a_metrics_batch_is_an_array_of_one(http_sink: HttpSink) -> None:
    reporter = logstash.create(url=f"http://127.0.0.1:{http_sink.port}/")
    metrics = {"service": "checkout", "sent_at_us": START_US, "metrics": {"rss": 1024}}
    try:
        assert send(reporter, metrics).only is None
        (request,) = http_sink.received
        assert request.body == [
            {"@timestamp": "2024-05-01T12:00:00.123Z", "@version": "1", **metrics}
        ]
    finally:
        reporter.close()


def test_an_empty_batch_is_delivered_without_a_request(http_sink: HttpSink) -> None:
    reporter = logstash.create(url=f"http://127.0.0.1:{http_sink.port}/")
    assert send(reporter, batch()).only is None
    assert http_sink.received == []
    reporter.close()


def test_503_with_retry_after_is_retryable_then_delivered(http_sink: HttpSink) -> None:
    http_sink.plan = [(503, {"Retry-After": "7"}, b"busy")]
    reporter = logstash.create(url=f"http://127.0.0.1:{http_sink.port}/")
    try:
        error = send(reporter, batch(span(name="later"))).error()
        assert error.retryable is True
        assert error.retry_after == 7.0
        assert "503" in str(error)
        assert send(reporter, batch(span(name="later"))).only is None
        assert [r.body[0]["name"] for r in http_sink.received] == ["later", "later"]
    finally:
        reporter.close()


def test_429_from_a_busy_logstash_is_retryable(http_sink: HttpSink) -> None:
    http_sink.plan = [(429, {}, b"")]
    reporter = logstash.create(url=f"http://127.0.0.1:{http_sink.port}/")
    try:
        error = send(reporter, batch(span())).error()
        assert error.retryable is True
        assert error.retry_after is None
    finally:
        reporter.close()


def test_400_is_not_retryable(http_sink: HttpSink) -> None:
    http_sink.plan = [(400, {}, b"bad json")]
    reporter = logstash.create(url=f"http://127.0.0.1:{http_sink.port}/")
    try:
        error = send(reporter, batch(span())).error()
        assert error.retryable is False
        assert "400" in str(error)
        assert "bad json" in str(error)
    finally:
        reporter.close()


def test_url_defaults_to_host_and_port_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, http_sink: HttpSink
) -> None:
    monkeypatch.setenv("LOGSTASH_TYPE", "http")
    monkeypatch.setenv("LOGSTASH_HOST", "127.0.0.1")
    monkeypatch.setenv("LOGSTASH_PORT", str(http_sink.port))
    reporter = logstash.create()
    try:
        assert reporter.url == f"http://127.0.0.1:{http_sink.port}/"
        assert (reporter.host, reporter.port) == ("127.0.0.1", http_sink.port)
        assert send(reporter, batch(span(name="from env"))).only is None
        assert http_sink.received[0].body[0]["name"] == "from env"
    finally:
        reporter.close()


def test_default_port_is_8080(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LOGSTASH_HOST", "LOGSTASH_PORT", "LOGSTASH_TYPE"):
        monkeypatch.delenv(name, raising=False)
    reporter = logstash.create(type="http")
    assert reporter.url == "http://localhost:8080/"
    assert logstash.create(type="http", tls=True).url == "https://localhost:8080/"


def test_created_by_name(http_sink: HttpSink) -> None:
    reporter = reporters.create("logstash", type="http", host="127.0.0.1", port=http_sink.port)
    try:
        assert send(reporter, batch(span(name="by name"))).only is None
        assert http_sink.received[0].body[0]["name"] == "by name"
    finally:
        reporter.close()


def test_https_with_ca_file(certs: Certs) -> None:
    sink = HttpSink().start(ssl_context=certs.server_context())
    reporter = logstash.create(url=f"https://127.0.0.1:{sink.port}/", ca_file=str(certs.ca))
    try:
        assert send(reporter, batch(span(name="secure"))).only is None
        assert sink.received[0].body[0]["name"] == "secure"
    finally:
        reporter.close()
        sink.stop()


def test_send_after_close_is_a_retryable_error(http_sink: HttpSink) -> None:
    reporter = logstash.create(url=f"http://127.0.0.1:{http_sink.port}/")
    reporter.close()
    error = send(reporter, batch(span())).error()
    assert error.retryable is True
    assert "closed" in str(error)
    assert http_sink.received == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"type": "http", "url": "ftp://x/"}, "http:// or https://"),
        ({"url": "http://x/", "host": "y"}, "either url or host"),
        ({"url": "http://x/", "tls": True}, "need an https:// url"),
        ({"url": "https://x/", "server_hostname": "y"}, "server_hostname"),
        ({"type": "tcp", "headers": {"X-A": "b"}}, "url and headers are for type='http'"),
    ],
)
def test_bad_http_options_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        logstash.create(**options)
