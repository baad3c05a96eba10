"""A memory batch (``stats`` and ``leak`` events) as the stdout reporter prints it in its
``pretty`` format."""

from __future__ import annotations

from typing import Any

from tracer.encoding import encode_json


def _bytes(n: Any) -> str:
    if not isinstance(n, (int, float)):
        return "?"
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(value) < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1000
    return "?"  # pragma: no cover


def _blocks(n: Any) -> str:
    return f"{n:,} blocks" if isinstance(n, int) else "?"


def _trend(t: Any) -> str:
    return f"{t:+.1f}%" if isinstance(t, (int, float)) else "?"


def _seconds(s: Any) -> str:
    return f"{s:.3f} s" if isinstance(s, (int, float)) else "?"


def _who(data: dict[str, Any]) -> str:
    return f"{data.get('service', '?')}[{data.get('pid', '?')}]"


def render(data: dict[str, Any]) -> str:
    """Readable lines for one memory batch (``{"service", ..., "memory": {...}}``)."""
    body = data.get("memory")
    if not isinstance(body, dict):
        return "memory " + encode_json(body).decode()
    event = body.get("event")
    if event == "leak":
        unit = body.get("unit")
        growth = body.get("growth")
        amount = _bytes(growth) if unit == "bytes" else _blocks(growth)
        return (
            f"memory LEAK {_who(data)} {body.get('measure', '?')}: {body.get('reason', '?')}"
            f" (+{amount}, {body.get('start', '?')} .. {body.get('end', '?')})"
        )
    if event == "stats":
        found = body.get("rss")
        rss: dict[str, Any] = found if isinstance(found, dict) else {}
        return (
            f"memory stats {_who(data)}"
            f" heap {_blocks(body.get('current_base'))}"
            f" (estimated {_blocks(body.get('estimated_base'))},"
            f" trend {_trend(body.get('usage_trend'))})"
            f" rss {_bytes(body.get('rss_bytes'))}"
            f" (estimated {_bytes(rss.get('estimated_base'))},"
            f" trend {_trend(rss.get('usage_trend'))})"
            f" gc full {body.get('num_full_gc', '?')} younger {body.get('num_inc_gc', '?')}"
            f" pause {_seconds(body.get('gc_pause_seconds'))}"
            f" uncollectable {body.get('uncollectable', '?')}"
        )
    return "memory " + encode_json(body).decode()
