"""Shared fixtures: tracer installed with the in-memory reporter, real servers on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import signal
import ssl

# Swallowed internal errors fail the test that caused them (see tracer.safety).
os.environ.setdefault("TRACER_STRICT", "1")

import http.server
from collections.abc import Iterator
from typing import Any

import pytest

import reporters
import tracer
from reporters.memory import MemoryReporter

# ROOT, assert_child_prints_ok, refused_port and subprocess_env are imported from here by tests.
from tests.support.children import ROOT as ROOT
from tests.support.children import assert_child_prints_ok as assert_child_prints_ok
from tests.support.children import subprocess_env as subprocess_env
from tests.support.servers import HttpServer, QuietHandler
from tests.support.servers import refused_port as refused_port
from tests.support.tls import Certs, make_certs
from tracer import safety

# A runner started with SIGINT ignored (a background job of a non-interactive shell, some CI
# runners) passes that on to every child, where Ctrl-C then does nothing: the tests that
# interrupt children need Python's own handler, which a child gets back at exec.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

for name in ("TRACE_CONFIG_PATH", "TRACE_APP_NAME", "TRACE_REPORTER_TYPE", "TRACE_REPORTER_CONFIG"):
    os.environ.pop(name, None)


#: Tests that take seconds of real time: an outage lived through as it happens, an exit that waits
#: for its deadline, a benchmark run, servers that fork or spawn workers. Named here, in one
#: place, rather than in each module; the README's test command leaves them out
#: (``-m "not slow"``), and CI runs them (``-m slow``) on one Python version.
SLOW = frozenset(
    (
        "delivery/test_pipeline.py::test_logstash_outage_of_30_seconds_loses_nothing",
        "delivery/test_faults.py::test_flush_rides_out_a_5s_outage",
        "delivery/test_faults.py::test_hung_reporter_leaks_no_threads_and_recovers",
        "delivery/test_faults.py::test_exit_is_bounded_when_the_spool_is_locked",
        "delivery/test_logstash_stall.py::"
        "test_a_logstash_that_stops_reading_then_restarts_loses_no_span_counted_delivered",
        "export/test_otlp_delivery.py::test_a_5s_503_outage_delivers_every_span_exactly_once",
        "memory/test_leak_service.py::test_a_service_that_holds_at_most_three_bursts_raises_no_leak",
        "memory/test_leak_service.py::test_the_same_service_without_the_leak_raises_none",
        "profiler/test_services.py::"
        "test_a_profile_during_many_concurrent_requests_leaves_every_parent_right",
        "test_benchmarks_smoke.py::test_instruction_count_command_runs_under_callgrind",
        "test_benchmarks_smoke.py::test_quick_run_prints_every_row_and_exits_0",
        "test_benchmarks_smoke.py::test_stage_rows_run_when_asked_for",
        "test_benchmarks_smoke.py::"
        "test_framework_servers_run_every_variant_and_tracer_makes_a_span_per_request",
        # Pre-forked and spawned servers, services in a chain, a profile under load: seconds of
        # real time each, for servers to start, fork, serve and stop.
        "asgi/test_workers.py::test_each_worker_delivers_its_spans_once_and_a_scrape_totals_them",
        "frameworks/test_across_services.py::test_flask_fastapi_django_aiohttp_join_into_one_tree",
        "frameworks/test_otel_services.py::"
        "test_otel_fastapi_client_span_is_the_parent_of_tracers_flask_server_span",
        "frameworks/test_otel_services.py::"
        "test_tracers_flask_client_span_is_the_parent_of_otel_fastapi_server_span",
        "wsgi/test_gunicorn.py::test_one_scrape_gives_the_total_of_both_workers",
        "wsgi/test_gunicorn.py::test_each_worker_delivers_its_own_spans_exactly_once",
        "wsgi/test_gunicorn_stop.py::"
        "test_a_span_finished_after_sigterm_is_delivered_before_the_worker_exits",
        "wsgi/test_gunicorn_stop.py::"
        "test_a_process_that_ignores_sigterm_is_flushed_by_it_and_delivers_what_follows",
        "profiler/test_services.py::test_hot_samples_are_in_the_hot_function_and_route",
        "django/test_runserver_reload.py::test_the_reloaders_child_traces_each_request_once",
        "metrics/test_prefork.py::test_one_scrape_totals_every_worker",
        # tracer demo --serve: four services started, their traces, metrics and memory batches
        # waited for in the viewer.
        "serve/test_server.py::test_the_demo_serves_its_traces_until_interrupted",
        # The viewer in a browser: the demo's services, an OpenTelemetry service calling a
        # tracer one, a viewer stopped and started again.
        "browser/test_demo.py::test_the_search_page_lists_the_demos_traces",
        "browser/test_demo.py::"
        "test_each_trace_page_shows_every_span_nested_and_the_failing_call_marked",
        "browser/test_demo.py::test_the_service_map_shows_the_demos_calls",
        "browser/test_demo.py::test_the_dashboard_shows_each_services_routes",
        "browser/test_otel_chain.py::"
        "test_an_otel_client_span_and_tracers_server_span_join_in_one_waterfall",
        "browser/test_restart.py::test_a_restarted_viewer_shows_the_trace_it_stored",
    )
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        # The node id below tests/, without a parametrization.
        name = item.nodeid.split("[", 1)[0].removeprefix("tests/")
        if name in SLOW:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _no_internal_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[None]:
    # No test may pick up a trace.config.py from the working directory by accident.
    monkeypatch.chdir(tmp_path)
    # Each test gets its own spool, so no test replays another's undelivered spans.
    monkeypatch.setenv("TRACE_SPOOL_DIR", str(tmp_path / "spool"))
    safety.take_strict_errors()
    yield
    tracer.uninstall()
    errors = safety.take_strict_errors()
    assert not errors, f"tracer swallowed internal errors: {errors!r}"


@pytest.fixture
def memory() -> Iterator[MemoryReporter]:
    """tracer installed with an in-memory reporter; uninstalled afterwards."""
    reporter = reporters.create("memory")
    tracer.install(app_name="test-service", reporter=reporter, flush_interval=0.02)
    yield reporter
    tracer.uninstall()


class EchoHandler(QuietHandler):
    """Answers with the headers it received and the transaction id it saw, as JSON."""

    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        import json

        path = self.path.split("?")[0]
        if path.startswith("/status/"):
            code = int(path.rsplit("/", 1)[1])
            self.send_error(code)
            return
        if path == "/raise":
            raise ValueError("handler failed")
        if path == "/digest" and "Authorization" not in self.headers:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Digest realm="t", nonce="n0", qop="auth"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/landed")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = json.dumps(
            {
                "headers": {k.lower(): v for k, v in self.headers.items()},
                # Every header line as it came, repeats included.
                "raw": [[k.lower(), v] for k, v in self.headers.items()],
                "transaction_id": tracer.get_transaction_id(),
                "path": self.path,
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        # Read the whole body first: answering before a slow chunked upload ends would close
        # the connection under the client while it is still sending.
        self._read_body()
        self.do_GET()

    def _read_body(self) -> None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                self.rfile.read(size + 2)
                if size == 0:
                    return
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)


class Server(HttpServer):
    """A ThreadingHTTPServer (of :class:`EchoHandler` by default) on an ephemeral 127.0.0.1
    port, served from a thread."""

    def __init__(
        self,
        handler: type[http.server.BaseHTTPRequestHandler] = EchoHandler,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(handler, ssl_context)


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    yield srv
    srv.close()


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A throw-away CA and server certificates (see tests.support.tls.make_certs)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make test certificates")
    return make_certs(tmp_path_factory.mktemp("certs"))
