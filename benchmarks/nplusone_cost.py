"""What the N+1 check costs per request, to be counted under callgrind (benchmarks/README.md).

``python -m benchmarks.nplusone_cost MODE COUNT``: COUNT requests, each a root ``tracer.span()``
(MODE ``span-*``) or one holding a sqlite3 ``SELECT 1`` (``db-*``), with the check on (``*-on``,
the default threshold) or off (``*-off``); metrics and the memory watch off, spans discarded.
"""

from __future__ import annotations

import sqlite3
import sys
from typing import Any

import tracer


class Discard:
    def send(self, data: Any, callback: Any) -> None:
        callback(None)


def main() -> None:
    mode, n = sys.argv[1], int(sys.argv[2])
    kind, state = mode.split("-")
    tracer.install(
        app_name="n1-cost",
        reporter=Discard(),
        metrics=False,
        memory_watch=False,
        spool=False,
        n_plus_one_threshold=10 if state == "on" else None,
        flush_interval=0.5,
    )
    conn = sqlite3.connect(":memory:")
    for _ in range(n):
        with tracer.span("request"):
            if kind == "db":
                conn.execute("SELECT 1").fetchall()
    tracer.flush()
    tracer.uninstall()


if __name__ == "__main__":
    main()
