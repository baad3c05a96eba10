"""A recording written as speedscope JSON, collapsed stacks and pprof, and read back.

- **speedscope** (https://www.speedscope.app/file-format-schema.json): the functions in
  ``shared.frames``; one ``sampled`` profile per route (named ``route <route>``, and
  ``outside requests`` for samples no request was running in), weights in CPU nanoseconds.
- **collapsed stacks** (flamegraph.pl's input): one line per stack and route,
  ``route <route>;<root frame>;...;<leaf frame> <samples>``.
- **pprof** (gzipped ``profile.proto``, encoded here by hand: the format is a few messages of
  varints and length-delimited fields): sample types ``samples/count`` and ``cpu/nanoseconds``;
  each sample has the labels ``thread_name`` and, inside a request, ``trace_id``, ``span_id``,
  ``local_root_span_id`` and ``route``.

:func:`read` takes any of the three (by content, not by name) into rows of
``(stack, route, weight)``; :func:`top` turns rows into the hottest functions, self and total.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from typing import Any

from tracer.profiler.sampler import Recording

SCHEMA = "https://www.speedscope.app/file-format-schema.json"
OUTSIDE = "outside requests"
_NO_ROUTE = "-"

# One row read from a file: the stack's frame names (root first), the route or None, weight.
Row = tuple[tuple[str, ...], "str | None", int]


def frame_name(function: tuple[str, str, int]) -> str:
    """How a function is named in every format: ``qualname (file:line)``."""
    name, file, line = function
    return f"{name} ({file}:{line})" if file else name


def _route(recording: Recording, span_index: int) -> str | None:
    span = recording.spans[span_index]
    return None if span is None else span[3]


# -- speedscope -----------------------------------------------------------------------------------


def speedscope(recording: Recording, name: str, exporter: str) -> dict[str, Any]:
    """The speedscope document of ``recording``."""
    frames = [
        {"name": fn[0], "file": fn[1], "line": fn[2]} if fn[1] else {"name": fn[0]}
        for fn in recording.functions
    ]
    by_route: dict[str | None, dict[int, int]] = {}
    for (stack, _thread, span), (_count, cpu_ns) in recording.counts.items():
        weights = by_route.setdefault(_route(recording, span), {})
        weights[stack] = weights.get(stack, 0) + cpu_ns
    profiles = []
    for route in sorted(by_route, key=lambda r: (r is None, r or "")):
        weights = by_route[route]
        stacks = sorted(weights)
        total = sum(weights.values())
        profiles.append(
            {
                "type": "sampled",
                "name": OUTSIDE if route is None else f"route {route}",
                "unit": "nanoseconds",
                "startValue": 0,
                "endValue": total,
                "samples": [list(recording.stacks[s]) for s in stacks],
                "weights": [weights[s] for s in stacks],
            }
        )
    return {
        "$schema": SCHEMA,
        "shared": {"frames": frames},
        "profiles": profiles,
        "name": name,
        "activeProfileIndex": 0,
        "exporter": exporter,
    }


# -- collapsed ------------------------------------------------------------------------------------


def _clean(text: str) -> str:
    return text.replace(";", ",").replace("\n", " ").replace("\r", " ")


def collapsed(recording: Recording) -> str:
    """The collapsed-stack text of ``recording`` (samples per line)."""
    names = [_clean(frame_name(fn)) for fn in recording.functions]
    lines: dict[str, int] = {}
    for (stack, _thread, span), (count, _cpu) in recording.counts.items():
        route = _route(recording, span)
        head = f"route {_clean(route) if route is not None else _NO_ROUTE}"
        line = ";".join([head, *(names[f] for f in recording.stacks[stack])])
        lines[line] = lines.get(line, 0) + count
    return "".join(f"{line} {count}\n" for line, count in sorted(lines.items()))


def collapsed_by_trace(
    recording: Recording, traces: int = 50, stacks: int = 200
) -> list[dict[str, Any]]:
    """The collapsed stacks of each sampled trace, for a flame graph per trace: the ``traces``
    traces with the most samples, each ``{"trace_id", "route", "samples", "collapsed"}`` with
    its ``stacks`` hottest lines (``<root frame>;...;<leaf frame> <samples>``, no route head)."""
    names = [_clean(frame_name(fn)) for fn in recording.functions]
    per: dict[str, dict[str, int]] = {}
    routes: dict[str, str] = {}
    for (stack, _thread, span), (count, _cpu) in recording.counts.items():
        labels = recording.spans[span]
        if labels is None:
            continue
        trace_id = labels[0]
        routes.setdefault(trace_id, labels[3])
        lines = per.setdefault(trace_id, {})
        line = ";".join(names[f] for f in recording.stacks[stack])
        lines[line] = lines.get(line, 0) + count
    totals = {trace_id: sum(lines.values()) for trace_id, lines in per.items()}
    out = []
    for trace_id in sorted(per, key=lambda t: (-totals[t], t))[:traces]:
        hottest = sorted(per[trace_id].items(), key=lambda item: (-item[1], item[0]))[:stacks]
        out.append(
            {
                "trace_id": trace_id,
                "route": routes[trace_id],
                "samples": totals[trace_id],
                "collapsed": "\n".join(f"{line} {count}" for line, count in hottest),
            }
        )
    return out


# -- pprof ----------------------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # int64 fields: two's complement, as protobuf writes them
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _int(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value) if value else b""


def _bytes(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _packed(field: int, values: list[int]) -> bytes:
    return _bytes(field, b"".join(_varint(v) for v in values)) if values else b""


class _Strings:
    def __init__(self) -> None:
        self.table: list[str] = [""]
        self.index: dict[str, int] = {"": 0}

    def __call__(self, text: str) -> int:
        found = self.index.get(text)
        if found is None:
            found = self.index[text] = len(self.table)
            self.table.append(text)
        return found


def pprof(
    recording: Recording, period_ns: int, time_ns: int, duration_ns: int, comments: list[str]
) -> bytes:
    """The gzipped ``profile.proto`` message of ``recording``."""
    s = _Strings()
    out = bytearray()
    samples_type = _int(1, s("samples")) + _int(2, s("count"))
    cpu_type = _int(1, s("cpu")) + _int(2, s("nanoseconds"))
    out += _bytes(1, samples_type) + _bytes(1, cpu_type)
    label_keys = [s(k) for k in ("trace_id", "span_id", "local_root_span_id", "route")]
    thread_key = s("thread_name")
    for (stack, thread, span), (count, cpu_ns) in recording.counts.items():
        # Location ids are function indexes + 1, leaf first.
        body = _packed(1, [f + 1 for f in reversed(recording.stacks[stack])])
        body += _packed(2, [count, cpu_ns])
        body += _bytes(3, _int(1, thread_key) + _int(2, s(recording.threads[thread])))
        values = recording.spans[span]
        if values is not None:
            for key, value in zip(label_keys, values, strict=True):
                body += _bytes(3, _int(1, key) + _int(2, s(value)))
        out += _bytes(2, body)
    out += _bytes(3, _int(1, 1) + _int(5, s("python")) + _int(7, 1))  # one mapping, functions
    for index, (name, file, line) in enumerate(recording.functions):
        fid = index + 1
        line_message = _int(1, fid) + _int(2, line)
        out += _bytes(4, _int(1, fid) + _int(2, 1) + _bytes(4, line_message))
        name_id, file_id = s(name), s(file)
        out += _bytes(5, _int(1, fid) + _int(2, name_id) + _int(3, name_id) + _int(4, file_id)
                      + _int(5, line))  # fmt: skip
    comment_ids = [s(c) for c in comments]
    period_type = _bytes(11, cpu_type)
    tail = _int(9, time_ns) + _int(10, duration_ns) + period_type + _int(12, period_ns)
    tail += b"".join(_int(13, c) for c in comment_ids)
    # The string table last: every string is in it by now.
    out += b"".join(_bytes(6, text.encode()) for text in s.table) + tail
    return gzip.compress(bytes(out), compresslevel=6)


def _fields(data: bytes) -> Iterator[tuple[int, int, Any]]:
    """The (field, wire type, value) of one protobuf message; bytes for length-delimited."""
    pos, end = 0, len(data)
    while pos < end:
        key, pos = _read_varint(data, pos)
        field, wire = key >> 3, key & 7
        value: Any
        if wire == 0:
            value, pos = _read_varint(data, pos)
        elif wire == 2:
            size, pos = _read_varint(data, pos)
            value, pos = data[pos : pos + size], pos + size
        elif wire == 1:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire == 5:
            value, pos = data[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"protobuf wire type {wire} is not supported")
        yield field, wire, value


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated protobuf varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _unpacked(wire: int, value: Any) -> list[int]:
    if wire == 0:
        return [value]
    out, pos = [], 0
    while pos < len(value):
        number, pos = _read_varint(value, pos)
        out.append(number)
    return out


def read_pprof(data: bytes) -> list[Row]:
    """Rows of a pprof profile (gzipped or not); weight: the first sample value."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    strings: list[str] = []
    functions: dict[int, str] = {}
    locations: dict[int, list[int]] = {}
    raw_samples: list[tuple[list[int], list[int], list[tuple[int, int]]]] = []
    func_raw: dict[int, tuple[int, int, int]] = {}  # id -> (name, file, start line)
    for field, _wire, value in _fields(data):
        if field == 6:
            strings.append(bytes(value).decode("utf-8", "replace"))
        elif field == 2:
            locs: list[int] = []
            vals: list[int] = []
            labels: list[tuple[int, int]] = []
            for f, w, v in _fields(value):
                if f == 1:
                    locs += _unpacked(w, v)
                elif f == 2:
                    vals += _unpacked(w, v)
                elif f == 3:
                    parts = {lf: lv for lf, _, lv in _fields(v)}
                    labels.append((int(parts.get(1, 0)), int(parts.get(2, 0))))
            raw_samples.append((locs, vals, labels))
        elif field == 4:
            loc_id, lines = 0, []
            for f, _, v in _fields(value):
                if f == 1:
                    loc_id = v
                elif f == 4:
                    parts = {lf: lv for lf, _, lv in _fields(v)}
                    lines.append(int(parts.get(1, 0)))
            locations[loc_id] = lines
        elif field == 5:
            parts = {f: v for f, _, v in _fields(value)}
            func_raw[int(parts.get(1, 0))] = (
                int(parts.get(2, 0)),
                int(parts.get(4, 0)),
                int(parts.get(5, 0)),
            )
    for fid, (name, file, line) in func_raw.items():
        functions[fid] = frame_name((strings[name], strings[file], line))
    route_key = strings.index("route") if "route" in strings else -1
    rows: list[Row] = []
    for locs, vals, labels in raw_samples:
        names: list[str] = []
        for loc in locs:
            # A location's lines are innermost first (inlined calls); leaf-first overall.
            names += [functions.get(fid, "?") for fid in locations.get(loc, [])]
        route = next((strings[v] for k, v in labels if k == route_key), None)
        rows.append((tuple(reversed(names)), route, vals[0] if vals else 0))
    return rows


# -- reading any of them --------------------------------------------------------------------------


def read(data: bytes) -> tuple[str, list[Row]]:
    """The format (``speedscope``, ``collapsed`` or ``pprof``) and rows of a profile file."""
    if data[:2] == b"\x1f\x8b":
        inner = gzip.decompress(data)
        if inner[:1] in (b"{", b"["):
            data = inner
        else:
            return "pprof", read_pprof(inner)
    text = data.lstrip()
    if text[:1] == b"{":
        return "speedscope", read_speedscope(json.loads(data))
    try:
        decoded = data.decode("utf-8")
    except UnicodeDecodeError:
        return "pprof", read_pprof(data)
    return "collapsed", read_collapsed(decoded)


def read_speedscope(doc: dict[str, Any]) -> list[Row]:
    """Rows of a speedscope document's sampled profiles (evented ones are left out)."""
    if doc.get("$schema") != SCHEMA:
        raise ValueError("not a speedscope file (no speedscope $schema)")
    frames = doc["shared"]["frames"]
    names = [frame_name((f["name"], f.get("file", ""), int(f.get("line", 0) or 0))) for f in frames]
    rows: list[Row] = []
    for profile in doc["profiles"]:
        if profile.get("type") != "sampled":
            continue
        name = str(profile.get("name", ""))
        route = name[len("route ") :] if name.startswith("route ") else None
        for stack, weight in zip(profile["samples"], profile["weights"], strict=True):
            rows.append((tuple(names[int(i)] for i in stack), route, int(weight)))
    return rows


def read_collapsed(text: str) -> list[Row]:
    """Rows of collapsed stacks (the first frame ``route <route>`` when tracer wrote them)."""
    rows: list[Row] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        stack_text, _, count = line.rpartition(" ")
        if not stack_text or not count.isdigit():
            raise ValueError(f"not a collapsed-stack line: {line[:80]!r}")
        frames = stack_text.split(";")
        route = None
        if frames and frames[0].startswith("route "):
            head = frames.pop(0)[len("route ") :]
            route = None if head == _NO_ROUTE else head
        rows.append((tuple(frames), route, int(count)))
    return rows


def top(rows: list[Row], route: str | None = None, limit: int = 20) -> dict[str, Any]:
    """The hottest functions of ``rows`` (of one ``route`` when given): self and total weight,
    each also as a share of the whole."""
    selected = [row for row in rows if route is None or row[1] == route]
    whole = sum(row[2] for row in selected)
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    routes: dict[str, int] = {}
    for stack, row_route, weight in selected:
        routes[row_route or OUTSIDE] = routes.get(row_route or OUTSIDE, 0) + weight
        if not stack:
            continue
        own[stack[-1]] = own.get(stack[-1], 0) + weight
        for name in set(stack):
            total[name] = total.get(name, 0) + weight
    ranked = sorted(total, key=lambda n: (-own.get(n, 0), -total[n], n))[:limit]

    def share(value: int) -> float:
        return round(100.0 * value / whole, 2) if whole else 0.0

    return {
        "route": route,
        "weight": whole,
        "routes": dict(sorted(routes.items(), key=lambda kv: -kv[1])),
        "functions": [
            {
                "function": name,
                "self": own.get(name, 0),
                "self_percent": share(own.get(name, 0)),
                "total": total[name],
                "total_percent": share(total[name]),
            }
            for name in ranked
        ],
    }
