"""requests: client spans and the headers that cross the wire."""

from __future__ import annotations

import http.server
import socket
from typing import Any

import pytest
import requests

import reporters
import tracer
from reporters.memory import MemoryReporter
from tests.conftest import Server, assert_child_prints_ok, refused_port
from tracer.context import suppressed
from tracer.instrumentation import requests as requests_instrumentation
from tracer.instrumentation.base import fast_path

#: Whether this requests takes tracer's fast path (else its public hooks: a requests outside the
#: verified range, or TRACER_PUBLIC_HOOKS=1).
FAST = fast_path("requests", requests.__version__, *requests_instrumentation.VERIFIED)
#: For the header block, which only the fast path writes.
fast_path_only = pytest.mark.skipif(not FAST, reason="requests' public hooks do not write it")


def test_headers_on_the_wire_and_client_span(memory: MemoryReporter, server: Server) -> None:
    response = requests.get(f"{server.url}/wire", timeout=10)
    assert response.status_code == 200
    sent = response.json()["headers"]
    memory.wait_for(2)
    (client,) = memory.find(kind="client")
    (srv,) = memory.find(kind="server")
    assert sent["request-id"] == client["request_id"]
    assert sent["x-span-id"] == client["span_id"]
    assert sent["x-parent"] == "test-service"
    cs = client["events"][0]
    assert cs["type"] == "cs" and int(sent["x-client-send"]) == cs["time_us"]
    assert srv["parent_id"] == client["span_id"]
    assert srv["trace_id"] == client["trace_id"]
    assert client["http"]["status_code"] == 200
    assert client["name"] == f"GET 127.0.0.1:{server.port}/wire"
    times = [client["events"][0]["time_us"], srv["events"][0]["time_us"]]
    times += [srv["events"][1]["time_us"], client["events"][1]["time_us"]]
    assert times == sorted(times), "cs <= sr <= ss <= cr"


def test_session_and_status_codes(memory: MemoryReporter, server: Server) -> None:
    with requests.Session() as session:
        assert session.get(f"{server.url}/status/404", timeout=10).status_code == 404
        assert session.post(f"{server.url}/p", data=b"x", timeout=10).status_code == 200
    memory.wait_for(4)
    clients = memory.find(kind="client")
    assert sorted((c["http"]["method"], c["http"]["status_code"]) for c in clients) == [
        ("GET", 404),
        ("POST", 200),
    ]


def test_connection_error_recorded_and_reraised(memory: MemoryReporter) -> None:
    with refused_port() as port, pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/down", timeout=5)
    tracer.flush()
    (client,) = memory.find(kind="client")
    assert client["error"]["type"] == "network-error"
    assert client["must_collect"] is True
    assert [e["type"] for e in client["events"]] == ["cs", "cr"]


def test_timeout_recorded_and_reraised(memory: MemoryReporter) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts, never answers
    try:
        with pytest.raises(requests.Timeout):
            requests.get(f"http://127.0.0.1:{listener.getsockname()[1]}/", timeout=0.3)
    finally:
        listener.close()
    tracer.flush()
    (client,) = memory.find(kind="client")
    assert client["error"]["type"] == "network-error"
    assert "Timeout" in client["error"]["message"]


def test_inside_server_span_client_is_child(memory: MemoryReporter, server: Server) -> None:
    with tracer.span("job") as job:
        assert job is not None
        response = requests.get(f"{server.url}/x", timeout=10)
    assert response.json()["headers"]["request-id"] == job.request_id
    memory.wait_for(3)
    (client,) = memory.find(kind="client")
    assert client["parent_id"] == job.span_id
    assert client["trace_id"] == job.trace_id


def test_ignore_hosts(server: Server) -> None:
    reporter = reporters.create("memory")
    tracer.install(app_name="s", reporter=reporter, ignore_hosts=["127.0.0.1"], flush_interval=0.02)
    response = requests.get(f"{server.url}/ignored", timeout=10)
    assert "request-id" not in response.json()["headers"]
    tracer.flush()
    assert reporter.find(kind="client") == []


@pytest.mark.parametrize("name", ["request-id", "Request-Id"])
def test_caller_request_id_starts_the_trace(
    memory: MemoryReporter, server: Server, name: str
) -> None:
    response = requests.get(f"{server.url}/own", headers={name: "mine-1"}, timeout=10)
    assert response.json()["headers"]["request-id"] == "mine-1"
    assert response.json()["transaction_id"] == "mine-1"


def test_imported_after_install_is_patched() -> None:
    code = (
        "import sys, tracer, reporters\n"
        "assert 'requests' not in sys.modules\n"
        "tracer.install(app_name='late', reporter=reporters.create('memory'))\n"
        "import requests\n"
        "from tracer.patching import is_ours\n"
        "assert is_ours(requests.Session.__dict__['send'])\n"
        "tracer.uninstall()\n"
        "assert not is_ours(requests.Session.__dict__['send'])\n"
        "print('ok')\n"
    )
    assert_child_prints_ok(code)


def assert_causal(spans: list[dict[str, Any]]) -> int:
    """cs <= sr <= ss <= cr for every client span whose server span is here; returns the pairs."""
    servers = {s["parent_id"]: s for s in spans if s["kind"] == "server"}
    pairs = 0
    for client in (s for s in spans if s["kind"] == "client"):
        server = servers[client["span_id"]]
        ev = {e["type"]: e["time_us"] for e in client["events"] + server["events"]}
        assert ev["cs"] <= ev["sr"] <= ev["ss"] <= ev["cr"], ev
        pairs += 1
    return pairs


def test_events_in_causal_order_on_every_call(memory: MemoryReporter, server: Server) -> None:
    with requests.Session() as session:
        for i in range(100):
            assert session.get(f"{server.url}/c/{i}", timeout=10).status_code == 200
    assert assert_causal(memory.wait_for(200)) == 100


TRACE_HEADERS = ("request-id", "x-span-id", "x-parent", "x-client-send", "traceparent", "b3")


def sent_lines(response: requests.Response) -> list[tuple[str, str]]:
    """The header lines the echo server received, repeats included."""
    return [(name, value) for name, value in response.json()["raw"]]


def assert_sent_once_and_shown(response: requests.Response, span: dict[str, Any]) -> None:
    lines = sent_lines(response)
    names = [name for name, _ in lines]
    for name in TRACE_HEADERS:
        assert names.count(name) == 1, (name, lines)
    sent = dict(lines)
    assert sent["x-span-id"] == span["span_id"]
    assert sent["traceparent"] == f"00-{span['trace_id']}-{span['span_id']}-01"
    # What went on the wire is what the request object says was sent.
    for name in TRACE_HEADERS:
        assert response.request.headers[name] == sent[name], name


def test_callers_own_trace_headers_give_way(memory: MemoryReporter, server: Server) -> None:
    theirs = {
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "X-Span-Id": "theirs",
        "b3": "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1",
        "x-other": "kept",
    }
    with requests.Session() as session:
        response = session.get(f"{server.url}/theirs", headers=theirs, timeout=10)
    memory.wait_for(2)
    (client,) = memory.find(kind="client")
    assert_sent_once_and_shown(response, client)
    assert dict(sent_lines(response))["x-other"] == "kept"


def test_resending_a_sent_request_sends_new_headers_once(
    memory: MemoryReporter, server: Server
) -> None:
    with requests.Session() as session:
        first = session.get(f"{server.url}/again", timeout=10)
        second = session.send(first.request, timeout=10)
    memory.wait_for(4)
    clients = {c["span_id"]: c for c in memory.find(kind="client")}
    assert len(clients) == 2
    first_id = dict(sent_lines(first))["x-span-id"]
    second_id = dict(sent_lines(second))["x-span-id"]
    assert first_id != second_id
    assert_sent_once_and_shown(second, clients[second_id])


def test_each_redirect_hop_sends_its_own_span(memory: MemoryReporter, server: Server) -> None:
    response = requests.get(f"{server.url}/redirect", timeout=10)
    assert response.json()["path"] == "/landed"
    memory.wait_for(4)
    clients = {c["span_id"]: c for c in memory.find(kind="client")}
    assert sorted(c["http"]["status_code"] for c in clients.values()) == [200, 302]
    landed = clients[dict(sent_lines(response))["x-span-id"]]
    assert landed["http"]["path"] == "/landed"
    assert_sent_once_and_shown(response, landed)
    (hop,) = response.history
    assert clients[hop.request.headers["x-span-id"]]["http"]["path"] == "/redirect"


@pytest.mark.parametrize("where", ["subclass", "instance", "get_adapter"])
def test_an_adapter_of_its_own_sees_the_headers_before_sending(
    memory: MemoryReporter, server: Server, where: str
) -> None:
    seen: list[str | None] = []

    class Looking(requests.adapters.HTTPAdapter):
        def send(self, request: requests.PreparedRequest, *args: Any, **kw: Any) -> Any:
            seen.append(request.headers.get("x-span-id"))
            return super().send(request, *args, **kw)

    class Choosing(requests.Session):
        def get_adapter(self, url: str) -> requests.adapters.BaseAdapter:
            return looking

    looking = Looking()
    plain = requests.adapters.HTTPAdapter()
    session = Choosing() if where == "get_adapter" else requests.Session()
    if where == "subclass":
        session.mount("http://", looking)
    elif where == "instance":
        # As a mocking tool patches one adapter: the send set on the instance is what runs.
        unpatched = plain.send

        def send(request: requests.PreparedRequest, *args: Any, **kw: Any) -> Any:
            seen.append(request.headers.get("x-span-id"))
            return unpatched(request, *args, **kw)

        plain.send = send  # type: ignore[method-assign]
        session.mount("http://", plain)
    with session:
        response = session.get(f"{server.url}/own-adapter", timeout=10)
    memory.wait_for(2)
    (client,) = memory.find(kind="client")
    assert seen == [client["span_id"]]
    assert_sent_once_and_shown(response, client)


def test_other_http_client_calls_carry_only_their_own_trace_headers(
    memory: MemoryReporter, server: Server
) -> None:
    import json
    import urllib.request

    def plain_call() -> dict[str, str]:
        with urllib.request.urlopen(f"{server.url}/plain", timeout=10) as answer:
            headers: dict[str, str] = json.loads(answer.read())["headers"]
            return headers

    from_hook: list[dict[str, str]] = []

    def hook(response: requests.Response, *args: Any, **kw: Any) -> None:
        from_hook.append(plain_call())

    with tracer.span("job"):
        traced = requests.get(f"{server.url}/traced", hooks={"response": hook}, timeout=10)
        with refused_port() as port, pytest.raises(requests.ConnectionError) as failed:
            requests.get(f"http://127.0.0.1:{port}/down", timeout=5)
        inside = plain_call()
    outside = plain_call()
    # urllib's calls are traced (tracer.instrumentation.http_client), each with its own span.
    assert set(TRACE_HEADERS) <= set(inside) and set(TRACE_HEADERS) <= set(outside)
    assert inside["x-span-id"] != traced.json()["headers"]["x-span-id"]
    # A call made by a response hook, while the traced call is not over, is not the traced call:
    # it is inside it, and http.client adds nothing to a call requests has open.
    assert len(from_hook) == 1 and not set(TRACE_HEADERS) & set(from_hook[0])
    assert set(TRACE_HEADERS) <= set(traced.json()["headers"])
    # The failed call's request shows the headers it tried to send.
    down = failed.value.request
    assert down is not None
    (refused,) = [c for c in memory.wait_for(7) if (c["http"] or {}).get("path") == "/down"]
    assert down.headers["x-span-id"] == refused["span_id"]


def test_a_call_from_a_hook_through_an_adapter_of_its_own_sends_only_its_headers(
    memory: MemoryReporter, server: Server
) -> None:
    class Own(requests.adapters.HTTPAdapter):
        """Sends with urllib3 itself, not through HTTPAdapter.send."""

        def send(self, request: requests.PreparedRequest, *args: Any, **kw: Any) -> Any:
            import urllib3

            with urllib3.PoolManager() as pool:
                raw = pool.request(
                    request.method or "GET",
                    request.url or "",
                    headers=dict(request.headers),
                    preload_content=True,
                )
            response = requests.Response()
            response.status_code = raw.status
            response._content = raw.data
            response.headers = requests.structures.CaseInsensitiveDict(raw.headers)
            response.request = request
            return response

    inner: list[requests.Response] = []

    def hook(response: requests.Response, *args: Any, **kw: Any) -> None:
        with requests.Session() as other:
            other.mount("http://", Own())
            inner.append(other.get(f"{server.url}/inner", timeout=10))

    with requests.Session() as session:
        outer = session.get(f"{server.url}/outer", hooks={"response": hook}, timeout=10)
    memory.wait_for(4)
    clients = {c["http"]["path"]: c for c in memory.find(kind="client")}
    assert_sent_once_and_shown(outer, clients["/outer"])
    (answer,) = inner
    assert_sent_once_and_shown(answer, clients["/inner"])


def test_an_auth_handlers_resend_carries_the_calls_headers(
    memory: MemoryReporter, server: Server
) -> None:
    response = requests.get(
        f"{server.url}/digest", auth=requests.auth.HTTPDigestAuth("u", "p"), timeout=10
    )
    assert response.status_code == 200
    assert [r.status_code for r in response.history] == [401]
    memory.wait_for(3)
    (client,) = memory.find(kind="client")
    # One call, one span: the answer after authenticating is its status.
    assert client["http"]["status_code"] == 200
    assert_sent_once_and_shown(response, client)


def test_no_propagation_formats_send_no_headers(server: Server) -> None:
    reporter = reporters.create("memory")
    tracer.install(app_name="s", reporter=reporter, propagation=[], flush_interval=0.02)
    response = requests.get(f"{server.url}/none", timeout=10)
    assert response.status_code == 200
    assert not set(TRACE_HEADERS) & set(response.json()["headers"])
    assert len(reporter.wait_for(2)) == 2


@fast_path_only
@pytest.mark.parametrize("http2", [False, True])
def test_propagation_headers_bypass_http_clients_putheader(
    memory: MemoryReporter, server: Server, monkeypatch: pytest.MonkeyPatch, http2: bool
) -> None:
    import http.client

    if http2:
        # urllib3 2 and later: 1.26 has no HTTP/2 connections to inject.
        urllib3_http2 = pytest.importorskip("urllib3.http2")
        # What urllib3.http2.inject_into_urllib3() leaves behind (it needs the h2 package):
        # its connections write headers their own way, so they must get them one by one.
        monkeypatch.setattr(urllib3_http2, "orig_HTTPSConnection", object(), raising=False)
    # What requests would put through putheader one by one goes into the header block at once.
    names: list[str] = []
    putheader = http.client.HTTPConnection.putheader

    def recording(self: http.client.HTTPConnection, header: str, *values: Any) -> None:
        names.append(header.lower())
        putheader(self, header, *values)

    monkeypatch.setattr(http.client.HTTPConnection, "putheader", recording)
    response = requests.get(f"{server.url}/block", timeout=10)
    memory.wait_for(2)
    (client,) = memory.find(kind="client")
    assert_sent_once_and_shown(response, client)
    assert "user-agent" in names
    if http2:
        assert set(TRACE_HEADERS) <= set(names)
    else:
        assert not set(TRACE_HEADERS) & set(names)


@fast_path_only
def test_a_connection_writing_its_own_headers_makes_tracer_use_request_headers(
    memory: MemoryReporter,
    server: Server,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import http.client

    import urllib3.connection

    from tracer.instrumentation import requests_headers

    monkeypatch.setattr(requests_headers, "direct", True)
    # A connection class that writes its header block without http.client's endheaders, as
    # someone's own connection class might.
    raw = http.client.HTTPConnection.__dict__["endheaders"].__dict__["__tracer_original__"]

    def endheaders(self: Any, message_body: Any = None, *, encode_chunked: bool = False) -> None:
        raw(self, message_body, encode_chunked=encode_chunked)

    monkeypatch.setattr(urllib3.connection.HTTPConnection, "endheaders", endheaders, raising=False)
    with requests.Session() as session:
        first = session.get(f"{server.url}/first", timeout=10)
        second = session.get(f"{server.url}/second", timeout=10)
    # The first call finds out: its headers never reached the wire, and that is said once.
    assert not set(TRACE_HEADERS) & set(first.json()["headers"])
    warnings = [r.getMessage() for r in caplog.records if "endheaders" in r.getMessage()]
    assert len(warnings) == 1, warnings
    # From then on they go in request.headers, like any caller's headers.
    memory.wait_for(4)
    clients = {c["http"]["path"]: c for c in memory.find(kind="client")}
    assert_sent_once_and_shown(second, clients["/second"])
    # Uninstalling forgets it: the next install tries the header block again.
    tracer.uninstall()
    assert requests_headers.direct is True


def test_send_arguments_reach_the_adapter(
    memory: MemoryReporter, server: Server, certs: Any
) -> None:
    tls = Server(ssl_context=certs.server_context())
    try:
        # verify: the throw-away CA is the only one that can check this server.
        assert requests.get(f"{tls.url}/tls", verify=str(certs.ca), timeout=10).status_code == 200
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"{tls.url}/tls", timeout=10)
    finally:
        tls.close()
    # proxies: a proxy that refuses connections fails the call instead of it going direct.
    with refused_port() as port, pytest.raises(requests.exceptions.ProxyError):
        proxy = f"http://127.0.0.1:{port}"
        requests.get(f"{server.url}/proxied", proxies={"http": proxy}, timeout=5)
    tracer.flush()
    assert len(memory.find(kind="client")) == 3


def test_a_body_generator_calling_out_does_not_pass_the_headers_on(
    memory: MemoryReporter, server: Server
) -> None:
    import json
    import urllib.request

    fetched: list[dict[str, str]] = []

    def body() -> Any:
        # Runs while the traced request is being sent.
        with urllib.request.urlopen(f"{server.url}/from-body", timeout=10) as answer:
            fetched.append(json.loads(answer.read())["headers"])
        yield b"part"

    response = requests.post(f"{server.url}/upload", data=body(), timeout=10)
    memory.wait_for(3)
    (client,) = memory.find(kind="client")
    assert_sent_once_and_shown(response, client)
    assert len(fetched) == 1 and not set(TRACE_HEADERS) & set(fetched[0])


def test_an_unknown_scheme_fails_as_without_tracer() -> None:
    tracer.install(app_name="s", reporter=reporters.create("memory"))
    with pytest.raises(requests.exceptions.InvalidSchema):
        requests.get("foo://127.0.0.1/x", timeout=5)


APP_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
APP_SPAN = "00f067aa0ba902b7"


@pytest.mark.parametrize("flags", ["01", "00"])
def test_an_applications_own_traceparent_outside_a_trace_is_continued(
    memory: MemoryReporter, server: Server, flags: str
) -> None:
    own = {"traceparent": f"00-{APP_TRACE}-{APP_SPAN}-{flags}", "tracestate": "app=1"}
    response = requests.get(f"{server.url}/own-context", headers=own, timeout=10)
    lines = sent_lines(response)
    names = [name for name, _ in lines]
    assert names.count("traceparent") == 1 and names.count("tracestate") == 1, lines
    sent = dict(lines)
    version, trace_id, parent_id, sent_flags = sent["traceparent"].split("-")
    # The callee is in the application's trace, under tracer's client span, and follows the
    # application's sampling decision; the application's tracestate goes on with it.
    assert (version, trace_id, sent_flags) == ("00", APP_TRACE, flags)
    assert parent_id != APP_SPAN
    assert sent["tracestate"] == "app=1"
    assert sent["b3"].startswith(f"{APP_TRACE}-{parent_id}-")
    if flags == "00":
        tracer.flush()
        assert memory.find(kind="client") == []
        return
    memory.wait_for(2)
    (client,) = memory.find(kind="client")
    (srv,) = memory.find(kind="server")
    assert (client["trace_id"], client["parent_id"]) == (APP_TRACE, APP_SPAN)
    assert client["span_id"] == parent_id
    assert (srv["trace_id"], srv["parent_id"]) == (APP_TRACE, client["span_id"])
    assert client["tracestate"] == "app=1"


def test_an_applications_own_b3_outside_a_trace_is_continued(
    memory: MemoryReporter, server: Server
) -> None:
    own = {"X-B3-TraceId": APP_TRACE, "X-B3-SpanId": APP_SPAN, "X-B3-Sampled": "1"}
    response = requests.get(f"{server.url}/own-b3", headers=own, timeout=10)
    sent = dict(sent_lines(response))
    memory.wait_for(2)
    (client,) = memory.find(kind="client")
    assert (client["trace_id"], client["parent_id"]) == (APP_TRACE, APP_SPAN)
    assert sent["traceparent"] == f"00-{APP_TRACE}-{client['span_id']}-01"


def test_an_invalid_own_traceparent_outside_a_trace_starts_a_new_one(
    memory: MemoryReporter, server: Server
) -> None:
    response = requests.get(
        f"{server.url}/bad",
        headers={"traceparent": f"00-{APP_TRACE.upper()}-{APP_SPAN}-01"},
        timeout=10,
    )
    sent = dict(sent_lines(response))
    memory.wait_for(2)
    (client,) = memory.find(kind="client")
    assert client["trace_id"] != APP_TRACE.lower() and client["parent_id"] is None
    assert sent["traceparent"] == f"00-{client['trace_id']}-{client['span_id']}-01"
    # The application's own header is not an inbound one: not counted as such.
    assert tracer.stats()["inbound_invalid"] == 0


def test_inside_a_trace_tracers_context_wins_over_the_applications(
    memory: MemoryReporter, server: Server
) -> None:
    with tracer.span("job") as job:
        assert job is not None
        own = {"traceparent": f"00-{APP_TRACE}-{APP_SPAN}-01"}
        response = requests.get(f"{server.url}/inside", headers=own, timeout=10)
    memory.wait_for(3)
    (client,) = memory.find(kind="client")
    assert (client["trace_id"], client["parent_id"]) == (job.trace_id, job.span_id)
    lines = sent_lines(response)
    assert [name for name, _ in lines].count("traceparent") == 1
    assert dict(lines)["traceparent"] == f"00-{job.trace_id}-{client['span_id']}-01"


class Forwarder(http.server.BaseHTTPRequestHandler):
    """A traced service that calls the echo server with every header it received (a proxy
    that forwards headers), and answers with what the echo server received."""

    protocol_version = "HTTP/1.1"
    echo_url = ""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        forwarded = {k: v for k, v in self.headers.items() if k.lower() not in ("host",)}
        answer = requests.get(f"{self.echo_url}/forwarded", headers=forwarded, timeout=10)
        body = answer.content
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_a_forwarded_inbound_traceparent_gives_way_to_the_services_own_span(
    memory: MemoryReporter, server: Server
) -> None:
    import json
    import urllib.request

    Forwarder.echo_url = server.url
    front = Server(Forwarder)
    try:
        # The upstream caller, outside this process's traces: its urllib call is not traced.
        request = urllib.request.Request(
            f"{front.url}/front", headers={"traceparent": f"00-{APP_TRACE}-{APP_SPAN}-01"}
        )
        with suppressed(), urllib.request.urlopen(request, timeout=10) as answer:
            received = json.loads(answer.read())
    finally:
        front.close()
    memory.wait_for(3)
    (front_span,) = [s for s in memory.find(kind="server") if s["http"]["path"] == "/front"]
    (client,) = memory.find(kind="client")
    assert (front_span["trace_id"], front_span["parent_id"]) == (APP_TRACE, APP_SPAN)
    lines = [(n, v) for n, v in received["raw"]]
    assert [n for n, _ in lines].count("traceparent") == 1, lines
    # Forwarded as is, it would have made the echo server a child of the upstream caller,
    # skipping this service: it carries the service's own client span instead.
    assert dict(lines)["traceparent"] == f"00-{APP_TRACE}-{client['span_id']}-01"
    assert client["parent_id"] == front_span["span_id"]
