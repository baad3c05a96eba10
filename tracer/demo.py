"""The demo: traced services on 127.0.0.1 calling each other, their traces printed as trees.

``python -m tracer demo`` starts each service in its own process with ``python -m tracer run``
(no code change in the services), each reporting JSON lines on its stdout. The demo then sends a
few checkout requests, one of which makes a downstream service fail, stops the services, and
prints every trace through the stdout reporter as a tree.

    client -> frontend (http.server + requests) -> users (http.server)
                                                 -> pricing (aiohttp.web) -> users (aiohttp client)
                                                                          -> a worker thread
                                                 -> inventory (http.server)

The pricing service runs only when aiohttp is installed; without it the frontend skips it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

PORT_LINE = "DEMO-PORT "


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
        import requests

        import tracer

        query = parse_qs(urlsplit(self.path).query)
        item = query.get("item", ["apple"])[0]
        user = requests.get(f"{self.downstream['users']}/users/7", timeout=5).json()
        tracer.report({"user": user["id"], "item": item})
        price = None
        if "pricing" in self.downstream:
            url = f"{self.downstream['pricing']}/price/{item}"
            price = requests.get(url, params={"user": user["id"]}, timeout=5).json()
        try:
            stock = requests.get(f"{self.downstream['inventory']}/stock/{item}", timeout=5)
        except requests.ConnectionError as exc:
            self.reply(502, {"error": f"inventory unavailable: {type(exc).__name__}"})
            return
        self.reply(200, {"user": user, "stock": stock.json(), "price": price})


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


class _Service:
    def __init__(self, name: str, downstream: dict[str, str]) -> None:
        env = dict(os.environ)
        env.update(
            TRACE_APP_NAME=name,
            TRACE_REPORTER_TYPE="stdout",
            TRACE_REPORTER_CONFIG='{"format": "json"}',
            PYTHONUNBUFFERED="1",
        )
        env.pop("TRACE_CONFIG_PATH", None)
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


def _has_aiohttp() -> bool:
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        return False
    return True


def main(count: int = 3) -> int:
    """Run the demo; returns a process exit code."""
    import tracer
    from tracer import reporters

    services: list[_Service] = []
    collected = reporters.create("memory")
    try:
        users = _Service("users", {})
        inventory = _Service("inventory", {})
        services += [users, inventory]
        downstream = {"users": users.url, "inventory": inventory.url}
        if _has_aiohttp():
            pricing = _Service("pricing", {"users": users.url})
            services.append(pricing)
            downstream["pricing"] = pricing.url
        frontend = _Service("frontend", downstream)
        services.append(frontend)
        tracer.install(app_name="demo-client", reporter=collected, flush_interval=0.1)
        import requests

        items = ["apple", "pear", "broken", "plum", "fig"]
        wanted = [items[i % len(items)] for i in range(max(count, 3))]
        if "broken" not in wanted:
            wanted[-1] = "broken"
        where = ", ".join(f"{s.name} on {s.url}" for s in reversed(services))
        print(f"tracer demo: {where}", flush=True)
        with requests.Session() as session:
            for item in wanted:
                response = session.get(f"{frontend.url}/checkout?item={item}", timeout=10)
                print(f"  GET /checkout?item={item} -> {response.status_code}", flush=True)
        tracer.flush()
    finally:
        spans: list[dict[str, Any]] = []
        for service in services:
            spans += service.stop()
        tracer.uninstall()
    spans += collected.spans
    printer = reporters.create("stdout", format="pretty")
    printer.send({"spans": spans}, lambda error: None)
    print(flush=True)
    printer.flush()
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "serve":
        serve(sys.argv[2], dict(arg.split("=", 1) for arg in sys.argv[3:]))
    else:
        sys.exit(main())
