"""A metrics batch as the stdout reporter prints it in its ``pretty`` format.

A few aligned lines: the service and the interval, requests per minute by status class (servers
and clients), the response-time percentiles of each route (the busiest first, at most
:data:`MAX_ROWS`), CPU, RSS, garbage collection and event-loop lag. Missing values print as
``-``; nothing here raises on an odd body.
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["MAX_ROWS", "render"]

#: Routes (and client targets) printed per batch; the rest are summed up in one line.
MAX_ROWS = 10
_CLASSES = ("2xx", "3xx", "4xx", "5xx", "other", "error")


def _num(value: Any, digits: int = 1) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def _ms(value: Any) -> str:
    text = _num(value, 1)
    return text if text == "-" else text + " ms"


def _bytes(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "-"
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if amount < 1024 or unit == "GiB":
            return f"{amount:.1f} {unit}" if unit != "B" else f"{int(amount)} B"
        amount /= 1024
    return "-"  # pragma: no cover


def _clock(us: Any) -> str:
    if isinstance(us, bool) or not isinstance(us, int):
        return "?"
    return time.strftime("%H:%M:%S", time.gmtime(us / 1_000_000))


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _rpm_line(label: str, part: dict[str, Any]) -> str:
    rpm = _dict(part.get("rpm_by_class"))
    classes = "  ".join(
        f"{k} {_num(rpm.get(k))}" for k in _CLASSES if k in rpm and (k[0].isdigit() or rpm[k])
    )
    return f"  {label:<8}{_num(part.get('rpm')):>10} rpm   {classes}".rstrip()


def _rows(title: str, rows: Any, name: Any, omitted: Any) -> list[str]:
    if not isinstance(rows, list) or not rows:
        return []
    shown = [r for r in rows[:MAX_ROWS] if isinstance(r, dict)]
    names = [name(r) for r in shown]
    width = max(len(n) for n in names)
    lines = [f"  {title}"]
    for label, row in zip(names, shown, strict=True):
        lines.append(
            f"    {label:<{width}}  {_num(row.get('requests')):>7} req"
            f"  p50 {_ms(row.get('p50_ms')):>10}  p95 {_ms(row.get('p95_ms')):>10}"
            f"  p99 {_ms(row.get('p99_ms')):>10}"
        )
    more = len(rows) - len(shown) + (omitted if isinstance(omitted, int) else 0)
    if more > 0:
        lines.append(f"    ... {more} more")
    return lines


def render(data: dict[str, Any]) -> str:
    """Readable lines for one metrics batch (``{"service", ..., "metrics": {...}}``)."""
    body = _dict(data.get("metrics"))
    interval = _dict(body.get("interval"))
    seconds = interval.get("seconds")
    lines = [
        f"metrics {data.get('service', '?')} pid {data.get('pid', '?')}"
        f"  {_clock(interval.get('start_us'))}-{_clock(interval.get('end_us'))} UTC"
        f" ({_num(seconds)} s){'  final' if body.get('final') else ''}"
    ]
    server = _dict(body.get("server"))
    client = _dict(body.get("client"))
    lines.append(_rpm_line("server", server))
    if client.get("requests"):
        lines.append(_rpm_line("client", client))
    lines += _rows(
        "server routes",
        server.get("routes"),
        lambda r: f"{r.get('method', '')} {r.get('route', '')}".strip(),
        server.get("omitted"),
    )
    lines += _rows(
        "client targets",
        client.get("targets"),
        lambda r: f"{r.get('method', '')} {r.get('server_address', '')}:{r.get('server_port', '')}",
        client.get("omitted"),
    )
    cpu = _dict(body.get("cpu"))
    memory = _dict(body.get("memory"))
    gc = _dict(body.get("gc"))
    lag = _dict(body.get("event_loop_lag"))
    collections = _dict(gc.get("collections"))
    pauses = _dict(gc.get("pause_ms"))
    per_gen = "  ".join(f"gen{g} {_num(n)}x {_ms(pauses.get(g))}" for g, n in collections.items())
    lag_value = lag.get("p99_ms") if lag.get("p99_ms") is not None else lag.get("max_ms")
    lines.append(
        f"  {'cpu':<8}{_num(cpu.get('percent')):>10} %     ({_num(cpu.get('seconds'), 3)} s)"
    )
    lines.append(f"  {'rss':<8}{_bytes(memory.get('rss_bytes')):>12}")
    lines.append(f"  {'gc':<8}{per_gen or '-'}")
    lines.append(f"  {'loop lag':<8}{_ms(lag_value):>12}")
    return "\n".join(lines)
