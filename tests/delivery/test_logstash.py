from __future__ import annotations

import json
import math
import os
import re
import socket
import ssl
import threading
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reporters import logstash
from reporters.base import DeliveryError

from .helpers import (
    START_US,
    Certs,
    LineServer,
    Outcomes,
    batch,
    send,
    span,
    strict_loads,
    wait_child,
)


def test_each_span_is_one_json_line_with_timestamp_and_version(line_server: LineServer) -> None:
    reporter = logstash.create(host="127.0.0.1", port=line_server.port)
    own = span(span_id="c" * 16, service="payments", start_us=START_US + 1_000)

    assert send(reporter, batch(span(), own)).only is None

    first, second = line_server.get_records(2)
    assert first == {
        "@timestamp": "2024-05-01T12:00:00.123Z",
        "@version": "1",
        "service": "checkout",
        "host": "web-1",
        "pid": 4242,
        **span(),
    }
    # A span's own service wins over the batch's; milliseconds come from its own start.
    assert second["service"] == "payments"
    assert second["host"] == "web-1"
    assert second["@timestamp"] == "2024-05-01T12:00:00.124Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["@timestamp"])
    reporter.close()


def test_metrics_batch_is_one_line(line_server: LineServer) -> None:
    reporter = logstash.create(host="127.0.0.1", port=line_server.port)
    metrics = {"service": "checkout", "sent_at_us": START_US, "metrics": {"rss": 1024}}

    assert send(reporter, metrics).only is None

    (record,) = line_server.get_records(1)
    assert record == {"@timestamp": "2024-05-01T12:00:00.123Z", "@version": "1", **metrics}
    reporter.close()


def test_nan_and_unserialisable_values_still_give_valid_json(line_server: LineServer) -> None:
    reporter = logstash.create(host="127.0.0.1", port=line_server.port)
    odd = span(tags={"ratio": math.nan, "big": math.inf, "obj": object(), 3: "int key"})

    assert send(reporter, batch(odd)).only is None

    (record,) = line_server.get_records(1)
    assert record["tags"]["ratio"] is None
    assert record["tags"]["big"] is None
    assert record["tags"]["obj"].startswith("<object object")
    assert record["tags"]["3"] == "int key"
    reporter.close()


def test_empty_batch_is_delivered_without_writing(line_server: LineServer) -> None:
    reporter = logstash.create(host="127.0.0.1", port=line_server.port)
    assert send(reporter, batch()).only is None
    assert line_server.accepted == 0
    reporter.close()


def test_reconnects_after_the_listener_goes_away_and_comes_back() -> None:
    server = LineServer()
    reporter = logstash.create(host="127.0.0.1", port=server.port, timeout=2)
    try:
        assert send(reporter, batch(span(name="before"))).only is None
        assert server.get_records(1)[0]["name"] == "before"
        server.pause()

        # The old connection is closed by the peer and nothing listens: an error, never a raise.
        error = send(reporter, batch(span(name="lost"))).error()
        assert error.retryable is True
        assert isinstance(error.__cause__, ConnectionRefusedError)

        server.resume()
        assert send(reporter, batch(span(name="after"))).only is None
        assert server.get_records(1)[0]["name"] == "after"
        assert server.accepted == 2  # one connection before the outage, one after
    finally:
        server.close()
        reporter.close()


def test_keeps_one_connection_for_many_batches(line_server: LineServer) -> None:
    reporter = logstash.create(host="127.0.0.1", port=line_server.port)
    for i in range(5):
        assert send(reporter, batch(span(name=f"n{i}"))).only is None
    names = [record["name"] for record in line_server.get_records(5)]
    assert names == [f"n{i}" for i in range(5)]
    assert line_server.accepted == 1
    reporter.close()


def test_tls_with_ca_file_is_verified_and_delivers(certs: Certs) -> None:
    server = LineServer(ssl_context=certs.server_context())
    reporter = logstash.create(host="127.0.0.1", port=server.port, ca_file=str(certs.ca))
    try:
        for i in range(3):
            assert send(reporter, batch(span(name=f"secure{i}"))).only is None
        assert [r["name"] for r in server.get_records(3)] == ["secure0", "secure1", "secure2"]
        # Session tickets a TLS 1.3 server sends are not mistaken for a closed connection.
        assert server.accepted == 1
    finally:
        reporter.close()
        server.close()


def test_tls_rejects_a_certificate_from_an_unknown_ca(certs: Certs) -> None:
    server = LineServer(ssl_context=certs.server_context())
    reporter = logstash.create(host="127.0.0.1", port=server.port, tls=True)
    try:
        error = send(reporter, batch(span())).error()
        assert error.retryable is True
        assert isinstance(error.__cause__, ssl.SSLCertVerificationError)
        assert server.lines.empty()
    finally:
        reporter.close()
        server.close()


def test_tls_rejects_a_hostname_mismatch(certs: Certs) -> None:
    server = LineServer(ssl_context=certs.server_context(other=True))
    reporter = logstash.create(host="127.0.0.1", port=server.port, ca_file=str(certs.ca))
    try:
        error = send(reporter, batch(span())).error()
        assert isinstance(error.__cause__, ssl.SSLCertVerificationError)
        assert "mismatch" in str(error)
    finally:
        reporter.close()
        server.close()


def test_tls_server_hostname_option_matches_the_certificate(certs: Certs) -> None:
    server = LineServer(ssl_context=certs.server_context(other=True))
    reporter = logstash.create(
        host="127.0.0.1",
        port=server.port,
        ca_file=str(certs.ca),
        server_hostname="other.example",
    )
    try:
        assert send(reporter, batch(span(name="named"))).only is None
        assert server.get_records(1)[0]["name"] == "named"
    finally:
        reporter.close()
        server.close()


def test_tls_verify_false_accepts_an_unknown_certificate(certs: Certs) -> None:
    server = LineServer(ssl_context=certs.server_context(other=True))
    reporter = logstash.create(host="127.0.0.1", port=server.port, tls=True, verify=False)
    try:
        assert send(reporter, batch(span(name="unverified"))).only is None
        assert server.get_records(1)[0]["name"] == "unverified"
    finally:
        reporter.close()
        server.close()


def test_a_silent_peer_times_out_instead_of_blocking() -> None:
    # A plain TCP listener that never answers the TLS handshake.
    listener = socket.create_server(("127.0.0.1", 0))
    reporter = logstash.create(
        host="127.0.0.1", port=listener.getsockname()[1], tls=True, verify=False, timeout=0.3
    )
    try:
        error = send(reporter, batch(span())).error()
        assert error.retryable is True
        assert isinstance(error.__cause__, (socket.timeout, TimeoutError))
    finally:
        reporter.close()
        listener.close()


def udp_receiver() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    return sock


def test_udp_sends_one_datagram_per_span() -> None:
    receiver = udp_receiver()
    port = receiver.getsockname()[1]
    reporter = logstash.create(type="udp", host="127.0.0.1", port=port)
    try:
        assert send(reporter, batch(span(name="one"), span(name="two"))).only is None
        datagrams = [receiver.recv(65536) for _ in range(2)]
        assert all(d.endswith(b"\n") and d.count(b"\n") == 1 for d in datagrams)
        assert [strict_loads(d)["name"] for d in datagrams] == ["one", "two"]
        assert strict_loads(datagrams[0])["@version"] == "1"
    finally:
        reporter.close()
        receiver.close()


def test_udp_drops_an_oversize_record_and_sends_the_rest() -> None:
    receiver = udp_receiver()
    reporter = logstash.create(
        type="udp", host="127.0.0.1", port=receiver.getsockname()[1], max_datagram_bytes=1000
    )
    try:
        data = batch(span(name="huge", tags={"blob": "x" * 2000}), span(name="small"))
        assert send(reporter, data).only is None
        assert strict_loads(receiver.recv(65536))["name"] == "small"
        assert reporter.dropped_oversize == 1

        error = send(reporter, batch(span(tags={"blob": "y" * 2000}))).error()
        assert error.retryable is False
        assert "1000-byte" in str(error)
        assert reporter.dropped_oversize == 2
    finally:
        reporter.close()
        receiver.close()


def test_environment_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    receiver = udp_receiver()
    monkeypatch.setenv("LOGSTASH_HOST", "127.0.0.1")
    monkeypatch.setenv("LOGSTASH_PORT", str(receiver.getsockname()[1]))
    monkeypatch.setenv("LOGSTASH_TYPE", "udp")
    reporter = logstash.create()
    try:
        assert (reporter.type, reporter.host) == ("udp", "127.0.0.1")
        assert send(reporter, batch(span(name="from env"))).only is None
        assert strict_loads(receiver.recv(65536))["name"] == "from env"
    finally:
        reporter.close()
        receiver.close()


def test_explicit_options_win_over_the_environment(
    monkeypatch: pytest.MonkeyPatch, line_server: LineServer
) -> None:
    monkeypatch.setenv("LOGSTASH_HOST", "nowhere.invalid")
    monkeypatch.setenv("LOGSTASH_PORT", "1")
    monkeypatch.setenv("LOGSTASH_TYPE", "udp")
    reporter = logstash.create(type="tcp", host="127.0.0.1", port=line_server.port)
    assert send(reporter, batch(span(name="explicit"))).only is None
    assert line_server.get_records(1)[0]["name"] == "explicit"
    reporter.close()


def test_defaults_without_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LOGSTASH_HOST", "LOGSTASH_PORT", "LOGSTASH_TYPE"):
        monkeypatch.delenv(name, raising=False)
    reporter = logstash.create()
    assert (reporter.type, reporter.host, reporter.port) == ("tcp", "localhost", 12201)


@pytest.mark.parametrize(
    ("options", "cls", "shown"),
    [
        ({"type": "tcp"}, "LogstashTcpReporter", "<LogstashReporter tcp://localhost:12201>"),
        (
            {"type": "TCP", "tls": True, "port": 6000},
            "LogstashTcpReporter",
            "<LogstashReporter tcp+tls://localhost:6000>",
        ),
        ({"type": "udp"}, "LogstashUdpReporter", "<LogstashReporter udp://localhost:12201>"),
        ({"type": "beats"}, "LogstashBeatsReporter", "<LogstashReporter beats://localhost:5044>"),
        (
            {"type": "http"},
            "LogstashHttpReporter",
            "<LogstashReporter http http://localhost:8080/>",
        ),
        ({"url": "http://h:1/x"}, "LogstashHttpReporter", "<LogstashReporter http http://h:1/x>"),
    ],
)
def test_each_transport_is_a_class_of_its_own_and_a_logstash_reporter(
    monkeypatch: pytest.MonkeyPatch, options: dict[str, Any], cls: str, shown: str
) -> None:
    for name in ("LOGSTASH_HOST", "LOGSTASH_PORT", "LOGSTASH_TYPE"):
        monkeypatch.delenv(name, raising=False)
    reporter = logstash.create(**options)
    assert type(reporter) is getattr(logstash, cls)
    assert isinstance(reporter, logstash.LogstashReporter)
    assert reporter.type == cls[len("Logstash") : -len("Reporter")].lower()
    assert repr(reporter) == shown
    reporter.close()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"type": "gelf"}, "type must be"),
        ({"port": "abc"}, "port must be a number"),
        ({"port": 70000}, "between 1 and 65535"),
        ({"type": "udp", "tls": True}, "TLS needs"),
        ({"timeout": 0}, "timeout"),
    ],
)
def test_bad_options_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        logstash.create(**options)


def test_bad_port_in_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOGSTASH_PORT", "12x")
    with pytest.raises(ValueError, match="port must be a number"):
        logstash.create()


def test_send_after_close_reports_a_retryable_error(line_server: LineServer) -> None:
    reporter = logstash.create(host="127.0.0.1", port=line_server.port)
    assert reporter.flush(1.0) is True
    reporter.close()
    error = send(reporter, batch(span())).error()
    assert error.retryable is True
    assert "closed" in str(error)


def test_close_from_another_thread_while_sending(line_server: LineServer) -> None:
    reporter = logstash.create(host="127.0.0.1", port=line_server.port)
    outcomes: list[Outcomes] = []

    def worker() -> None:
        for i in range(50):
            outcomes.append(send(reporter, batch(span(name=f"w{i}"))))

    thread = threading.Thread(target=worker)
    thread.start()
    reporter.close()
    thread.join(10)
    assert not thread.is_alive()
    assert len(outcomes) == 50
    results = [o.only for o in outcomes]
    # Every send got exactly one answer: delivered, or a "closed" error once close won.
    assert all(r is None or (isinstance(r, DeliveryError) and r.retryable) for r in results)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF)),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=5) | st.integers() | st.floats(), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_encode_json_always_gives_valid_utf8_json(value: Any) -> None:
    encoded = logstash.encode_json(value)
    decoded = strict_loads(encoded.decode("utf-8"))
    assert b"\n" not in encoded
    if isinstance(value, float) and not math.isfinite(value):
        assert decoded is None


def test_encode_json_survives_cycles_and_depth() -> None:
    cyclic: list[Any] = [1]
    cyclic.append(cyclic)
    deep: Any = "bottom"
    for _ in range(5000):
        deep = [deep]
    assert strict_loads(logstash.encode_json(cyclic)) == [1, "<cycle>"]
    decoded = strict_loads(logstash.encode_json({"deep": deep}))
    depth = json.dumps(decoded).count("[")
    # Where the C encoder cannot go that deep (before Python 3.13) the copy is cut at MAX_DEPTH;
    # where it can, the value is written whole. Either way it is valid JSON.
    assert depth <= 70 or depth == 5000


def test_encode_json_replaces_lone_surrogates() -> None:
    # What surrogateescape-decoded bytes (file names, raw headers) look like.
    value = {"path": b"/caf\xe9".decode("utf-8", errors="surrogateescape")}
    assert strict_loads(logstash.encode_json(value).decode("utf-8")) == {"path": "/caf?"}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_uses_its_own_connection(line_server: LineServer) -> None:
    reporter = logstash.create(host="127.0.0.1", port=line_server.port)
    assert send(reporter, batch(span(name="parent before"))).only is None
    # As if the pipeline's worker were inside send() when another thread forked.
    with reporter._lock:
        pid = os.fork()
        if pid == 0:  # child
            code = 1
            try:
                if send(reporter, batch(span(name="child"))).only is None:
                    code = 0
            finally:
                os._exit(code)
    assert wait_child(pid) == 0
    assert send(reporter, batch(span(name="parent after"))).only is None
    names = sorted(r["name"] for r in line_server.get_records(3))
    assert names == ["child", "parent after", "parent before"]
    assert line_server.accepted == 2
    reporter.close()
