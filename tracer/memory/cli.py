"""``tracer heap show FILE`` and ``tracer heap diff OLD NEW``: heap snapshots, read.

Both print for a terminal, or one JSON document with ``--json``. A file that is missing, not a
regular file, too large, not a snapshot, or of a newer format version is one line on stderr and
exit status 2. Text from the file reaches the terminal with control characters escaped.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import stat
import sys
import zlib
from datetime import datetime, timezone
from typing import Any

from tracer.memory.heapdiff import human
from tracer.memory.snapshot import FORMAT, VERSION

# The largest snapshot read, uncompressed. A real one is tens of KB for a few hundred types and
# a few MB for the largest applications; the cap bounds the memory a hostile file (a gzip
# bomb, a huge or endless file) can make the reader take.
MAX_BYTES = 16 << 20


class SnapshotError(Exception):
    """A file that cannot be read as a heap snapshot; the message says why."""


def _read(path: str) -> bytes:
    """At most ``MAX_BYTES + 1`` bytes of the regular file ``path``."""
    try:
        # O_NONBLOCK: opening a FIFO without a writer returns at once instead of waiting; the
        # check below then refuses it, as it refuses devices and folders.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise SnapshotError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SnapshotError(f"{path} is not a regular file")
        with open(fd, "rb", closefd=False) as f:
            return f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise SnapshotError(f"cannot read {path}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)


def _too_large(path: str) -> SnapshotError:
    return SnapshotError(
        f"{path} is not a heap snapshot (larger than {MAX_BYTES >> 20} MiB uncompressed)"
    )


def load(path: str) -> dict[str, Any]:
    """The snapshot document in ``path`` (gzip-compressed or plain JSON)."""
    data = _read(path)
    if len(data) > MAX_BYTES:
        raise _too_large(path)
    try:
        if data[:2] == b"\x1f\x8b":
            # Read through GzipFile with a size, not gzip.decompress: a bomb stops at the cap.
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as unpacked:
                data = unpacked.read(MAX_BYTES + 1)
            if len(data) > MAX_BYTES:
                raise _too_large(path)
        doc = json.loads(data)
    except RecursionError as exc:
        raise SnapshotError(f"{path} is not a heap snapshot (JSON nested too deeply)") from exc
    except MemoryError as exc:
        raise SnapshotError(f"{path} is not a heap snapshot (too large to read)") from exc
    except (OSError, EOFError, zlib.error, ValueError) as exc:
        raise SnapshotError(
            f"{path} is not a heap snapshot (not gzip or JSON: {_shown(str(exc))})"
        ) from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise SnapshotError(f"{path} is not a heap snapshot (no 'format': {FORMAT!r})")
    version = doc.get("version")
    # type() rather than isinstance(): JSON's true is a bool, and bool is an int subclass.
    if type(version) is not int or version < 1:
        raise SnapshotError(
            f"{path} is a damaged heap snapshot (format version {_shown(repr(version))}"
            " is not a whole number from 1)"
        )
    if version > VERSION:
        raise SnapshotError(
            f"{path} is a heap snapshot of format version {version}; this tracer reads"
            f" versions up to {VERSION}"
        )
    census = doc.get("census")
    if not isinstance(census, dict) or not isinstance(census.get("types"), list):
        raise SnapshotError(f"{path} is a damaged heap snapshot (no census)")
    return doc


def _shown(text: str, limit: int = 80) -> str:
    """``text`` cut to ``limit`` characters, for a message quoting a file's content."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


# Control characters (C0, DEL, C1), Unicode line separators and bidirectional overrides: a
# file's text would otherwise move the cursor, retitle the window, forge an output line or
# reorder what is shown. Each is printed as its Python escape.
_ESCAPES: dict[int, str] = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))}
_ESCAPES.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})
_ESCAPES.update(
    {
        code: f"\\u{code:04x}"
        for code in (0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A))
    }
)


def printable(line: str) -> str:
    """``line`` with every character that a terminal would act on escaped."""
    return line.translate(_ESCAPES)


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


def _holder(h: dict[str, Any]) -> str:
    """A container that holds a type's instances: its name, type and length (and the change of
    its length, and how many of the type it holds, when known)."""
    text = f"{h['held_by']} ({h['what']}, len {_num(h.get('len'))}"
    before = h.get("len_before")
    if isinstance(before, int) and isinstance(h.get("len"), int):
        text += f", {_signed(h['len'] - before)}"
    if h.get("count") != h.get("len"):
        text += f"; {_num(h.get('count'))} of the type"
    return text + ")"


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
    return "\n".join(map(printable, lines))


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
    holders = new.get("holders")
    if isinstance(holders, dict):
        # A holder's length in the older snapshot, wherever it was listed there.
        lengths: dict[str, Any] = {c["held_by"]: c.get("len") for c in old.get("containers") or []}
        for held in (old.get("holders") or {}).values():
            lengths.update((h["held_by"], h.get("len")) for h in held)
        for t in types:
            t["held_by"] = [
                {**h, "len_before": lengths.get(h["held_by"])} for h in holders.get(t["what"], [])
            ]
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
        "holders_recorded": isinstance(holders, dict),
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
        # Under the type's name, the module-level containers holding its instances.
        lines.extend(f"{'':>38}  held by {_holder(h)}" for h in t.get("held_by", []))
    if not grown:
        lines.append("  (nothing grew)")
    more = len(grown) - top
    lines.append(f"({more} more grew, {shrunk} shrank)" if more > 0 else f"({shrunk} shrank)")
    if grown and not d.get("holders_recorded"):
        lines.append("(the newer snapshot does not record what holds each type)")
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
    return "\n".join(map(printable, lines))


# -- the command --------------------------------------------------------------------------------


def main(action: str, files: list[str], as_json: bool, top: int) -> int:
    """``tracer heap show|diff``; the exit status (2: a file could not be read)."""
    try:
        docs = [load(path) for path in files]
    except SnapshotError as exc:
        return _fail(action, str(exc))
    try:
        if action == "show":
            out = json.dumps(docs[0], indent=1) if as_json else show(docs[0], top)
        else:
            result = diff(docs[0], docs[1])
            out = json.dumps(result, indent=1) if as_json else render_diff(result, top)
    except (
        KeyError,
        TypeError,
        ValueError,
        AttributeError,
        IndexError,
        OverflowError,
        RecursionError,
    ) as exc:
        # A file that passed the format check but lacks a field or holds the wrong kind of value.
        names = " and ".join(files)
        return _fail(
            action, f"{names}: a damaged heap snapshot ({type(exc).__name__}: {_shown(str(exc))})"
        )
    return _emit(out)


def _fail(action: str, message: str) -> int:
    print(printable(f"tracer heap {action}: {message}"), file=sys.stderr)
    return 2


def _emit(out: str) -> int:
    """Print ``out``; a reader that stops early (``| head``) ends the command quietly."""
    try:
        sys.stdout.write(out + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader has what it wanted. What is still buffered would fail again when the
        # interpreter flushes stdout at exit, so stdout now goes to the null device.
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    return 0
