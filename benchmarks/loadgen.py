"""Load against a server in another process: wrk when installed, else an aiohttp client.

``python -m benchmarks.loadgen URL --concurrency C --duration S`` runs the aiohttp client: C
keep-alive connections, each sending one request after another until S seconds have passed (and
at most ``--max-requests`` in all), then prints
``RESULT {"requests", "errors", "non_2xx", "seconds"}``. Every request started is awaited, so
``requests`` is exactly what the server answered.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import sys
import time
from typing import Any

from benchmarks.common import RESULT_PREFIX, emit


def wrk_path() -> str | None:
    return shutil.which("wrk")


def wrk_version(path: str) -> str:
    try:
        out = subprocess.run([path, "-v"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return "wrk"
    match = re.search(r"wrk \S+", out.stdout + out.stderr)
    return match.group(0) if match else "wrk"


def wrk_seconds(duration: float) -> int:
    """wrk takes whole seconds."""
    return max(1, round(duration))


def run_wrk(path: str, url: str, concurrency: int, duration: float) -> dict[str, Any]:
    """One wrk run (1 thread); the counts it printed, parsed."""
    seconds = wrk_seconds(duration)
    command = [path, "-t1", f"-c{concurrency}", f"-d{seconds}s", url]
    out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30)
    text = out.stdout
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)\b", text)
    if out.returncode != 0 or done is None:
        raise RuntimeError(f"wrk failed ({out.returncode}): {text[-300:]} {out.stderr[-300:]}")
    scale = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[done.group(3)]
    errors = 0
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    if socket_errors:
        # A read error is how wrk counts the connections it closes itself at the end of a run.
        connect, _read, write, timeout = (int(n) for n in socket_errors.groups())
        errors = connect + write + timeout
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return {
        "requests": int(done.group(1)),
        "seconds": float(done.group(2)) * scale,
        "errors": errors,
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
    }


async def load(url: str, concurrency: int, duration: float, max_requests: int) -> dict[str, Any]:
    import aiohttp

    counts = {"requests": 0, "errors": 0, "non_2xx": 0}
    deadline = time.monotonic() + duration

    async def one_connection(session: aiohttp.ClientSession) -> None:
        while time.monotonic() < deadline and counts["requests"] < max_requests:
            try:
                async with session.get(url) as response:
                    await response.read()
                    counts["requests"] += 1
                    counts["non_2xx"] += not 200 <= response.status < 300
            except (aiohttp.ClientError, OSError):
                counts["errors"] += 1
                await asyncio.sleep(0.01)

    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.perf_counter()
        await asyncio.gather(*(one_connection(session) for _ in range(concurrency)))
        seconds = time.perf_counter() - start
    return {**counts, "seconds": seconds}


def run_python(
    url: str, concurrency: int, duration: float, env: dict[str, str], cwd: str
) -> dict[str, Any]:
    """The aiohttp client in a separate process, so it never shares a CPU slice with the server."""
    command = [
        sys.executable,
        "-m",
        "benchmarks.loadgen",
        url,
        f"--concurrency={concurrency}",
        f"--duration={duration}",
    ]
    out = subprocess.run(
        command, capture_output=True, text=True, timeout=duration + 60, env=env, cwd=cwd
    )
    for line in reversed(out.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            result: dict[str, Any] = json.loads(line[len(RESULT_PREFIX) :])
            return result
    raise RuntimeError(f"load client failed ({out.returncode}): {out.stderr[-500:]}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--max-requests", type=int, default=5_000_000)
    args = parser.parse_args(argv)
    emit(asyncio.run(load(args.url, args.concurrency, args.duration, args.max_requests)))


if __name__ == "__main__":
    main()
