"""The stdout reporter: one JSON line per span, or each finished trace as an indented tree.

``format="json"`` (the default when stdout is not a terminal) writes one JSON object per line.
``format="pretty"`` (the default on a terminal) waits for a trace's root span, or for the trace to
be quiet for ``linger`` seconds, and prints the trace as a tree with durations.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any, TextIO

from tracer.reporters.base import Batch, Callback

FORMATS = ("json", "pretty")


def dumps(record: Any) -> str:
    """Compact JSON that is always valid: NaN/infinity become null, unknown objects strings."""
    try:
        return json.dumps(record, separators=(",", ":"), allow_nan=False, default=str)
    except ValueError:
        return json.dumps(_finite(record), separators=(",", ":"), allow_nan=False, default=str)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _ms(us: int) -> str:
    return f"{us / 1000:.1f} ms"


def _line(span: dict[str, Any], base_us: int) -> str:
    http = span.get("http") or {}
    status = http.get("status_code")
    error = span.get("error")
    parts = [f"[{span.get('service')}]", span.get("kind", "?"), str(span.get("name"))]
    if status is not None:
        parts.append(str(status))
    parts.append(_ms(int(span.get("duration_us") or 0)))
    parts.append(f"@+{_ms(int(span.get('start_us') or 0) - base_us)}")
    if error:
        parts.append(f"ERROR {error.get('type')}: {error.get('message')}")
    return " ".join(parts)


def render_trace(spans: Iterable[dict[str, Any]]) -> str:
    """A trace's spans as an indented tree, children ordered by start time."""
    spans = sorted(spans, key=lambda s: s.get("start_us") or 0)
    if not spans:
        return ""
    by_id = {s.get("span_id"): s for s in spans}
    children: dict[Any, list[dict[str, Any]]] = {}
    roots = []
    for s in spans:
        parent = s.get("parent_id")
        if parent in by_id and parent != s.get("span_id"):
            children.setdefault(parent, []).append(s)
        else:
            roots.append(s)
    base = int(spans[0].get("start_us") or 0)
    services = sorted({str(s.get("service")) for s in spans})
    first = spans[0]
    out = [
        f"trace {first.get('trace_id')} request-id {first.get('request_id')}"
        f" ({len(spans)} spans, services: {', '.join(services)})"
    ]

    def walk(node: dict[str, Any], prefix: str, last: bool, top: bool) -> None:
        branch = "" if top else ("└─ " if last else "├─ ")
        out.append(prefix + branch + _line(node, base))
        kids = children.get(node.get("span_id"), [])
        inner = prefix + ("" if top else ("   " if last else "│  "))
        for i, kid in enumerate(kids):
            walk(kid, inner, i == len(kids) - 1, False)

    for root in roots:
        walk(root, "  ", True, True)
    return "\n".join(out)


class StdoutReporter:
    """Writes spans to standard output (see the module docstring for the two formats)."""

    def __init__(
        self, format: str | None = None, stream: TextIO | None = None, linger: float = 2.0
    ) -> None:
        if format is None:
            target = stream if stream is not None else sys.stdout
            format = "pretty" if getattr(target, "isatty", lambda: False)() else "json"
        if format not in FORMATS:
            raise ValueError(f"stdout reporter: format must be one of {FORMATS}, got {format!r}")
        self.format = format
        self.stream = stream
        self.linger = linger
        self._lock = threading.Lock()
        self._traces: dict[str, list[dict[str, Any]]] = {}
        self._seen: dict[str, float] = {}

    def _out(self) -> TextIO:
        # Looked up at each write so that a replaced sys.stdout (tests, daemons) is honoured.
        return self.stream if self.stream is not None else sys.stdout

    def send(self, data: Batch, callback: Callback) -> None:
        try:
            if self.format == "json":
                lines = [dumps(s) for s in data.get("spans", ())]
                if "metrics" in data:
                    lines.append(dumps(data))
                if lines:
                    with self._lock:
                        out = self._out()
                        out.write("\n".join(lines) + "\n")
                        out.flush()
            else:
                self._collect(data.get("spans", ()))
        except Exception as exc:
            callback(exc)
            return
        callback(None)

    def _collect(self, spans: Iterable[dict[str, Any]]) -> None:
        now = time.monotonic()
        ready: list[list[dict[str, Any]]] = []
        with self._lock:
            for s in spans:
                tid = str(s.get("trace_id"))
                self._traces.setdefault(tid, []).append(s)
                self._seen[tid] = now
                if s.get("parent_id") is None:
                    ready.append(self._traces.pop(tid))
                    del self._seen[tid]
            for tid, seen in list(self._seen.items()):
                if now - seen >= self.linger:
                    ready.append(self._traces.pop(tid))
                    del self._seen[tid]
            self._print(ready)

    def _print(self, traces: list[list[dict[str, Any]]]) -> None:
        if traces:
            out = self._out()
            out.write("".join(render_trace(t) + "\n\n" for t in traces))
            out.flush()

    def flush(self, timeout: float = 0.0) -> bool:
        """Print every trace still waiting for its root."""
        with self._lock:
            traces = list(self._traces.values())
            self._traces.clear()
            self._seen.clear()
            self._print(traces)
        return True

    def close(self) -> None:
        self.flush()


def create(format: str | None = None, stream: TextIO | None = None, linger: float = 2.0) -> Any:
    """A stdout reporter; ``format`` is ``"json"`` or ``"pretty"`` (default: pretty on a TTY)."""
    return StdoutReporter(format=format, stream=stream, linger=linger)
