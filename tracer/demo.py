"""The demo: traced services on 127.0.0.1 calling each other, their traces printed as trees.

``python -m tracer demo`` starts each service in its own process with ``python -m tracer run``
(no code change in the services), each reporting JSON lines on its stdout. The demo then sends
``--requests`` checkout requests (3 by default; the third makes a downstream service fail), stops
the services, and prints every trace through the stdout reporter as a tree.

    client (urllib) -> frontend (http.server) -> users (http.server), with requests or urllib
                                               -> pricing (aiohttp.web), with requests or urllib
                                                    -> users (aiohttp client), a worker thread
                                               -> inventory (http.server), with urllib

It needs nothing beyond the standard library: without aiohttp there is no pricing service, and
without requests the frontend makes every call with urllib. Those calls show
:class:`tracer.client_call`, the way to trace a client tracer does not patch (urllib is patched
too, and adds no second span inside it).
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

PORT_LINE = "DEMO-PORT "
ITEMS = ("apple", "pear", "broken", "plum", "fig")


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _has_aiohttp() -> bool:
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        return False
    return True


def urllib_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """GET ``url`` with urllib, traced with :class:`tracer.client_call`: (status, body).

    A 4xx or 5xx answer is returned like any other; a call that got no answer raises (OSError
    or http.client.HTTPException), and its span records a ``network-error``.
    """
    import tracer

    with tracer.client_call("GET", url) as call:
        request = urllib.request.Request(url, headers=call.headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                call.response(response.status, response.headers)
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            call.response(error.code, error.headers)
            with error:
                return error.code, error.read()


def get_json(url: str, timeout: float = 5.0) -> Any:
    """GET ``url`` and decode its JSON body: with requests when it is installed (traced by
    tracer's instrumentation), else with urllib (:func:`urllib_get`)."""
    if _installed("requests"):
        import requests

        return requests.get(url, timeout=timeout).json()
    return json.loads(urllib_get(url, timeout)[1])


# -- the services (run in child processes) -----------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; without this, delayed ACKs add ~40 ms per call.
    disable_nagle_algorithm = True
    downstream: ClassVar[dict[str, str]] = {}

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class Users(_Handler):
    def do_GET(self) -> None:
        user = self.path.rsplit("/", 1)[-1]
        self.reply(200, {"id": user, "name": f"user {user}"})


class Inventory(_Handler):
    def do_GET(self) -> None:
        item = urlsplit(self.path).path.rsplit("/", 1)[-1]
        if item == "broken":
            # The handler raises: the span records the error, the client sees the connection end.
            raise RuntimeError(f"inventory record for {item!r} is corrupt")
        self.reply(200, {"item": item, "stock": len(item)})


class Frontend(_Handler):
    def do_GET(self) -> None:
        import tracer

        query = parse_qs(urlsplit(self.path).query)
        item = query.get("item", ["apple"])[0]
        user = get_json(f"{self.downstream['users']}/users/7")
        tracer.report({"user": user["id"], "item": item})
        price = None
        if "pricing" in self.downstream:
            price = get_json(f"{self.downstream['pricing']}/price/{item}?user={user['id']}")
        try:
            # Always urllib: the hop that shows tracer.client_call.
            status, body = urllib_get(f"{self.downstream['inventory']}/stock/{item}")
        except (OSError, http.client.HTTPException) as exc:
            self.reply(502, {"error": f"inventory unavailable: {type(exc).__name__}"})
            return
        if status != 200:
            self.reply(502, {"error": f"inventory answered {status}"})
            return
        self.reply(200, {"user": user, "stock": json.loads(body), "price": price})


SERVICES: dict[str, type[_Handler]] = {"users": Users, "inventory": Inventory, "frontend": Frontend}


def _tax(cents: int) -> int:
    """Blocking work the pricing service hands to a thread; its span joins the request's trace."""
    import tracer

    with tracer.span("compute-tax", rate="20%"):
        return cents // 5


def serve_pricing(downstream: dict[str, str]) -> None:
    """The aiohttp service: asks users (aiohttp client) for a discount, taxes in a thread."""
    import asyncio

    from aiohttp import ClientSession, web

    async def price(request: web.Request) -> web.Response:
        item = request.match_info["item"]
        session: ClientSession = request.app["session"]
        user = request.query.get("user", "0")
        async with session.get(f"{downstream['users']}/users/{user}") as response:
            loyal = response.status == 200
        cents = 100 * len(item) - (10 if loyal else 0)
        tax = await asyncio.to_thread(_tax, cents)
        return web.json_response({"item": item, "cents": cents, "tax": tax})

    async def client(app: web.Application) -> Any:
        async with ClientSession() as session:
            app["session"] = session
            yield

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/price/{item}", price)
        app.cleanup_ctx.append(client)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        print(f"{PORT_LINE}{runner.addresses[0][1]}", flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, stop.set)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    asyncio.run(main())


def serve(name: str, downstream: dict[str, str]) -> None:
    """Serve one demo service on an ephemeral 127.0.0.1 port until interrupted."""
    if name == "pricing":
        serve_pricing(downstream)
        return
    handler = type(name, (SERVICES[name],), {"downstream": downstream})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    print(f"{PORT_LINE}{server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


# -- the demo driver ---------------------------------------------------------------------------


# The demo shows tracer, not the configuration of the project it is started in: every process
# reads this file of no options instead of a trace.config.py it might find, and the services'
# settings come from the environment, TRACE_* variables of the caller's left out.
_NO_OPTIONS = '"""tracer demo: no options (the services are set up by environment variables)."""\n'


class _Service:
    def __init__(
        self,
        name: str,
        downstream: dict[str, str],
        config_path: str,
        settings: dict[str, str] | None = None,
    ) -> None:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("TRACE_") or k == "TRACE_SPOOL_DIR"
        }
        env.update(
            TRACE_CONFIG_PATH=config_path,
            TRACE_APP_NAME=name,
            TRACE_REPORTER_TYPE="stdout",
            TRACE_REPORTER_CONFIG='{"format": "json"}',
            TRACE_SAMPLE_RATE="1",
            PYTHONUNBUFFERED="1",
        )
        env.update(settings or {})
        cmd = [sys.executable, "-m", "tracer", "run", "-m", "tracer.demo", "serve", name]
        cmd += [f"{k}={v}" for k, v in downstream.items()]
        self.name = name
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True
        )
        self.lines: list[str] = []
        self.port_ready = threading.Event()
        self.port = 0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.stderr: list[str] = []
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(PORT_LINE):
                self.port = int(line[len(PORT_LINE) :])
                self.port_ready.set()
            elif line.strip():
                self.lines.append(line)

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)

    @property
    def url(self) -> str:
        if not self.port_ready.wait(30):
            raise RuntimeError(f"demo service {self.name} did not start:\n{''.join(self.stderr)}")
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> list[dict[str, Any]]:
        # SIGINT ends serve_forever() normally, so the service's exit flush writes its spans.
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=5)
        spans = []
        for line in self.lines:
            try:
                spans.append(json.loads(line))
            except json.JSONDecodeError:
                pass
        return spans


def _checkouts(frontend: str, count: int) -> None:
    """Send ``count`` checkout requests to ``frontend``, printing each answer; the third asks for
    the item whose inventory record is broken."""
    for i in range(count):
        item = ITEMS[i % len(ITEMS)]
        status, _ = urllib_get(f"{frontend}/checkout?item={item}", timeout=10)
        print(f"  GET /checkout?item={item} -> {status}", flush=True)
    if not count:
        print("  no requests sent (--requests 0)", flush=True)


def _topology(services: dict[str, _Service]) -> list[str]:
    """What calls what, with which library, as the demo runs it."""
    via = "requests" if _installed("requests") else "urllib"
    lines = [
        "tracer demo: services on 127.0.0.1, each started with `python -m tracer run` (no code"
        " changes), each request traced across all of them:",
        f"  demo-client --urllib--> frontend {services['frontend'].url} (http.server)",
        f"  frontend --{via}--> users {services['users'].url} (http.server)",
    ]
    if "pricing" in services:
        lines.append(
            f"  frontend --{via}--> pricing {services['pricing'].url} (aiohttp.web)"
            " --aiohttp--> users, and a worker thread"
        )
    lines.append(f"  frontend --urllib--> inventory {services['inventory'].url} (http.server)")
    if "pricing" not in services:
        lines.append(
            "  (aiohttp is not installed, so no aiohttp service;"
            " pip install 'dapper-tracer[aiohttp]' adds one)"
        )
    if via == "urllib":
        lines.append(
            "  (requests is not installed, so urllib everywhere;"
            " pip install 'dapper-tracer[requests]' adds it)"
        )
    return lines


def _start_services(
    config_path: str, settings: dict[str, str] | None = None
) -> dict[str, _Service]:
    """Start every demo service (pricing only with aiohttp), the frontend last, knowing the
    others' addresses."""
    services: dict[str, _Service] = {}
    try:
        services["users"] = _Service("users", {}, config_path, settings)
        services["inventory"] = _Service("inventory", {}, config_path, settings)
        downstream = {"users": services["users"].url, "inventory": services["inventory"].url}
        if _has_aiohttp():
            users = {"users": services["users"].url}
            services["pricing"] = _Service("pricing", users, config_path, settings)
            downstream["pricing"] = services["pricing"].url
        services["frontend"] = _Service("frontend", downstream, config_path, settings)
    except BaseException:
        for service in services.values():
            service.stop()
        raise
    return services


def main(count: int = 3) -> int:
    """Run the demo, sending ``count`` checkout requests; returns a process exit code."""
    import tracer
    from tracer import reporters

    if count < 0:
        raise ValueError(f"the number of requests must be 0 or more, got {count}")
    services: dict[str, _Service] = {}
    collected = reporters.create("memory")
    with tempfile.TemporaryDirectory(prefix="tracer-demo-") as scratch:
        config_path = os.path.join(scratch, "demo.config.py")
        with open(config_path, "w", encoding="utf-8") as file:
            file.write(_NO_OPTIONS)
        try:
            services = _start_services(config_path)
            frontend = services["frontend"]
            tracer.install(
                config_path,
                app_name="demo-client",
                reporter=collected,
                flush_interval=0.1,
                sample_rate=1.0,
            )
            print("\n".join(_topology(services)), flush=True)
            _checkouts(frontend.url, count)
            tracer.flush()
        finally:
            spans: list[dict[str, Any]] = []
            for service in services.values():
                spans += service.stop()
            tracer.uninstall()
    spans += collected.spans
    spans.sort(key=lambda s: s.get("start_us") or 0)
    print(flush=True)
    printer = reporters.create("stdout", format="pretty")
    printer.send({"spans": spans}, lambda error: None)
    printer.flush()
    return 0


# -- the demo into a viewer (--serve) ----------------------------------------------------------

#: Seconds between the requests sent while the viewer stays open, so its live tail moves.
TRICKLE_INTERVAL = 3.0
# The services' settings under --serve: batches often enough that the dashboard and the memory
# page have points within the demo's first seconds (a production service keeps the defaults).
_SERVE_SETTINGS = {
    "TRACE_REPORTER_TYPE": "http",
    "TRACE_FLUSH_INTERVAL": "0.2",
    "TRACE_METRICS_INTERVAL": "2",
    "TRACE_MEMORY_INTERVAL": "2",
}


class _Tee:
    """The demo client's reporter under --serve: every batch to the viewer, and its spans kept
    here too (the demo learns its traces' ids from them)."""

    def __init__(self, sender: Any) -> None:
        from tracer import reporters

        self.sender = sender
        self.kept = reporters.create("memory")

    def send(self, data: dict[str, Any], callback: Any) -> None:
        self.kept.send(data, lambda error: None)
        self.sender.send(data, callback)


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _start_viewer(db: str, port: int, otlp_port: int) -> Any:
    """A started viewer on ``port`` and ``otlp_port``, or on a free port for one that is taken
    (said on stderr)."""
    from tracer.serve import Viewer

    wanted = []
    for what, number in (("viewer", port), ("receiver", otlp_port)):
        if number and not _port_free(number):
            print(
                f"tracer demo: port {number} is taken; the {what} takes a free one", file=sys.stderr
            )
            number = 0
        wanted.append(number)
    try:
        return Viewer(db, port=wanted[0], otlp_port=wanted[1]).start()
    except OSError:
        # Taken between the check and the start.
        return Viewer(db).start()


def _complete(spans: list[dict[str, Any]]) -> bool:
    """Whether a trace has arrived whole: every parent is there, and every HTTP client span has
    the server span of its callee under it."""
    ids = {s.get("span_id") for s in spans}
    parents = {s.get("parent_id") for s in spans}
    for span in spans:
        if span.get("parent_id") is not None and span["parent_id"] not in ids:
            return False
        if span.get("kind") == "client" and span.get("http") and span.get("span_id") not in parents:
            return False
    return bool(spans)


def _wait_for_traces(
    store: Any, trace_ids: list[str], timeout: float = 15.0
) -> list[dict[str, Any]]:
    """The spans of ``trace_ids`` from the viewer's store, once each trace is whole (or the
    timeout passed: then what has arrived)."""
    import time

    from tracer.context import suppressed

    deadline = time.monotonic() + timeout
    while True:
        with suppressed():  # the store's own queries are no part of the demo
            traces = [store.trace(tid) or [] for tid in trace_ids]
        if all(_complete(t) for t in traces) or time.monotonic() >= deadline:
            return [span for t in traces for span in t]
        time.sleep(0.1)


def main_serve(count: int = 3, port: int | None = None, otlp_port: int | None = None) -> int:
    """``tracer demo --serve``: the demo with every trace, metric and memory batch sent to a
    viewer started here (:class:`tracer.serve.Viewer`; port 8686 and receiver 4318, or free ones
    when taken). Prints the viewer's URL first, then what :func:`main` prints, then keeps the
    viewer and the services open, sending a request every :data:`TRICKLE_INTERVAL` seconds,
    until Ctrl-C or SIGTERM."""
    import tracer
    from tracer import reporters
    from tracer.serve.server import DEFAULT_OTLP_PORT, DEFAULT_PORT

    if count < 0:
        raise ValueError(f"the number of requests must be 0 or more, got {count}")
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    # Ctrl-C must end the demo even when it was started with SIGINT ignored (a background job).
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    services: dict[str, _Service] = {}
    with tempfile.TemporaryDirectory(prefix="tracer-demo-") as scratch:
        config_path = os.path.join(scratch, "demo.config.py")
        with open(config_path, "w", encoding="utf-8") as file:
            file.write(_NO_OPTIONS)
        viewer = _start_viewer(
            os.path.join(scratch, "serve.db"),
            DEFAULT_PORT if port is None else port,
            DEFAULT_OTLP_PORT if otlp_port is None else otlp_port,
        )
        batches = f"{viewer.receiver_url}/api/v1/batches"
        try:
            print(viewer.url, flush=True)
            # The spools are the demo's own: a batch left undelivered at Ctrl-C must not be
            # replayed into a later demo's output.
            spool = os.path.join(scratch, "spool")
            settings = dict(
                _SERVE_SETTINGS,
                TRACE_REPORTER_CONFIG=json.dumps({"url": batches}),
                TRACE_SPOOL_DIR=spool,
            )
            services = _start_services(config_path, settings)
            frontend = services["frontend"]
            client = _Tee(reporters.create("http", url=batches))
            tracer.install(
                config_path,
                app_name="demo-client",
                reporter=client,
                spool_path=os.path.join(spool, "demo-client.sqlite"),
                flush_interval=0.1,
                sample_rate=1.0,
            )
            print("\n".join(_topology(services)), flush=True)
            _checkouts(frontend.url, count)
            tracer.flush()
            trace_ids = list(dict.fromkeys(s["trace_id"] for s in client.kept.spans))
            spans = _wait_for_traces(viewer.store, trace_ids)
            spans.sort(key=lambda s: s.get("start_us") or 0)
            print(flush=True)
            printer = reporters.create("stdout", format="pretty")
            printer.send({"spans": spans}, lambda error: None)
            printer.flush()
            print(
                f"\nThe viewer is open at {viewer.url} (a checkout request every"
                f" {TRICKLE_INTERVAL:g} s); Ctrl-C stops it.",
                flush=True,
            )
            i = count
            while not stop.wait(TRICKLE_INTERVAL):
                item = ITEMS[i % len(ITEMS)]
                i += 1
                try:
                    urllib_get(f"{frontend.url}/checkout?item={item}", timeout=10)
                except (OSError, http.client.HTTPException):
                    pass  # a service that went away: the viewer stays open
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
            signal.signal(signal.SIGINT, previous_int)
            for service in services.values():
                service.stop()
            tracer.uninstall()
            viewer.stop()
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "serve":
        serve(sys.argv[2], dict(arg.split("=", 1) for arg in sys.argv[3:]))
    else:
        sys.exit(main())
