"""Trace context across process boundaries: ``extract(headers)`` and ``inject(span, headers)``.

Three formats are known:

``trace``
    RisingStack Trace headers: ``request-id``, ``x-span-id``, ``x-parent``, ``x-client-send``,
    ``x-must-collect``.
``tracecontext``
    W3C Trace Context Level 1: ``traceparent`` and ``tracestate``.
``b3``, ``b3multi``
    Zipkin B3. Both read the single ``b3`` header and the ``X-B3-*`` headers; ``b3`` injects the
    single header, ``b3multi`` the ``X-B3-*`` headers (the names OpenTelemetry uses).

All configured formats are injected. Reading follows the configured order: the first format that
carries a valid trace id and parent (``tracecontext`` or a ``b3`` format) decides the trace, the
parent and the sampling decision. The ``trace`` format always contributes the request id,
``x-must-collect`` and the caller's service name, and decides the trace only when no other format
did (its trace id is then derived from the request id, see :func:`tracer.ids.trace_id_for`), so
a request carrying both ``traceparent`` and ``request-id`` joins the traceparent's trace and keeps
the request id.

Every inbound value is validated before use, its length first and only then its characters: a
value that fails is replaced, never copied, and counted (:func:`inbound_invalid`), so hostile
bytes cannot reach an outgoing header, a log line or a reporter.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, MutableMapping, Sequence
from typing import TYPE_CHECKING, Protocol
from urllib.parse import parse_qs

from tracer import ids
from tracer._accel import speedups as _speedups

if TYPE_CHECKING:
    from tracer.span import Span

Getter = Callable[[str], "str | None"]

_SPAN_ID = re.compile(r"[0-9a-f]{16}")
_ZERO16 = "0" * 16
_ZERO32 = "0" * 32


class Inbound:
    """What arrived with a request: the remote parent's context, all values already validated."""

    __slots__ = (
        "must_collect",
        "parent_id",
        "parent_service",
        "request_id",
        "sampled",
        "span_hint",
        "trace_id",
        "tracestate",
    )

    def __init__(self) -> None:
        self.trace_id: str | None = None
        self.request_id: str | None = None
        self.parent_id: str | None = None
        self.sampled: bool | None = None
        self.must_collect = False
        self.tracestate: str | None = None
        self.parent_service: str | None = None
        # x-span-id of the trace format, used only when the trace format decides the trace.
        self.span_hint: str | None = None

    def __repr__(self) -> str:
        return (
            f"<Inbound trace={self.trace_id} request={self.request_id} parent={self.parent_id} "
            f"sampled={self.sampled} must_collect={self.must_collect}>"
        )


class Format(Protocol):
    """One propagation format."""

    name: str

    def extract(self, get: Getter, inbound: Inbound) -> None:
        """Fill in what this format finds; leave a field alone when a prior format set it."""

    def inject(self, span: Span, service: str, headers: MutableMapping[str, str]) -> None:
        """Write this format's headers for a call made by ``span``."""


# Where inbound_invalid() reports; see set_invalid_counter.
_invalid_counter: Callable[[str], None] | None = None


def set_invalid_counter(
    counter: Callable[[str], None] | None,
) -> Callable[[str], None] | None:
    """Have every inbound header value that fails validation reported as ``counter(header)``;
    returns the counter that was set before.

    The running tracer counts them (``stats()["inbound_invalid_by_header"]``); None stops the
    counting. The formats only call :func:`inbound_invalid`, so they need no runtime.
    """
    global _invalid_counter
    previous, _invalid_counter = _invalid_counter, counter
    return previous


def inbound_invalid(header: str) -> None:
    """Count an inbound header value that failed validation and was replaced."""
    counter = _invalid_counter
    if counter is not None:
        counter(header)


def py_header_map(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Request headers as one dict: lowercase names, repeated headers joined with ``,``.

    Built once per request, it turns the dozen header lookups of extraction into dict lookups,
    and lets the server see with one set check that no trace header came at all. The
    pure-Python build's :func:`header_map`, and the reference of the accelerator's.
    """
    out: dict[str, str] = {}
    for name, value in items:
        name = name.lower()
        if name in out:
            out[name] = f"{out[name]},{value}"
        else:
            out[name] = value
    return out


#: :func:`py_header_map`, or the accelerator's twin of it when it is built.
header_map: Callable[[Iterable[tuple[str, str]]], dict[str, str]] = (
    py_header_map if _speedups is None else _speedups.header_map
)


# -- validation helpers ------------------------------------------------------------------------


def clean_token(value: str | None, limit: int = ids.MAX_REQUEST_ID) -> str | None:
    """``value`` stripped when it is 1..limit chars of ``[A-Za-z0-9._:-]``, else None."""
    if value is None:
        return None
    # Length before anything else: a 64 KB value is refused without being scanned. The slack
    # leaves room for the surrounding whitespace that is trimmed below.
    if len(value) > limit + 16:
        return None
    value = value.strip(" \t")
    if len(value) > limit:
        return None
    return value if ids.valid_request_id(value) else None


def span_id_for(value: str | None) -> str | None:
    """A 16-hex span id from an inbound ``x-span-id`` (the original sent UUIDs; hash those)."""
    token = clean_token(value)
    if token is None:
        return None
    low = token.lower()
    if len(low) == 16 and _SPAN_ID.fullmatch(low):
        return None if low == _ZERO16 else low
    return ids.trace_id_for(token)[:16]


def _flag(value: str | None) -> bool:
    return value is not None and len(value) <= 16 and value.strip(" \t") == "1"


def header_token(value: str) -> str:
    """``value`` made safe for an outgoing header: characters outside the token set become ``_``."""
    if ids.valid_request_id(value):
        return value
    cleaned = re.sub(r"[^A-Za-z0-9._:\-]", "_", value[: ids.MAX_REQUEST_ID])
    return cleaned or "_"


# -- trace -------------------------------------------------------------------------------------


class TraceFormat:
    """RisingStack Trace headers: request-id, x-span-id, x-parent, x-client-send, x-must-collect."""

    name = "trace"

    def extract(self, get: Getter, inbound: Inbound) -> None:
        if _flag(get("x-must-collect")):
            inbound.must_collect = True
        raw = get("request-id")
        if raw is None:
            return
        request_id = clean_token(raw)
        if request_id is None:
            inbound_invalid("request-id")
            return
        inbound.request_id = request_id
        raw_span = get("x-span-id")
        inbound.span_hint = span_id_for(raw_span)
        if raw_span is not None and inbound.span_hint is None:
            inbound_invalid("x-span-id")
        inbound.parent_service = clean_token(get("x-parent"))

    def inject(self, span: Span, service: str, headers: MutableMapping[str, str]) -> None:
        headers["request-id"] = span.request_id
        headers["x-span-id"] = span.span_id
        headers["x-parent"] = service
        headers["x-client-send"] = str(span.start_us)
        if span.local.must_collect:
            headers["x-must-collect"] = "1"


# -- W3C Trace Context -------------------------------------------------------------------------

# Longest traceparent considered. Version 00 is exactly 55 characters; a future version may append
# fields, but nothing legitimate comes near this, and the length is checked before any parsing.
MAX_TRACEPARENT = 256
# Longest raw tracestate considered: 32 members of up to 256 + 256 characters would be ~16 KB,
# but senders are asked to keep it to 512; anything far beyond that is refused unscanned.
MAX_TRACESTATE_IN = 8192
MAX_TRACESTATE_MEMBERS = 32
MAX_TRACESTATE_OUT = 512

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_TS_KEY = re.compile(
    r"[a-z][a-z0-9_\-*/]{0,255}|[a-z0-9][a-z0-9_\-*/]{0,240}@[a-z][a-z0-9_\-*/]{0,13}"
)
_TS_VALUE = re.compile(r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]")


def parse_traceparent(value: str | None) -> tuple[str, str, bool] | None:
    """``(trace_id, parent_id, sampled)`` from a traceparent, or None when it is invalid.

    As W3C Trace Context Level 1 says: version ``ff`` is invalid; version ``00`` is exactly 55
    characters; a higher version must be at least 55 characters, its first four fields parse as
    version 00's do, and what follows them must start with ``-``. Hex must be lowercase, and an
    all-zero trace id or parent id is invalid.
    """
    if value is None or len(value) > MAX_TRACEPARENT:
        return None
    value = value.strip(" \t")
    size = len(value)
    if size < 55:
        return None
    match = _TRACEPARENT.match(value)
    if match is None:
        return None
    version, trace_id, parent_id, flags = match.groups()
    if version == "ff":
        return None
    if size > 55 and (version == "00" or value[55] != "-"):
        return None
    if trace_id == _ZERO32 or parent_id == _ZERO16:
        return None
    return trace_id, parent_id, bool(int(flags, 16) & 1)


def parse_tracestate(value: str | None) -> str | None:
    """A tracestate fit to pass on, or None.

    A header with a malformed member or a duplicated key is dropped whole (what it meant is
    unknowable); empty members are skipped; more than 32 members are cut to the first 32; the
    result is cut to 512 characters by removing members longer than 128 characters first, then
    members from the right, as the recommendation asks of a vendor that must shorten it.
    """
    if value is None or len(value) > MAX_TRACESTATE_IN:
        return None
    members: list[str] = []
    keys: set[str] = set()
    for raw in value.split(","):
        member = raw.strip(" \t")
        if not member:
            continue
        key, eq, val = member.partition("=")
        if not eq or _TS_KEY.fullmatch(key) is None or _TS_VALUE.fullmatch(val) is None:
            return None
        if key in keys:
            return None
        keys.add(key)
        members.append(member)
    if not members:
        return None
    del members[MAX_TRACESTATE_MEMBERS:]
    if sum(len(m) for m in members) + len(members) - 1 > MAX_TRACESTATE_OUT:
        members = [m for m in members if len(m) <= 128]
        while members and sum(len(m) for m in members) + len(members) - 1 > MAX_TRACESTATE_OUT:
            members.pop()
    return ",".join(members) or None


def _flags(span: Span) -> bool:
    # A trace this process will keep (sampled, or forced) is announced as sampled downstream, so
    # the callee keeps its part too.
    local = span.local
    return local.sampled or local.must_collect


class TraceContextFormat:
    """W3C Trace Context Level 1: ``traceparent`` and ``tracestate``."""

    name = "tracecontext"

    def extract(self, get: Getter, inbound: Inbound) -> None:
        raw = get("traceparent")
        if raw is None:
            return
        parsed = parse_traceparent(raw)
        if parsed is None:
            inbound_invalid("traceparent")
            return
        if inbound.trace_id is not None:
            return
        inbound.trace_id, inbound.parent_id, inbound.sampled = parsed
        # tracestate is read only with a valid traceparent, as the recommendation requires.
        raw_state = get("tracestate")
        if raw_state is not None:
            inbound.tracestate = parse_tracestate(raw_state)
            if inbound.tracestate is None and raw_state.strip(" \t,"):
                inbound_invalid("tracestate")

    def inject(self, span: Span, service: str, headers: MutableMapping[str, str]) -> None:
        flags = "01" if _flags(span) else "00"
        headers["traceparent"] = f"00-{span.trace_id}-{span.span_id}-{flags}"
        if span.tracestate:
            headers["tracestate"] = span.tracestate


# -- B3 ----------------------------------------------------------------------------------------

_B3_ID = re.compile(r"[0-9a-f]{16}|[0-9a-f]{32}")


def _b3_trace_id(value: str) -> str | None:
    value = value.lower()
    if _B3_ID.fullmatch(value) is None:
        return None
    # A 64-bit trace id is the low half of a 128-bit one, as B3 says.
    value = value.rjust(32, "0")
    return None if value == _ZERO32 else value


def _b3_span_id(value: str) -> str | None:
    value = value.lower()
    if len(value) != 16 or _SPAN_ID.fullmatch(value) is None or value == _ZERO16:
        return None
    return value


_B3_SAMPLED = {"1": True, "d": True, "true": True, "0": False, "false": False}


def parse_b3(value: str | None) -> tuple[str | None, str | None, bool | None] | None:
    """``(trace_id, span_id, sampled)`` from a single ``b3`` header, or None when invalid.

    ``b3: 0`` / ``1`` / ``d`` carries only a sampling decision (ids None). Hex is accepted in
    either case and lowercased; a 16-hex trace id is left-padded with zeros to 32.
    """
    if value is None or len(value) > 128:
        return None
    value = value.strip(" \t")
    if value in ("0", "1", "d"):
        return None, None, _B3_SAMPLED[value]
    parts = value.split("-")
    if not 2 <= len(parts) <= 4:
        return None
    trace_id = _b3_trace_id(parts[0])
    span_id = _b3_span_id(parts[1])
    if trace_id is None or span_id is None:
        return None
    sampled: bool | None = None
    if len(parts) >= 3:
        if parts[2] not in ("0", "1", "d"):
            return None
        sampled = _B3_SAMPLED[parts[2]]
    if len(parts) == 4 and _b3_span_id(parts[3]) is None:
        return None
    return trace_id, span_id, sampled


def parse_b3_multi(get: Getter) -> tuple[str | None, str | None, bool | None] | None:
    """``(trace_id, span_id, sampled)`` from ``X-B3-*`` headers; None when absent or invalid."""
    raw_trace = get("x-b3-traceid")
    raw_span = get("x-b3-spanid")
    raw_sampled = get("x-b3-sampled")
    debug = _flag(get("x-b3-flags"))
    sampled: bool | None = True if debug else None
    if sampled is None and raw_sampled is not None and len(raw_sampled) <= 16:
        sampled = _B3_SAMPLED.get(raw_sampled.strip(" \t").lower())
    if raw_trace is None and raw_span is None:
        return None if sampled is None else (None, None, sampled)
    if raw_trace is None or raw_span is None or len(raw_trace) > 40 or len(raw_span) > 24:
        return None
    trace_id = _b3_trace_id(raw_trace.strip(" \t"))
    span_id = _b3_span_id(raw_span.strip(" \t"))
    if trace_id is None or span_id is None:
        return None
    return trace_id, span_id, sampled


class B3Format:
    """Zipkin B3: reads ``b3`` and ``X-B3-*``; injects the single header, or ``X-B3-*``."""

    def __init__(self, name: str, multi: bool) -> None:
        self.name = name
        self.multi = multi

    def extract(self, get: Getter, inbound: Inbound) -> None:
        raw = get("b3")
        if raw is not None:
            parsed = parse_b3(raw)
            if parsed is None:
                inbound_invalid("b3")
        else:
            parsed = parse_b3_multi(get)
            if parsed is None and get("x-b3-traceid") is not None:
                inbound_invalid("x-b3-traceid")
        if parsed is None or inbound.trace_id is not None:
            return
        trace_id, span_id, sampled = parsed
        if trace_id is None:
            # A bare sampling decision: a new trace, but the caller's decision is followed.
            if inbound.sampled is None:
                inbound.sampled = sampled
            return
        inbound.trace_id = trace_id
        inbound.parent_id = span_id
        inbound.sampled = sampled

    def inject(self, span: Span, service: str, headers: MutableMapping[str, str]) -> None:
        sampled = "1" if _flags(span) else "0"
        if self.multi:
            headers["X-B3-TraceId"] = span.trace_id
            headers["X-B3-SpanId"] = span.span_id
            if span.parent_id is not None:
                headers["X-B3-ParentSpanId"] = span.parent_id
            headers["X-B3-Sampled"] = sampled
        else:
            headers["b3"] = f"{span.trace_id}-{span.span_id}-{sampled}"


# Name -> format.
FORMATS: dict[str, Format] = {
    "trace": TraceFormat(),
    "tracecontext": TraceContextFormat(),
    "b3": B3Format("b3", multi=False),
    "b3multi": B3Format("b3multi", multi=True),
}
DEFAULT = ("trace", "tracecontext", "b3")


# The headers each format reads (both b3 formats read the same ones).
_B3_READS = ("b3", "x-b3-traceid", "x-b3-spanid", "x-b3-sampled", "x-b3-flags")
READS: dict[str, tuple[str, ...]] = {
    "trace": ("request-id", "x-span-id", "x-parent", "x-must-collect"),
    "tracecontext": ("traceparent", "tracestate"),
    "b3": _B3_READS,
    "b3multi": _B3_READS,
}


class Propagator:
    """Reads and writes the configured formats, in order."""

    def __init__(self, names: Sequence[str] = DEFAULT) -> None:
        unknown = [n for n in names if n not in FORMATS]
        if unknown:
            raise ValueError(f"unknown propagation format(s): {', '.join(unknown)}")
        unique = list(dict.fromkeys(names))
        self.formats: tuple[Format, ...] = tuple(FORMATS[n] for n in unique)
        # Both b3 formats read the same headers; reading them twice would count an invalid
        # value twice.
        readers: list[Format] = []
        for fmt in self.formats:
            if isinstance(fmt, B3Format) and any(isinstance(r, B3Format) for r in readers):
                continue
            readers.append(fmt)
        self.readers = tuple(readers)
        # Every header some reader looks at: a request with none of them starts a plain root.
        # A format registered without its READS entry disables the shortcut.
        self.header_names: frozenset[str] | None = None
        if all(reader.name in READS for reader in self.readers):
            self.header_names = frozenset(
                name for reader in self.readers for name in READS[reader.name]
            )

    def extract(self, get: Getter, query: str | None = None) -> Inbound | None:
        """The inbound context, or None when the request starts a new trace as a plain root."""
        inbound = Inbound()
        for fmt in self.readers:
            fmt.extract(get, inbound)
        if inbound.request_id is None and query and "requestId=" in query:
            values = parse_qs(query[:4096]).get("requestId")
            request_id = clean_token(values[0]) if values else None
            if request_id is None:
                inbound_invalid("requestId")
            inbound.request_id = request_id
        if inbound.trace_id is None and inbound.request_id is not None:
            inbound.trace_id = ids.trace_id_for(inbound.request_id)
            inbound.parent_id = inbound.span_hint
        if inbound.trace_id is None:
            if not inbound.must_collect and inbound.sampled is None:
                return None
            # No trace to join, but a decision to follow (x-must-collect, or b3: 0/1/d).
            inbound.trace_id = ids.new_trace_id()
        if inbound.request_id is None:
            inbound.request_id = inbound.trace_id
        return inbound

    def own(self, get: Getter) -> Inbound | None:
        """The trace context an application put on its own outgoing call, made outside any
        trace: the first configured format (``tracecontext``, ``b3``) whose headers carry a
        valid trace id and parent, with its sampling decision, and the ``request-id``; None
        when there is none. The call's client span then continues that trace.

        These headers are the application's, not a peer's: a malformed one is passed over (the
        call starts a trace of its own and tracer's headers replace it), not counted as an
        inbound value.
        """
        inbound = Inbound()
        for fmt in self.readers:
            found: tuple[str | None, str | None, bool | None] | None = None
            if isinstance(fmt, TraceContextFormat):
                found = parse_traceparent(get("traceparent"))
                if found is not None:
                    inbound.tracestate = parse_tracestate(get("tracestate"))
            elif isinstance(fmt, B3Format):
                raw = get("b3")
                found = parse_b3(raw) if raw is not None else parse_b3_multi(get)
            if found is not None and found[0] is not None:
                inbound.trace_id, inbound.parent_id, inbound.sampled = found
                break
        inbound.request_id = clean_token(get("request-id"))
        if inbound.trace_id is None:
            if inbound.request_id is None:
                return None
            inbound.trace_id = ids.trace_id_for(inbound.request_id)
        if inbound.request_id is None:
            inbound.request_id = inbound.trace_id
        return inbound

    def inject(self, span: Span, service: str, headers: MutableMapping[str, str]) -> None:
        """Write every configured format's headers for a call made by ``span``."""
        for fmt in self.formats:
            fmt.inject(span, service, headers)
