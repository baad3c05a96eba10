"""The upstream for the client rows: a raw asyncio keep-alive server with a fixed 200 response.

It parses just enough HTTP (requests without bodies) to answer each request on a connection,
counts what it answered, prints ``PORT n``, and stops on a line on stdin or after ``--lifetime``
seconds, printing ``RESULT {"requests": n}``.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import threading

from benchmarks.common import PORT_PREFIX, emit

RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Length: 2\r\n"
    b"Connection: keep-alive\r\n"
    b"\r\n"
    b"ok"
)


class Counter:
    requests = 0


class FixedResponse(asyncio.Protocol):
    def __init__(self, counter: Counter) -> None:
        self.counter = counter
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        answered = 0
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            self.buffer = self.buffer[end + 4 :]
            answered += 1
        if answered and self.transport is not None:
            self.counter.requests += answered
            self.transport.write(RESPONSE * answered)


def wait_for_stdin_line(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    # A daemon thread, so a process that stops on its lifetime is not held by a blocked read.
    def read() -> None:
        sys.stdin.readline()
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=read, daemon=True).start()


async def serve(lifetime: float) -> int:
    loop = asyncio.get_running_loop()
    counter = Counter()
    server = await loop.create_server(lambda: FixedResponse(counter), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(f"{PORT_PREFIX}{port}", flush=True)
    stop = asyncio.Event()
    wait_for_stdin_line(loop, stop)
    try:
        await asyncio.wait_for(stop.wait(), lifetime)
    except asyncio.TimeoutError:
        pass
    server.close()
    return counter.requests


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lifetime", type=float, default=120.0)
    args = parser.parse_args(argv)
    emit({"requests": asyncio.run(serve(args.lifetime))})


if __name__ == "__main__":
    main()
