"""Slow clients on ``metrics_port``: a connection that trickles its request never holds back the
other scrapes, nor ``uninstall()`` and the flush of spans behind it."""

from __future__ import annotations

import http.client
import select
import socket
import threading
from collections.abc import Iterator

import pytest

import reporters
import tracer
import tracer.metrics
from tests.metrics.helpers import scrape, wait_until
from tracer.metrics import exposition

# Under the per-read timeout, so that only a deadline for the whole connection ends it.
GAP = 1.0
# The slow client gives up after this many bytes: every test ends, whatever the server does.
BUDGET = 30


class SlowClient:
    """Sends a request line and then one header byte every :data:`GAP` seconds, never ending
    the headers; notes whether the server closed the connection first."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.sendall(b"GET /metrics HTTP/1.1\r\nX-Slow: ")
        self.closed_by_server = threading.Event()
        self.gave_up = threading.Event()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for _ in range(BUDGET):
            # Waiting on the socket rather than sleeping: the server closing it ends the wait.
            readable, _, _ = select.select([self.sock], [], [], GAP)
            if self._stop.is_set():
                return
            try:
                if readable:
                    self.sock.recv(65536)  # b"" or an error answer: the server ended it
                    self.closed_by_server.set()
                    return
                self.sock.send(b"a")
            except OSError:
                self.closed_by_server.set()
                return
        self.gave_up.set()

    @property
    def still_trying(self) -> bool:
        return not self.gave_up.is_set()

    def close(self) -> None:
        self._stop.set()
        self.thread.join(GAP * 3)
        self.sock.close()


@pytest.fixture
def slow_clients() -> Iterator[list[SlowClient]]:
    made: list[SlowClient] = []
    yield made
    for client in made:
        client.close()


def metrics_url() -> str:
    port = tracer.metrics.metrics_port()
    assert port is not None
    return f"http://127.0.0.1:{port}/metrics"


def metrics_server() -> exposition.Server:
    state = tracer.metrics._state
    assert state is not None and state.thread is not None and state.thread.server is not None
    return state.thread.server


def install(reporter: object) -> None:
    tracer.install(
        reporter=reporter,
        memory_watch=False,
        metrics_interval=None,
        metrics_port=0,
        flush_interval=0.05,
    )


def test_a_scrape_is_answered_while_a_slow_client_trickles(
    slow_clients: list[SlowClient],
) -> None:
    install(reporters.create("memory"))
    slow = SlowClient(tracer.metrics.metrics_port() or 0)
    slow_clients.append(slow)
    # Connected after the slow client, so a server that serves one connection at a time
    # reaches this one only when the slow one is done.
    assert "tracer_spans_created_total" in scrape(metrics_url())
    assert slow.still_trying and not slow.closed_by_server.is_set()


def test_uninstall_returns_and_spans_are_delivered_while_a_slow_client_trickles(
    slow_clients: list[SlowClient],
) -> None:
    reporter = reporters.create("memory")
    install(reporter)
    slow = SlowClient(tracer.metrics.metrics_port() or 0)
    slow_clients.append(slow)
    with tracer.span("work"):
        pass
    tracer.uninstall()
    assert slow.still_trying, "uninstall() waited for the slow client to give up"
    assert [s["name"] for s in reporter.spans] == ["work"]
    # Stopping ended the slow connection rather than leaving it to its thread.
    assert slow.closed_by_server.wait(GAP * 3)


def test_a_connection_has_a_deadline_for_the_whole_exchange(
    slow_clients: list[SlowClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exposition, "CONNECTION_DEADLINE", GAP * 3)
    install(reporters.create("memory"))
    slow = SlowClient(tracer.metrics.metrics_port() or 0)
    slow_clients.append(slow)
    # Each byte comes within the per-read timeout: only the deadline can end this.
    assert slow.closed_by_server.wait(GAP * BUDGET)
    assert slow.still_trying


def test_connections_beyond_the_bound_are_refused_at_once(
    slow_clients: list[SlowClient],
) -> None:
    install(reporters.create("memory"))
    port = tracer.metrics.metrics_port() or 0
    for _ in range(exposition.MAX_CONNECTIONS):
        slow_clients.append(SlowClient(port))
    server = metrics_server()
    assert wait_until(lambda: server.connections() == exposition.MAX_CONNECTIONS, timeout=10)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        assert conn.getresponse().status == 503
    except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
        pass  # refused before the request was read: also an answer, and not a wait
    finally:
        conn.close()
    assert all(client.still_trying for client in slow_clients)
    # A slot that frees up serves the next scrape.
    slow_clients.pop().close()
    assert wait_until(lambda: server.connections() < exposition.MAX_CONNECTIONS, timeout=10)
    assert "tracer_spans_created_total" in scrape(metrics_url())
