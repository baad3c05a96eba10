"""The Logstash reporter's beats transport (Lumberjack v2) against a stand-in beats input."""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from typing import Any

import pytest

import reporters
from reporters import logstash

from .helpers import START_US, Certs, LineServer, batch, send, span
from .lumberjack import LumberjackServer


def beats(server: LumberjackServer, **options: Any) -> logstash.LogstashReporter:
    return logstash.create(type="beats", host="127.0.0.1", port=server.port, **options)


@pytest.fixture
def lumberjack() -> Iterator[LumberjackServer]:
    server = LumberjackServer()
    yield server
    server.close()


def test_events_carry_the_same_fields_as_over_tcp(
    lumberjack: LumberjackServer, line_server: LineServer
) -> None:
    data = batch(span(), span(span_id="c" * 16, service="payments", start_us=START_US + 1_000))
    over_beats = beats(lumberjack, compression_level=0)
    over_tcp = logstash.create(host="127.0.0.1", port=line_server.port)
    try:
        assert send(over_beats, data).only is None
        assert send(over_tcp, data).only is None

        events = lumberjack.get_events(2)
        assert events == line_server.get_records(2)
        assert events[0] == {
            "@timestamp": "2024-05-01T12:00:00.123Z",
            "@version": "1",
            "service": "checkout",
            "host": "web-1",
            "pid": 4242,
            **span(),
        }
        (window,) = lumberjack.windows
        assert (window.count, window.compressed, window.sequences) == (2, False, [1, 2])
        assert lumberjack.acks_sent == [2]
    finally:
        over_beats.close()
        over_tcp.close()


def test_compressed_by_default(lumberjack: LumberjackServer) -> None:
    reporter = beats(lumberjack)
    try:
        names = [f"n{i}" for i in range(5)]
        assert send(reporter, batch(*(span(name=n) for n in names))).only is None
        assert [event["name"] for event in lumberjack.get_events(5)] == names
        (window,) = lumberjack.windows
        assert (window.count, window.compressed, window.sequences) == (5, True, [1, 2, 3, 4, 5])
    finally:
        reporter.close()


def test_a_metrics_batch_is_one_event(lumberjack: LumberjackServer) -> None:
    reporter = beats(lumberjack)
    metrics = {"service": "checkout", "sent_at_us": START_US, "metrics": {"rss": 1024}}
    try:
        assert send(reporter, metrics).only is None
        (event,) = lumberjack.get_events(1)
        assert event == {"@timestamp": "2024-05-01T12:00:00.123Z", "@version": "1", **metrics}
    finally:
        reporter.close()


def test_an_empty_batch_is_delivered_without_connecting(lumberjack: LumberjackServer) -> None:
    reporter = beats(lumberjack)
    assert send(reporter, batch()).only is None
    assert lumberjack.accepted == 0
    reporter.close()


def test_a_big_batch_goes_as_several_windows_each_numbered_from_one(
    lumberjack: LumberjackServer,
) -> None:
    reporter = beats(lumberjack, window_size=3)
    try:
        assert send(reporter, batch(*(span(name=f"n{i}") for i in range(7)))).only is None
        assert [event["name"] for event in lumberjack.get_events(7)] == [f"n{i}" for i in range(7)]
        assert [w.sequences for w in lumberjack.windows] == [[1, 2, 3], [1, 2, 3], [1]]
        assert lumberjack.acks_sent == [3, 3, 1]
        assert lumberjack.accepted == 1
    finally:
        reporter.close()


def test_a_server_that_never_acknowledges_gives_a_retryable_error_after_the_timeout() -> None:
    server = LumberjackServer(mode="silent")
    reporter = beats(server, timeout=0.5)
    try:
        started = time.monotonic()
        error = send(reporter, batch(span(name="unacked"))).error()
        elapsed = time.monotonic() - started
        assert error.retryable is True
        assert isinstance(error.__cause__, TimeoutError)
        assert "0 of the window's 1 events" in str(error)
        assert elapsed >= 0.5
        # The server did get the event: it is not acknowledged, so it is not delivered.
        assert server.get_events(1)[0]["name"] == "unacked"
    finally:
        reporter.close()
        server.close()


def test_partial_acknowledgements_keep_the_reporter_waiting_for_the_last() -> None:
    server = LumberjackServer(mode="partial", partial_delay=0.3)
    reporter = beats(server, timeout=3)
    try:
        started = time.monotonic()
        assert send(reporter, batch(*(span(name=f"n{i}") for i in range(4)))).only is None
        # Delivered only after the full ack, which the server sends partial_delay later.
        assert time.monotonic() - started >= 0.3
        assert server.acks_sent == [0, 2, 4]
        # The connection is still in step: the next batch is acknowledged on it too.
        assert send(reporter, batch(span(name="next"))).only is None
        assert server.acks_sent == [0, 2, 4, 0, 1]
        assert server.accepted == 1
    finally:
        reporter.close()
        server.close()


def test_partial_acknowledgements_alone_are_not_delivery() -> None:
    server = LumberjackServer(mode="partial-only")
    reporter = beats(server, timeout=0.5)
    try:
        error = send(reporter, batch(*(span(name=f"n{i}") for i in range(4)))).error()
        assert error.retryable is True
        assert isinstance(error.__cause__, TimeoutError)
        assert "2 of the window's 4 events" in str(error)
        assert server.acks_sent == [0, 2]
    finally:
        reporter.close()
        server.close()


def test_a_batch_is_delivered_only_when_every_window_is_acknowledged() -> None:
    server = LumberjackServer(ack_limit=1)
    reporter = beats(server, window_size=2, timeout=0.5)
    try:
        error = send(reporter, batch(*(span(name=f"n{i}") for i in range(4)))).error()
        assert error.retryable is True
        assert isinstance(error.__cause__, TimeoutError)
        # Both windows arrived; only the first was acknowledged.
        assert [w.sequences for w in server.windows] == [[1, 2], [1, 2]]
        assert server.acks_sent == [2]
    finally:
        reporter.close()
        server.close()


def test_the_server_closing_mid_window_is_a_retryable_error_and_the_next_send_reconnects() -> None:
    server = LumberjackServer(mode="close")
    reporter = beats(server, timeout=2)
    try:
        error = send(reporter, batch(span(name="torn"))).error()
        assert error.retryable is True
        assert isinstance(error.__cause__, ConnectionError)
        assert server.windows == []

        server.mode = "ack"
        assert send(reporter, batch(span(name="again"))).only is None
        assert server.get_events(1)[0]["name"] == "again"
        assert server.accepted == 2
    finally:
        reporter.close()
        server.close()


def test_an_acknowledgement_past_the_window_is_a_retryable_protocol_error() -> None:
    server = LumberjackServer(mode="overshoot")
    reporter = beats(server, timeout=2)
    try:
        error = send(reporter, batch(span())).error()
        assert error.retryable is True
        assert isinstance(error.__cause__, logstash.LumberjackProtocolError)
        assert "sequence 9 in a window of 1" in str(error)
        # The connection is dropped: the next batch goes on a fresh one.
        server.mode = "ack"
        assert send(reporter, batch(span(name="fresh"))).only is None
        assert server.accepted == 2
    finally:
        reporter.close()
        server.close()


def test_frames_sent_between_batches_do_not_acknowledge_the_next_window(
    lumberjack: LumberjackServer,
) -> None:
    reporter = beats(lumberjack, timeout=0.5)
    try:
        assert send(reporter, batch(span(name="first"))).only is None
        # Keep-alives and a stale repeat of the last ack, while the connection is idle.
        lumberjack.send_keepalives()
        lumberjack.send_ack(1)
        time.sleep(0.05)
        lumberjack.mode = "silent"
        # The stale "ack 1" would match this one-event window; it must not count.
        error = send(reporter, batch(span(name="second"))).error()
        assert isinstance(error.__cause__, TimeoutError)
        lumberjack.mode = "ack"
        assert send(reporter, batch(span(name="third"))).only is None
    finally:
        reporter.close()


def test_keeps_one_connection_for_many_batches(lumberjack: LumberjackServer) -> None:
    reporter = beats(lumberjack)
    try:
        for i in range(5):
            assert send(reporter, batch(span(name=f"n{i}"))).only is None
        assert [event["name"] for event in lumberjack.get_events(5)] == [f"n{i}" for i in range(5)]
        assert lumberjack.accepted == 1
    finally:
        reporter.close()


def test_reconnects_after_the_server_restarts() -> None:
    server = LumberjackServer()
    reporter = beats(server, timeout=2)
    try:
        assert send(reporter, batch(span(name="before"))).only is None
        server.pause()

        error = send(reporter, batch(span(name="lost"))).error()
        assert error.retryable is True
        assert isinstance(error.__cause__, ConnectionRefusedError)

        server.resume()
        assert send(reporter, batch(span(name="after"))).only is None
        assert [event["name"] for event in server.get_events(2)] == ["before", "after"]
        assert server.accepted == 2
    finally:
        reporter.close()
        server.close()


def test_a_restart_between_batches_is_caught_before_the_next_window() -> None:
    server = LumberjackServer()
    reporter = beats(server, timeout=2)
    try:
        assert send(reporter, batch(span(name="before"))).only is None
        server.pause()
        server.resume()
        # The old connection was closed by the server while idle: a fresh one, no error.
        assert send(reporter, batch(span(name="after"))).only is None
        assert [event["name"] for event in server.get_events(2)] == ["before", "after"]
        assert server.accepted == 2
    finally:
        reporter.close()
        server.close()


def test_tls_with_ca_file_is_verified_and_delivers(certs: Certs) -> None:
    server = LumberjackServer(ssl_context=certs.server_context())
    reporter = beats(server, ca_file=str(certs.ca))
    try:
        for i in range(3):
            assert send(reporter, batch(span(name=f"secure{i}"))).only is None
        assert [event["name"] for event in server.get_events(3)] == [
            "secure0",
            "secure1",
            "secure2",
        ]
        # Session tickets a TLS 1.3 server sends are neither an ack nor a closed connection.
        assert server.accepted == 1
        assert "+tls" in repr(reporter)
    finally:
        reporter.close()
        server.close()


def test_tls_rejects_a_certificate_from_an_unknown_ca(certs: Certs) -> None:
    server = LumberjackServer(ssl_context=certs.server_context())
    reporter = beats(server, tls=True)
    try:
        error = send(reporter, batch(span())).error()
        assert error.retryable is True
        assert isinstance(error.__cause__, ssl.SSLCertVerificationError)
        assert server.events.empty()
    finally:
        reporter.close()
        server.close()


def test_tls_keepalives_between_batches_are_ignored(certs: Certs) -> None:
    server = LumberjackServer(ssl_context=certs.server_context())
    reporter = beats(server, ca_file=str(certs.ca))
    try:
        assert send(reporter, batch(span(name="one"))).only is None
        server.send_keepalives()
        time.sleep(0.05)
        assert send(reporter, batch(span(name="two"))).only is None
        assert [event["name"] for event in server.get_events(2)] == ["one", "two"]
        assert server.accepted == 1
    finally:
        reporter.close()
        server.close()


def test_created_by_name_and_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, lumberjack: LumberjackServer
) -> None:
    by_name = reporters.create("logstash", type="beats", host="127.0.0.1", port=lumberjack.port)
    monkeypatch.setenv("LOGSTASH_TYPE", "beats")
    monkeypatch.setenv("LOGSTASH_HOST", "127.0.0.1")
    monkeypatch.setenv("LOGSTASH_PORT", str(lumberjack.port))
    from_env = logstash.create()
    try:
        assert (by_name.type, from_env.type) == ("beats", "beats")
        assert send(by_name, batch(span(name="by name"))).only is None
        assert send(from_env, batch(span(name="from env"))).only is None
        assert sorted(e["name"] for e in lumberjack.get_events(2)) == ["by name", "from env"]
    finally:
        by_name.close()
        from_env.close()


def test_default_port_is_5044(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LOGSTASH_HOST", "LOGSTASH_PORT", "LOGSTASH_TYPE"):
        monkeypatch.delenv(name, raising=False)
    reporter = logstash.create(type="beats")
    assert (reporter.type, reporter.host, reporter.port) == ("beats", "localhost", 5044)
    assert reporter.window_size == logstash.DEFAULT_WINDOW_SIZE


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"type": "gelf"}, "'tcp', 'udp', 'beats', 'http'"),
        ({"type": "beats", "window_size": 0}, "window_size"),
        ({"type": "beats", "compression_level": 10}, "compression_level"),
        ({"type": "beats", "url": "http://x/"}, "url and headers are for type='http'"),
    ],
)
def test_bad_beats_options_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        logstash.create(**options)
