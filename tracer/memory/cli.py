"""``tracer heap show FILE`` and ``tracer heap diff OLD NEW``: heap snapshots, read.

Both print for a terminal, or one JSON document with ``--json``. A file that is missing, not a
snapshot, or of a newer format version is one line on stderr and exit status 2.
"""

from __future__ import annotations

import gzip
import json
import sys
import zlib
from datetime import datetime, timezone
from typing import Any

from tracer.memory.heapdiff import human
from tracer.memory.snapshot import FORMAT, VERSION


class SnapshotError(Exception):
    """A file that cannot be read as a heap snapshot; the message says why."""


def load(path: str) -> dict[str, Any]:
    """The snapshot document in ``path`` (gzip-compressed or plain JSON)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise SnapshotError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        doc = json.loads(data)
    except (OSError, EOFError, zlib.error, ValueError) as exc:
        raise SnapshotError(f"{path} is not a heap snapshot (not gzip or JSON: {exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise SnapshotError(f"{path} is not a heap snapshot (no 'format': {FORMAT!r})")
    version = doc.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise SnapshotError(
            f"{path} is a heap snapshot of format version {version!r}; this tracer reads"
            f" versions up to {VERSION}"
        )
    census = doc.get("census")
    if not isinstance(census, dict) or not isinstance(census.get("types"), list):
        raise SnapshotError(f"{path} is a damaged heap snapshot (no census)")
    return doc


def _when(doc: dict[str, Any]) -> str:
    try:
        stamp = datetime.fromtimestamp(doc["time_us"] / 1e6, timezone.utc)
    except (KeyError, TypeError, ValueError, OverflowError):
        return "?"
    return stamp.strftime("%Y-%m-%d %H:%M:%S UTC")


def _num(n: Any) -> str:
    return f"{n:,}" if isinstance(n, int) else "?"


def _signed(n: int) -> str:
    return f"{n:+,}"


def _signed_size(n: int) -> str:
    return ("+" if n >= 0 else "") + human(n)


def _site(site: dict[str, Any]) -> str:
    code = f"  {site['code']}" if site.get("code") else ""
    return f"{site.get('file')}:{site.get('line')}{code}"


# -- show ---------------------------------------------------------------------------------------


def show(doc: dict[str, Any], top: int = 20) -> str:
    """A snapshot for a terminal: top types by size and by count, the largest containers and
    the top allocation sites."""
    proc = doc.get("process", {})
    mem = doc.get("memory", {})
    gcs = doc.get("gc", {})
    census = doc["census"]
    types: list[dict[str, Any]] = census["types"]
    rss = mem.get("rss_bytes")
    lines = [
        f"heap snapshot of {proc.get('service', '?')} (pid {proc.get('pid', '?')} on"
        f" {proc.get('host', '?')}, Python {proc.get('python', '?')}) at {_when(doc)},"
        f" taken on {doc.get('reason', '?')}",
        f"rss {human(rss) if isinstance(rss, int) else '?'}; Python heap"
        f" {_num(census.get('nodes'))} objects tracked by the gc,"
        f" {census.get('size', '?')} (shallow); census took"
        f" {1000 * float(census.get('seconds', 0)):.0f} ms",
        f"gc: counts {gcs.get('counts')}, thresholds {gcs.get('thresholds')},"
        f" uncollectable garbage {gcs.get('garbage')}",
    ]
    if doc.get("leak"):
        leak = doc["leak"]
        reason = leak.get("reason") if isinstance(leak, dict) else leak
        lines.append(f"leak: {reason}")
    lines += ["", "top types by size:", f"{'size':>12} {'count':>12}  type"]
    for t in types[:top]:
        lines.append(f"{t['size']:>12} {_num(t['count']):>12}  {t['what']}")
    lines += ["", "top types by count:", f"{'count':>12} {'size':>12}  type"]
    for t in sorted(types, key=lambda t: (-t["count"], t["what"]))[:top]:
        lines.append(f"{_num(t['count']):>12} {t['size']:>12}  {t['what']}")
    containers = doc.get("containers") or []
    if containers:
        lines += ["", "largest containers:", f"{'size':>12} {'len':>12}  type  held by"]
        for c in containers[:top]:
            held = f"  {c['held_by']}" if c.get("held_by") else ""
            lines.append(f"{c['size']:>12} {_num(c.get('len')):>12}  {c['what']}{held}")
    lines.append("")
    sites = doc.get("allocation_sites")
    if not sites:
        lines.append(
            "allocation sites: none (tracemalloc was off; tracer.memory.trace() turns it on"
            " for a while)"
        )
    else:
        lines.append(
            f"top allocation sites (tracemalloc, {sites.get('frames')} frames,"
            f" {'tracing now' if sites.get('source') == 'tracing' else 'kept by trace()'}):"
        )
        lines.append(f"{'size':>12} {'blocks':>12}  file:line")
        for s in sites.get("sites", [])[:top]:
            lines.append(f"{s['size']:>12} {_num(s['count']):>12}  {_site(s)}")
    return "\n".join(lines)


# -- diff ---------------------------------------------------------------------------------------


def diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """What grew from ``old`` to ``new``: types and allocation sites, largest growth first."""
    before = {t["what"]: t for t in old["census"]["types"]}
    after = {t["what"]: t for t in new["census"]["types"]}
    types = []
    for name in before.keys() | after.keys():
        b, a = before.get(name, {}), after.get(name, {})
        count_b, count_a = b.get("count", 0), a.get("count", 0)
        size = a.get("size_bytes", 0) - b.get("size_bytes", 0)
        if size or count_a != count_b:
            types.append(
                {
                    "what": name,
                    "size_bytes": size,
                    "size": human(size),
                    "+": max(count_a - count_b, 0),
                    "-": max(count_b - count_a, 0),
                    "count_before": count_b,
                    "count_after": count_a,
                }
            )
    types.sort(key=lambda t: (-t["size_bytes"], -t["+"], t["what"]))
    sites = _site_diff(old.get("allocation_sites"), new.get("allocation_sites"))

    def rss(doc: dict[str, Any]) -> int | None:
        value = doc.get("memory", {}).get("rss_bytes")
        return value if isinstance(value, int) else None

    rss_old, rss_new = rss(old), rss(new)
    return {
        "old": _about(old),
        "new": _about(new),
        "seconds": (new.get("time_us", 0) - old.get("time_us", 0)) / 1e6,
        "rss_bytes": None if rss_old is None or rss_new is None else rss_new - rss_old,
        "nodes": new["census"].get("nodes", 0) - old["census"].get("nodes", 0),
        "size_bytes": new["census"].get("size_bytes", 0) - old["census"].get("size_bytes", 0),
        "types": types,
        "allocation_sites": sites,
    }


def _about(doc: dict[str, Any]) -> dict[str, Any]:
    proc = doc.get("process", {})
    return {
        "time": doc.get("time"),
        "time_us": doc.get("time_us"),
        "service": proc.get("service"),
        "pid": proc.get("pid"),
        "nodes": doc["census"].get("nodes"),
    }


def _site_diff(old: Any, new: Any) -> dict[str, Any] | None:
    """Sites that grew: by line between two traced snapshots; when only the newer one has
    sites, what was traced there (all of it was allocated after the older one)."""
    if not isinstance(new, dict) or not new.get("sites"):
        return None
    new_sites = new["sites"]
    if (
        not isinstance(old, dict)
        or not old.get("sites")
        or old.get("taken_at") == new.get("taken_at")
    ):
        return {"compared": False, "sites": new_sites}
    base = {(s["file"], s["line"]): s for s in old["sites"]}
    grown = []
    for s in new_sites:
        b = base.get((s["file"], s["line"]), {})
        size = s["size_bytes"] - b.get("size_bytes", 0)
        if size > 0:
            grown.append(
                {
                    **s,
                    "size_bytes": size,
                    "size": human(size),
                    "count": s["count"] - b.get("count", 0),
                }
            )
    grown.sort(key=lambda s: -s["size_bytes"])
    return {"compared": True, "sites": grown}


def render_diff(d: dict[str, Any], top: int = 20) -> str:
    """A diff for a terminal: what grew, largest first (a leak is on the first line)."""
    grown = [t for t in d["types"] if t["size_bytes"] > 0 or t["+"] > 0]
    shrunk = len(d["types"]) - len(grown)
    rss = d["rss_bytes"]
    old, new = d["old"], d["new"]
    who = f"{old.get('service')} (pid {old.get('pid')})"
    if (new.get("service"), new.get("pid")) != (old.get("service"), old.get("pid")):
        who += f" -> {new.get('service')} (pid {new.get('pid')})"
    lines = [
        f"heap diff of {who}: {_when(old)} -> {_when(new)}, {d['seconds']:.1f} s apart",
        f"all: objects {_signed(d['nodes'])}, size {_signed_size(d['size_bytes'])} (shallow),"
        f" rss {_signed_size(rss) if rss is not None else '?'}",
        "",
        "types that grew, largest first:",
        f"{'size':>12} {'count':>10} {'now':>12}  type",
    ]
    for t in grown[:top]:
        lines.append(
            f"{_signed_size(t['size_bytes']):>12} {_signed(t['+'] - t['-']):>10}"
            f" {_num(t['count_after']):>12}  {t['what']}"
        )
    if not grown:
        lines.append("  (nothing grew)")
    more = len(grown) - top
    lines.append(f"({more} more grew, {shrunk} shrank)" if more > 0 else f"({shrunk} shrank)")
    sites = d["allocation_sites"]
    lines.append("")
    if sites is None:
        lines.append("allocation sites: none (tracemalloc was off in the newer snapshot)")
    else:
        what = (
            "allocation sites that grew"
            if sites["compared"]
            else "allocation sites traced in the newer snapshot (still alive)"
        )
        lines.append(f"{what}, largest first:")
        lines.append(f"{'size':>12} {'blocks':>10}  file:line")
        for s in sites["sites"][:top]:
            lines.append(
                f"{_signed_size(s['size_bytes']):>12} {_signed(s['count']):>10}  {_site(s)}"
            )
    return "\n".join(lines)


# -- the command --------------------------------------------------------------------------------


def main(action: str, files: list[str], as_json: bool, top: int) -> int:
    """``tracer heap show|diff``; the exit status (2: a file could not be read)."""
    try:
        docs = [load(path) for path in files]
    except SnapshotError as exc:
        print(f"tracer heap {action}: {exc}", file=sys.stderr)
        return 2
    try:
        if action == "show":
            out = json.dumps(docs[0], indent=1) if as_json else show(docs[0], top)
        else:
            result = diff(docs[0], docs[1])
            out = json.dumps(result, indent=1) if as_json else render_diff(result, top)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        # A file that passed the format check but lacks a field or holds the wrong kind of value.
        names = " and ".join(files)
        print(
            f"tracer heap {action}: {names}: a damaged heap snapshot ({type(exc).__name__}: {exc})",
            file=sys.stderr,
        )
        return 2
    print(out)
    return 0
