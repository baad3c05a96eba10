"""``tracer profile show FILE [--route R] [--top N] [--json]``: a profile's hottest functions.

FILE is any of the three files a profile is written as (speedscope JSON, collapsed stacks,
pprof), recognised by its content. The table lists, for the whole profile or for one route, the
functions with the most self weight (samples for collapsed stacks and pprof, CPU nanoseconds for
speedscope) and their total weight, each also as a share. A file that cannot be read is one
line on stderr and exit status 2.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import stat
import sys
import zlib
from typing import Any

from tracer.memory.cli import printable
from tracer.profiler import formats

# The largest profile read, uncompressed: a gzip bomb or an endless file stops here.
MAX_BYTES = 256 << 20


class ProfileFileError(Exception):
    """A file that cannot be read as a profile; the message says why."""


def load(path: str) -> tuple[str, list[formats.Row]]:
    """The format and rows of the profile file ``path``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ProfileFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ProfileFileError(f"{path} is not a regular file")
        with open(fd, "rb", closefd=False) as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ProfileFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
    try:
        if data[:2] == b"\x1f\x8b":
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as unpacked:
                data = unpacked.read(MAX_BYTES + 1)
        if len(data) > MAX_BYTES:
            raise ProfileFileError(f"{path} is larger than {MAX_BYTES >> 20} MiB uncompressed")
        return formats.read(data)
    except ProfileFileError:
        raise
    except (OSError, EOFError, zlib.error, ValueError, KeyError, TypeError, IndexError) as exc:
        raise ProfileFileError(
            f"{path} is not a profile tracer reads (speedscope, collapsed stacks or pprof):"
            f" {type(exc).__name__}: {str(exc)[:80]}"
        ) from exc
    except RecursionError as exc:
        raise ProfileFileError(f"{path} is not a profile (nested too deeply)") from exc


def _unit(kind: str) -> str:
    return "CPU ns" if kind == "speedscope" else "samples"


def render(path: str, kind: str, table: dict[str, Any]) -> str:
    """The terminal text of :func:`formats.top`'s ``table``."""
    unit = _unit(kind)
    what = "the whole profile" if table["route"] is None else f"route {table['route']}"
    lines = [
        f"{path} ({kind}): {what}, {table['weight']:,} {unit}",
        "",
        "routes: "
        + (", ".join(f"{route} {weight:,}" for route, weight in table["routes"].items()) or "-"),
        "",
        f"{'self %':>8} {'self':>14} {'total %':>8} {'total':>14}  function",
    ]
    for row in table["functions"]:
        lines.append(
            f"{row['self_percent']:>8.2f} {row['self']:>14,} {row['total_percent']:>8.2f}"
            f" {row['total']:>14,}  {row['function']}"
        )
    if not table["functions"]:
        lines.append("(no samples)")
    return "\n".join(printable(line) for line in lines)


def main(path: str, route: str | None, top: int, as_json: bool) -> int:
    """``tracer profile show``; returns the exit status."""
    try:
        kind, rows = load(path)
    except ProfileFileError as exc:
        print(f"tracer: {printable(str(exc))}", file=sys.stderr)
        return 2
    table = formats.top(rows, route, top)
    if as_json:
        print(json.dumps({"file": path, "format": kind, "unit": _unit(kind), **table}, indent=2))
    else:
        print(render(path, kind, table))
    return 0
