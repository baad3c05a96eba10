"""The database rows' calls: a trivial statement per call, sqlite3 in memory and psycopg against
a PostgreSQL server (``TRACER_BENCH_POSTGRES``, a libpq connection string).

``python -m benchmarks.db_calls`` times one call of each (wall time, in-process: untraced,
tracer, OpenTelemetry's instrumentation), a figure that drifts with the machine's load; the
instruction counts of ``python -m benchmarks.instructions sqlite3`` (and ``psycopg``) do not.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from benchmarks.common import make_setup

Calls = Any
POSTGRES_DSN = "TRACER_BENCH_POSTGRES"
STATEMENT = "SELECT 1"


@contextmanager
def sqlite3_calls(url: str) -> Iterator[Calls]:
    """``cursor.execute("SELECT 1")`` and its row, on an in-memory database."""
    import sqlite3

    connections: list[Any] = []

    def call(count: int, fresh: bool) -> int:
        # A new connection after each switch: both tracers wrap a connection as it is made.
        if fresh or not connections:
            if connections:
                connections.pop().close()
            connections.append(sqlite3.connect(":memory:"))
        cursor = connections[0].cursor()
        ok = 0
        for _ in range(count):
            ok += cursor.execute(STATEMENT).fetchone() == (1,)
        return ok

    try:
        yield call
    finally:
        if connections:
            connections.pop().close()


@contextmanager
def psycopg_calls(url: str) -> Iterator[Calls]:
    """``cursor.execute("SELECT 1")`` and its row, over one psycopg (3) connection."""
    import psycopg

    dsn = os.environ.get(POSTGRES_DSN)
    if not dsn:
        raise SystemExit(f"set {POSTGRES_DSN} to a libpq connection string for the psycopg row")
    connections: list[Any] = []

    def call(count: int, fresh: bool) -> int:
        if fresh or not connections:
            if connections:
                connections.pop().close()
            connections.append(psycopg.connect(dsn, autocommit=True))
        cursor = connections[0].cursor()
        ok = 0
        for _ in range(count):
            ok += cursor.execute(STATEMENT).fetchone() == (1,)
        return ok

    try:
        yield call
    finally:
        if connections:
            connections.pop().close()


def wall(kind: str, variant: str, calls: int) -> float:
    """Microseconds per call, the best of five runs of ``calls`` calls."""
    setup = make_setup(variant, [kind])
    make = sqlite3_calls if kind == "sqlite3" else psycopg_calls
    try:
        with make("") as call:
            call(min(calls, 1000), True)
            best = float("inf")
            for _ in range(5):
                started = time.perf_counter()
                assert call(calls, False) == calls
                best = min(best, time.perf_counter() - started)
                setup.flush()
    finally:
        setup.close()
    return best / calls * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.db_calls", description=__doc__)
    parser.add_argument("kind", choices=("sqlite3", "psycopg"), nargs="?", default="sqlite3")
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args(argv)
    base = None
    print(f"{args.kind}: {STATEMENT!r} per call, best of 5 runs of {args.calls:,} calls")
    for variant in ("untraced", "tracer", "otel"):
        micros = wall(args.kind, variant, args.calls)
        base = micros if base is None else base
        print(f"{variant:10}{micros:>10.2f} µs{micros - base:>+10.2f} µs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
