"""The WSGI core through ``tracer.wsgi(app)``: an application with no framework, served by
wsgiref from a thread of this process, called by ``requests`` (traced too where that proves
propagation), and called directly where the WSGI protocol itself is what is tested."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

import tracer
from tests.support.spans import untraced_get
from tests.support.waiting import eventually
from tests.wsgi import apps
from tests.wsgi.servers import Wsgiref
from tracer import installer, safety
from tracer.instrumentation import wsgi as core
from tracer.reporters.memory import MemoryReporter

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


@pytest.fixture(scope="module")
def plain() -> Iterator[Wsgiref]:
    server = Wsgiref(tracer.wsgi(apps.plain))
    yield server
    server.close()


def servers(memory: MemoryReporter, count: int = 1) -> list[dict[str, Any]]:
    """The server spans, once ``count`` of them arrived (and no more after a flush)."""
    eventually(lambda: len(memory.find(kind="server")) >= count, what="server spans")
    tracer.flush()
    return memory.find(kind="server")


def test_a_request_gets_one_server_span_named_by_its_method(
    memory: MemoryReporter, plain: Wsgiref
) -> None:
    response = untraced_get(f"{plain.url}/hello?password=hunter2&page=2")
    assert response.status_code == 200 and response.text == "plain"
    # tracer's response headers, as http.server sends them.
    assert response.headers["x-parent"] == "test-service"
    assert int(response.headers["x-client-send"]) > 0
    (span,) = servers(memory)
    assert span["name"] == "GET"  # no route: never the raw path
    assert span["http"]["route"] is None
    assert span["http"]["status_code"] == 200
    assert span["http"]["method"] == "GET"
    assert span["http"]["path"] == "/hello"
    assert "hunter2" not in span["http"]["url"] and "page=2" in span["http"]["url"]
    assert [e["type"] for e in span["events"]] == ["sr", "ss"]
    assert str(span["start_us"]) == response.headers["x-client-send"]
    assert 0 <= span["tags"]["ttfb_us"] <= span["duration_us"]
    # wsgiref's handler was started by http.server's instrumentation: that span was adopted.
    assert len(memory.find(kind="server")) == 1
    # The application's headers list, passed on every request, is left as it was.
    assert apps.CONSTANT_HEADERS == [("Content-Type", "text/plain")]


@pytest.mark.parametrize(
    "headers",
    [
        {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"},
        {"b3": f"{TRACE_ID}-{PARENT_ID}-1"},
        {"X-B3-TraceId": TRACE_ID, "X-B3-SpanId": PARENT_ID, "X-B3-Sampled": "1"},
    ],
    ids=["w3c", "b3", "b3multi"],
)
def test_inbound_trace_context_is_followed(
    memory: MemoryReporter, plain: Wsgiref, headers: dict[str, str]
) -> None:
    assert untraced_get(f"{plain.url}/hello", headers=headers).status_code == 200
    (span,) = servers(memory)
    assert span["trace_id"] == TRACE_ID
    assert span["parent_id"] == PARENT_ID


def test_the_original_trace_headers_are_followed_and_answered(
    memory: MemoryReporter, plain: Wsgiref
) -> None:
    headers = {"request-id": "req-12345", "x-span-id": PARENT_ID, "x-parent": "caller"}
    response = untraced_get(f"{plain.url}/hello", headers=headers)
    (span,) = servers(memory)
    assert span["request_id"] == "req-12345"
    assert span["parent_id"] == PARENT_ID
    assert span["tags"]["parent_service"] == "caller"
    assert response.headers["x-span-id"] == PARENT_ID


def test_a_traced_client_is_the_parent_of_the_server_span(
    memory: MemoryReporter, plain: Wsgiref
) -> None:
    with tracer.span("caller"):
        assert requests.get(f"{plain.url}/hello", timeout=30).status_code == 200
    (server,) = servers(memory)
    (client,) = eventually(lambda: memory.find(kind="client"), what="the client span")
    assert server["trace_id"] == client["trace_id"]
    assert server["parent_id"] == client["span_id"]


def test_a_streamed_response_ends_when_the_server_closes_it(
    memory: MemoryReporter, plain: Wsgiref
) -> None:
    apps.RELEASE.clear()
    apps.LAST_CHUNK_US.clear()
    try:
        with requests.get(f"{plain.url}/stream", stream=True, timeout=30) as response:
            assert response.raw.read(6) == b"first,"
            # The application returned long ago, but its response is still under way.
            tracer.flush()
            assert memory.find(kind="server") == []
            apps.RELEASE.set()
            assert response.raw.read() == b"last"
    finally:
        apps.RELEASE.set()
    (span,) = servers(memory)
    (last_chunk,) = apps.LAST_CHUNK_US
    assert span["start_us"] + span["duration_us"] >= last_chunk
    assert span["tags"]["ttfb_us"] < last_chunk - span["start_us"]
    # Code in the generator ran in the request's context: its span is the server span's child.
    (inner,) = memory.find(name="in-stream")
    assert inner["parent_id"] == span["span_id"]


def test_an_exception_in_the_application_is_recorded_with_500(
    memory: MemoryReporter, plain: Wsgiref
) -> None:
    # wsgiref logs the exception and answers 500 itself: the exception reached it unchanged.
    assert untraced_get(f"{plain.url}/raise").status_code == 500
    (span,) = servers(memory)
    assert span["http"]["status_code"] == 500
    assert span["error"]["type"] == "ValueError"
    assert span["error"]["message"] == "plain failed"


# -- called directly ----------------------------------------------------------------------------


def environ(path: str = "/hello", query: str = "") -> dict[str, Any]:
    from wsgiref.util import setup_testing_defaults

    env: dict[str, Any] = {"PATH_INFO": path, "QUERY_STRING": query}
    setup_testing_defaults(env)
    return env


def serve(app: Any, env: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
    """Call ``app`` as a WSGI server would: start_response, iterate, close."""
    got: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        got[:] = [status, headers]
        return lambda data: None

    result = app(env, start_response)
    try:
        body = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return got[0], got[1], body


def test_each_request_runs_in_its_own_context(memory: MemoryReporter) -> None:
    app = tracer.wsgi(apps.plain)
    assert serve(app, environ("/context", "one"))[2] == b"None"
    # What the first request set is not seen by the second, nor by the caller.
    assert serve(app, environ("/context", "two"))[2] == b"None"
    assert apps.seen.get() is None
    assert tracer.current_span() is None
    assert len(servers(memory, 2)) == 2


def test_an_exception_in_the_body_is_recorded_and_propagates(memory: MemoryReporter) -> None:
    closed: list[bool] = []

    class Body:
        def __iter__(self) -> Iterator[bytes]:
            yield b"part"
            raise RuntimeError("body failed")

        def close(self) -> None:
            closed.append(True)

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [])
        return Body()

    with pytest.raises(RuntimeError, match="body failed"):
        serve(tracer.wsgi(app), environ())
    (span,) = servers(memory)
    assert span["error"]["type"] == "RuntimeError"
    # The first chunk was sent with a 200: that status is what the client got.
    assert span["http"]["status_code"] == 200
    assert closed == [True]


def test_a_request_already_traced_by_an_outer_layer_gets_no_second_span(
    memory: MemoryReporter,
) -> None:
    names: list[Any] = []

    def named(environ: dict[str, Any], start_response: Any) -> Any:
        span = tracer.current_span()
        assert span is not None
        span.route = "/named/{id}"
        names.append(span.span_id)
        return apps.plain(environ, start_response)

    # Two separate layers (the application's own wrapper around a framework's, say).
    app = core.Traced(tracer.wsgi(named), lambda: installer.runtime)
    status, headers, _ = serve(app, environ())
    assert status == "200 OK"
    assert [name for name, _ in headers].count("x-parent") == 1
    (span,) = servers(memory)
    assert span["span_id"] == names[0]
    assert span["name"] == "GET /named/{id}"
    assert span["http"]["route"] == "/named/{id}"


def test_wrapped_before_install_it_traces_only_while_installed() -> None:
    app = tracer.wsgi(apps.plain)
    status, headers, body = serve(app, environ())
    assert (status, body) == ("200 OK", b"plain")
    assert headers is apps.CONSTANT_HEADERS  # passed on untouched
    import reporters

    reporter = reporters.create("memory")
    tracer.install(app_name="late", reporter=reporter, flush_interval=0.02)
    _, headers, _ = serve(app, environ())
    assert ("x-parent", "late") in headers
    assert len(servers(reporter)) == 1
    tracer.uninstall()
    _, headers, _ = serve(app, environ())
    assert headers is apps.CONSTANT_HEADERS
    assert len(reporter.find(kind="server")) == 1


def test_an_error_inside_tracer_is_counted_and_the_request_goes_on(
    memory: MemoryReporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = installer.runtime
    assert runtime is not None

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("tracer bug")

    monkeypatch.setattr(runtime, "server_span", broken)
    before = safety._counts["wsgi.start"]
    status, _, body = serve(tracer.wsgi(apps.plain), environ())
    assert (status, body) == ("200 OK", b"plain")
    errors = safety.take_strict_errors()
    assert [str(e) for e in errors] == ["tracer bug"]
    assert safety._counts["wsgi.start"] == before + 1


def test_the_body_is_iterated_and_closed_in_the_requests_context(memory: MemoryReporter) -> None:
    seen: list[Any] = []

    def body() -> Iterator[bytes]:
        try:
            seen.append(tracer.current_span())
            yield b"chunk"
        finally:
            seen.append(tracer.current_span())  # run by close()

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [])
        return body()

    env = environ()
    serve(tracer.wsgi(app), env)
    span = env[core.ENVIRON_KEY]
    assert span is not None and seen == [span, span]
    assert tracer.current_span() is None
    (record,) = servers(memory)
    assert record["span_id"] == span.span_id


def test_a_file_wrapper_response_is_handed_over_as_it_is(memory: MemoryReporter) -> None:
    import io
    from wsgiref.util import FileWrapper

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [])
        return environ["wsgi.file_wrapper"](io.BytesIO(b"file body"))

    env = environ()
    env["wsgi.file_wrapper"] = FileWrapper

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        return None

    result = tracer.wsgi(app)(env, start_response)
    # The server still gets its own wrapper (and may send the file with sendfile()).
    assert type(result) is FileWrapper
    assert b"".join(result) == b"file body"
    tracer.flush()
    assert memory.find(kind="server") == []
    result.close()
    (span,) = servers(memory)
    assert span["http"]["status_code"] == 200


def test_any_application_wsgiref_serves_is_traced_also_after_a_second_install() -> None:
    import reporters

    server = Wsgiref(apps.plain)  # not wrapped: wsgiref's instrumentation applies the core
    try:
        for round in range(2):
            reporter = reporters.create("memory")
            tracer.install(app_name=f"round-{round}", reporter=reporter, flush_interval=0.02)
            response = untraced_get(f"{server.url}/hello")
            assert response.headers["x-parent"] == f"round-{round}"
            (span,) = servers(reporter)
            assert (span["name"], span["http"]["status_code"]) == ("GET", 200)
            tracer.uninstall()
        assert "x-parent" not in untraced_get(f"{server.url}/hello").headers
    finally:
        server.close()


def test_an_unsampled_inbound_trace_is_not_delivered(
    memory: MemoryReporter, plain: Wsgiref
) -> None:
    before = tracer.stats()["unsampled_dropped"]
    headers = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-00"}
    assert untraced_get(f"{plain.url}/hello", headers=headers).status_code == 200
    eventually(lambda: tracer.stats()["unsampled_dropped"] == before + 1, what="dropped")
    tracer.flush()
    assert memory.find(kind="server") == []
