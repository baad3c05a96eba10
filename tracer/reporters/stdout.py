"""The stdout reporter: one JSON line per span, or each finished trace as an indented tree.

``format="json"`` (the default when stdout is not a terminal) writes one JSON object per line.
``format="pretty"`` (the default on a terminal) prints each trace as a tree with durations as soon
as the batch holding its local root arrives: a span with no parent, or a server span whose parent
(the caller's client span) is not among the spans received, so a downstream service's traces
print too. Children end before their parent, so they have arrived by then. A span that ends after
its trace was printed is printed on its own at once; spans whose root never comes are printed
once they have been quiet for ``linger`` seconds, and everything left at ``flush()`` and at exit.
The first tree is preceded by one line explaining the notation (:data:`LEGEND`).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterable
from typing import Any, TextIO

from tracer.encoding import encode_json
from tracer.reporters import memory_text, metrics_text
from tracer.reporters.base import Batch, Callback

FORMATS = ("json", "pretty")
# The report batches (in place of "spans") and how the pretty format prints each.
REPORT_KINDS = {"metrics": metrics_text.render, "memory": memory_text.render}

LEGEND = (
    "legend: [service] kind name status duration @+start, the start counted from the trace's"
    " first span; a child span is indented under its parent"
)

# Trace ids already printed, remembered so that a late span of one prints at once.
_PRINTED_MAX = 4096


def dumps(record: Any) -> str:
    """One record as a line of JSON: the shared encoder's, ASCII-only so any stream takes it."""
    return encode_json(record, ascii=True).decode("ascii")


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


def _n_plus_one(spans: list[dict[str, Any]]) -> str:
    """`` N+1: 11 x SELECT ...`` for each span tagged ``n_plus_one`` (the N+1 check's tag)."""
    found = ""
    for span in spans:
        tag = (span.get("tags") or {}).get("n_plus_one")
        if isinstance(tag, dict):
            found += f" N+1: {tag.get('count')} x {tag.get('statement')}"
    return found


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
    count = f"{len(spans)} span" if len(spans) == 1 else f"{len(spans)} spans"
    out = [
        f"trace {first.get('trace_id')} request-id {first.get('request_id')}"
        f" ({count}, services: {', '.join(services)}){_n_plus_one(spans)}"
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


def _has_local_root(spans: list[dict[str, Any]]) -> bool:
    """Whether a trace's spans hold the root of this process's part of it: a span without a
    parent, or a server span whose parent (a client span) is not among them."""
    ids = {s.get("span_id") for s in spans}
    for s in spans:
        parent = s.get("parent_id")
        if parent is None or (s.get("kind") == "server" and parent not in ids):
            return True
    return False


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
        self._lock = threading.Condition()
        self._traces: dict[str, list[dict[str, Any]]] = {}
        self._seen: dict[str, float] = {}
        self._printed: dict[str, None] = {}
        self._legend = False
        self._timer: threading.Thread | None = None

    def _out(self) -> TextIO:
        # Looked up at each write so that a replaced sys.stdout (tests, daemons) is honoured.
        return self.stream if self.stream is not None else sys.stdout

    def send(self, data: Batch, callback: Callback) -> None:
        try:
            report = next((k for k in REPORT_KINDS if k in data), None)
            if self.format == "json":
                lines = [dumps(s) for s in data.get("spans", ())]
                if report is not None:
                    lines.append(dumps(data))
                if lines:
                    with self._lock:
                        out = self._out()
                        out.write("\n".join(lines) + "\n")
                        out.flush()
            elif report is not None:
                text = REPORT_KINDS[report](data)
                with self._lock:
                    out = self._out()
                    out.write(text.rstrip("\n") + "\n")
                    out.flush()
            else:
                self._collect(data.get("spans", ()))
        except Exception as exc:
            callback(exc)
            return
        callback(None)

    def _collect(self, spans: Iterable[dict[str, Any]]) -> None:
        now = time.monotonic()
        with self._lock:
            touched: dict[str, None] = {}
            for s in spans:
                tid = str(s.get("trace_id"))
                self._traces.setdefault(tid, []).append(s)
                self._seen[tid] = now
                touched[tid] = None
            # Decided once the whole batch is in: a server span answering a call this very
            # process made has its parent, the client span, in the same batch or a later one.
            ready = [
                tid for tid in touched if tid in self._printed or _has_local_root(self._traces[tid])
            ]
            ready += [
                tid
                for tid, seen in self._seen.items()
                if now - seen >= self.linger and tid not in ready
            ]
            self._print(ready)
            if self._traces:
                self._start_timer()

    def _print(self, tids: list[str]) -> None:
        """Print (and forget) the waiting traces ``tids``; called with the lock held."""
        traces = [self._traces.pop(tid) for tid in tids]
        for tid in tids:
            del self._seen[tid]
            self._printed.pop(tid, None)
            self._printed[tid] = None
        while len(self._printed) > _PRINTED_MAX:
            del self._printed[next(iter(self._printed))]
        if traces:
            text = "".join(render_trace(t) + "\n\n" for t in traces)
            if not self._legend:
                self._legend = True
                text = LEGEND + "\n\n" + text
            out = self._out()
            out.write(text)
            out.flush()

    def _start_timer(self) -> None:
        # Spans whose root never arrives are printed after `linger` quiet seconds even when no
        # further batch comes to notice it; the thread ends once nothing waits.
        if self._timer is not None and self._timer.is_alive():
            self._lock.notify_all()
            return
        timer = threading.Thread(target=self._linger, name="tracer-stdout", daemon=True)
        try:
            timer.start()
        except RuntimeError:
            # No new thread at interpreter shutdown (Python 3.12 and newer): the exit's flush
            # prints what is left.
            return
        self._timer = timer

    def _linger(self) -> None:
        with self._lock:
            while self._seen:
                now = time.monotonic()
                oldest = min(self._seen.values())
                if now - oldest >= self.linger:
                    self._print([t for t, seen in self._seen.items() if now - seen >= self.linger])
                    continue
                self._lock.wait(max(0.01, oldest + self.linger - now))

    def flush(self, timeout: float = 0.0) -> bool:
        """Print every trace still waiting for its root."""
        with self._lock:
            self._print(list(self._traces))
        return True

    def close(self) -> None:
        self.flush()

    def after_fork(self) -> None:
        """In a forked child: the parent's waiting spans are the parent's to print, and neither
        its timer thread nor a lock it may have held at the fork came along."""
        self._lock = threading.Condition()
        self._traces.clear()
        self._seen.clear()
        self._timer = None


def create(format: str | None = None, stream: TextIO | None = None, linger: float = 2.0) -> Any:
    """A stdout reporter; ``format`` is ``"json"`` or ``"pretty"`` (default: pretty on a TTY)."""
    return StdoutReporter(format=format, stream=stream, linger=linger)
