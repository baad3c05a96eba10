from __future__ import annotations

import email.utils
import gzip
import os
import socket
import ssl
import time
from typing import Any

import pytest

from reporters import http as http_reporter
from reporters.base import DeliveryError
from tests.conftest import refused_port

from .helpers import Certs, HttpSink, Outcomes, wait_child

BATCH: dict[str, Any] = {
    "service": "checkout",
    "host": "web-1",
    "pid": 4242,
    "sent_at_us": 1_714_564_800_000_000,
    "spans": [{"trace_id": "a" * 32, "span_id": "b" * 16, "name": "GET /", "tags": {"é": "ü"}}],
}


def send(reporter: http_reporter.HttpReporter, data: dict[str, Any] = BATCH) -> Outcomes:
    outcomes = Outcomes()
    reporter.send(data, outcomes)
    return outcomes


def url(sink: HttpSink, path: str = "/v1/spans") -> str:
    return f"http://127.0.0.1:{sink.port}{path}"


def test_2xx_delivers_a_gzip_json_body(http_sink: HttpSink) -> None:
    reporter = http_reporter.create(url(http_sink, "/v1/spans?key=k1"), headers={"X-Api": "t"})

    assert send(reporter).only is None

    (request,) = http_sink.received
    assert request.path == "/v1/spans?key=k1"
    assert request.body == BATCH
    assert request.headers["Content-Encoding"] == "gzip"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Api"] == "t"
    assert gzip.decompress(request.raw_body).startswith(b'{"service":"checkout"')
    reporter.close()


def test_gzip_false_sends_plain_json(http_sink: HttpSink) -> None:
    reporter = http_reporter.create(url(http_sink), gzip=False)
    assert send(reporter).only is None
    (request,) = http_sink.received
    assert "Content-Encoding" not in request.headers
    assert request.raw_body.decode("utf-8").startswith('{"service":"checkout"')
    assert request.body == BATCH
    reporter.close()


def test_503_with_retry_after_twice_then_200(http_sink: HttpSink) -> None:
    http_sink.plan = [(503, {"Retry-After": "7"}, b"busy")] * 2
    reporter = http_reporter.create(url(http_sink))

    for _ in range(2):
        error = send(reporter).error()
        assert error.retryable is True
        assert error.retry_after == 7.0
        assert "503" in str(error)
    assert send(reporter).only is None

    assert [r.body for r in http_sink.received] == [BATCH] * 3
    reporter.close()


def test_retry_after_as_an_http_date(http_sink: HttpSink) -> None:
    later = email.utils.formatdate(time.time() + 120, usegmt=True)
    http_sink.plan = [(503, {"Retry-After": later}, b"")]
    reporter = http_reporter.create(url(http_sink))
    error = send(reporter).error()
    assert error.retry_after is not None
    assert 100 < error.retry_after <= 121
    reporter.close()


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_retryable_statuses(http_sink: HttpSink, status: int) -> None:
    http_sink.plan = [(status, {}, b"")]
    reporter = http_reporter.create(url(http_sink))
    error = send(reporter).error()
    assert error.retryable is True
    assert error.retry_after is None
    assert f"HTTP {status}" in str(error)
    reporter.close()


@pytest.mark.parametrize("status", [400, 401, 404, 413, 501, 301])
def test_other_statuses_are_not_retryable(http_sink: HttpSink, status: int) -> None:
    http_sink.plan = [(status, {"Location": "http://elsewhere/"}, b"bad field: spans")]
    reporter = http_reporter.create(url(http_sink))
    error = send(reporter).error()
    assert error.retryable is False
    assert f"HTTP {status}" in str(error)
    assert "bad field: spans" in str(error)
    # The connection is usable (or re-made) for the next batch.
    assert send(reporter).only is None
    reporter.close()


def test_keep_alive_connection_is_reused(http_sink: HttpSink) -> None:
    reporter = http_reporter.create(url(http_sink))
    for _ in range(3):
        assert send(reporter).only is None
    ports = {r.client_port for r in http_sink.received}
    assert len(http_sink.received) == 3
    assert len(ports) == 1
    reporter.close()


def test_reconnects_when_the_server_closed_the_idle_connection(http_sink: HttpSink) -> None:
    http_sink.close_after_response = True
    reporter = http_reporter.create(url(http_sink))
    for _ in range(3):
        assert send(reporter).only is None
    # Each batch arrived once, each on its own connection.
    assert len(http_sink.received) == 3
    assert len({r.client_port for r in http_sink.received}) == 3
    reporter.close()


def test_connection_refused_is_retryable() -> None:
    with refused_port() as port:
        reporter = http_reporter.create(f"http://127.0.0.1:{port}/")
        error = send(reporter).error()
    assert error.retryable is True
    assert isinstance(error.__cause__, ConnectionRefusedError)


def test_a_server_that_never_answers_times_out() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    reporter = http_reporter.create(f"http://127.0.0.1:{listener.getsockname()[1]}/", timeout=0.3)
    try:
        error = send(reporter).error()
        assert error.retryable is True
        assert "timed out" in str(error)
    finally:
        reporter.close()
        listener.close()


def test_https_verified_with_ca_file(certs: Certs) -> None:
    sink = HttpSink().start(ssl_context=certs.server_context())
    try:
        reporter = http_reporter.create(f"https://localhost:{sink.port}/in", ca_file=str(certs.ca))
        assert send(reporter).only is None
        assert sink.received[0].body == BATCH

        untrusted = http_reporter.create(f"https://localhost:{sink.port}/in")
        error = send(untrusted).error()
        assert isinstance(error.__cause__, ssl.SSLCertVerificationError)
        assert len(sink.received) == 1
        reporter.close()
        untrusted.close()
    finally:
        sink.stop()


def test_https_hostname_mismatch_is_rejected(certs: Certs) -> None:
    sink = HttpSink().start(ssl_context=certs.server_context(other=True))
    try:
        reporter = http_reporter.create(f"https://127.0.0.1:{sink.port}/", ca_file=str(certs.ca))
        error = send(reporter).error()
        assert isinstance(error.__cause__, ssl.SSLCertVerificationError)
        assert "mismatch" in str(error)
        assert sink.received == []
    finally:
        sink.stop()


def test_credentials_in_the_url_become_basic_auth(http_sink: HttpSink) -> None:
    reporter = http_reporter.create(f"http://user:p%40ss@127.0.0.1:{http_sink.port}/")
    assert "p%40ss" not in repr(reporter) and "user" not in reporter.url
    assert send(reporter).only is None
    # base64("user:p@ss")
    assert http_sink.received[0].headers["Authorization"] == "Basic dXNlcjpwQHNz"
    reporter.close()


@pytest.mark.parametrize(
    "bad",
    [
        "ftp://127.0.0.1/",
        "127.0.0.1:8080/spans",
        "http://",
        "http://127.0.0.1:99999/",
        "http://127.0.0.1:80a/",
        "http://local host/",
    ],
)
def test_bad_urls_are_refused_at_create(bad: str) -> None:
    with pytest.raises(ValueError, match="http reporter"):
        http_reporter.create(bad)


def test_bad_headers_are_refused_at_create() -> None:
    with pytest.raises(ValueError, match="invalid header"):
        http_reporter.create("http://127.0.0.1/", headers={"X-A": "a\r\nInjected: 1"})
    with pytest.raises(ValueError, match="Latin-1"):
        http_reporter.create("http://127.0.0.1/", headers={"X-A": "snow ☃"})


def test_send_after_close_is_a_retryable_error(http_sink: HttpSink) -> None:
    reporter = http_reporter.create(url(http_sink))
    assert reporter.flush(1.0) is True
    reporter.close()
    error = send(reporter).error()
    assert error.retryable is True
    assert http_sink.received == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 0 ", 0.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 60.0),
        ("Wed, 21 Oct 2015 07:26:00 GMT", 0.0),
        ("soon", None),
        ("-5", None),
        ("1.5", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    now = 1445412420.0  # Wed, 21 Oct 2015 07:27:00 GMT
    assert http_reporter.parse_retry_after(value, now=now) == expected


def test_delivery_error_is_the_contract_type(http_sink: HttpSink) -> None:
    http_sink.plan = [(400, {}, b"")]
    reporter = http_reporter.create(url(http_sink))
    assert isinstance(send(reporter).only, DeliveryError)
    reporter.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_uses_its_own_connection(http_sink: HttpSink) -> None:
    reporter = http_reporter.create(url(http_sink))
    assert send(reporter).only is None
    with reporter._lock:  # as if a send were in flight on another thread at the fork
        pid = os.fork()
        if pid == 0:  # child
            code = 1
            try:
                if send(reporter).only is None:
                    code = 0
            finally:
                os._exit(code)
    assert wait_child(pid) == 0
    assert send(reporter).only is None
    ports = [r.client_port for r in http_sink.received]
    assert len(ports) == 3
    assert ports[0] == ports[2] != ports[1]
    reporter.close()


# -- The shared HTTP layer: HttpTarget, Connection.post() and StatusPolicy ----------------------


def _create(kind: str, url: object, **options: Any) -> Any:
    from reporters import logstash, otlp, zipkin

    if kind == "otlp":
        return otlp.create(endpoint=url, protocol="http/json", env={}, **options)
    if kind == "zipkin":
        return zipkin.create(url, env={}, **options)
    if kind == "logstash":
        return logstash.create(type="http", url=url, **options)
    return http_reporter.create(url, **options)


@pytest.mark.parametrize("kind", ["http", "otlp", "zipkin", "logstash"])
@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        ("ftp://h/", {}, "url must start with http:// or https://"),
        ("http://h:99999/", {}, "bad port in url"),
        ("http:///x", {}, "url has no host"),
        ("http://h/", {"timeout": -1}, "must be"),
    ],
)
def test_every_http_reporter_names_itself_once_in_what_its_target_refuses(
    kind: str, url: str, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError) as refused:
        _create(kind, url, **options)
    text = str(refused.value)
    prefix = "logstash:" if kind == "logstash" else f"{kind} reporter:"
    assert text.startswith(prefix) and message in text
    assert text.count("reporter") <= 1 and "http reporter" not in text.replace(prefix, "", 1)


def test_the_target_merges_defaults_given_and_fixed_headers_once() -> None:
    target = http_reporter.HttpTarget.create(
        "https://u:p%40ss@collector:8443/v1/traces?x=1",
        headers={"accept": "text/plain", "Content-Type": "text/csv", "X-Key": "k"},
        defaults={"User-Agent": "ua", "Accept": "a/b"},
        fixed={"content-type": "application/x-protobuf"},
        timeout=2,
        name="otlp reporter",
    )
    assert target.url == "https://collector:8443/v1/traces"
    assert (target.host, target.port, target.path) == ("collector", 8443, "/v1/traces?x=1")
    assert target.ssl_context is not None and target.timeout == 2.0
    assert {k.lower(): v for k, v in target.headers.items()} == {
        "user-agent": "ua",
        "accept": "text/plain",
        "content-type": "application/x-protobuf",
        "x-key": "k",
        "authorization": "Basic dTpwQHNz",
    }
    body, headers = target.request(b"{}" * 100, gzip=True)
    assert gzip.decompress(body) == b"{}" * 100
    assert headers["Content-Encoding"] == "gzip" and headers["Content-Length"] == str(len(body))


def test_post_gives_the_answer_and_the_policy_judges_it(http_sink: HttpSink) -> None:
    target = http_reporter.HttpTarget.create(f"http://127.0.0.1:{http_sink.port}/in")
    connection = http_reporter.Connection(target)
    http_sink.plan = [(503, {"Retry-After": "7"}, b"busy")]
    try:
        answer = connection.post(*target.request(b"[]", gzip=False), 1024)
        assert isinstance(answer, http_reporter.Answer) and answer.status == 503
        error = http_reporter.HTTP_POLICY.judge(answer, target.url)
        assert error is not None and error.retryable and error.retry_after == 7.0
        assert str(error) == f"HTTP 503 Service Unavailable from {target.url}: busy"
        strict = http_reporter.StatusPolicy(retryable=frozenset())
        final = strict.judge(answer, target.url)
        assert final is not None and not final.retryable
    finally:
        connection.drop()
