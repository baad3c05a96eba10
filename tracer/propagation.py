"""Trace context across process boundaries: ``extract(headers)`` and ``inject(span, headers)``.

Formats are read in the configured order and all configured formats are injected. The first
format that yields a trace context decides the trace and the parent; the ``trace`` format's
``request-id`` is kept as the request id whichever format decided the trace.

Every inbound value is validated before use (length first, then charset): a value that fails is
replaced, never copied, so hostile bytes cannot reach an outgoing header, a log or a reporter.
"""

from __future__ import annotations

import re
from collections.abc import Callable, MutableMapping, Sequence
from typing import TYPE_CHECKING, Protocol
from urllib.parse import parse_qs

from tracer import ids

if TYPE_CHECKING:
    from tracer.span import Span

Getter = Callable[[str], "str | None"]

_SPAN_ID = re.compile(r"[0-9a-f]{16}")
_DIGITS = re.compile(r"[0-9]{1,20}")


class Inbound:
    """What arrived with a request: the remote parent's context, all values already validated."""

    __slots__ = (
        "client_send_us",
        "must_collect",
        "parent_id",
        "parent_service",
        "request_id",
        "sampled",
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
        self.client_send_us: int | None = None

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


def clean_token(value: str | None, limit: int = ids.MAX_REQUEST_ID) -> str | None:
    """``value`` stripped when it is 1..limit chars of ``[A-Za-z0-9._:-]``, else None."""
    if value is None:
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
        return None if low == "0" * 16 else low
    return ids.trace_id_for(token)[:16]


class TraceFormat:
    """RisingStack Trace headers: request-id, x-span-id, x-parent, x-client-send, x-must-collect."""

    name = "trace"

    def extract(self, get: Getter, inbound: Inbound) -> None:
        must = get("x-must-collect")
        if must is not None and must.strip() == "1":
            inbound.must_collect = True
        raw = get("request-id")
        request_id = clean_token(raw)
        if raw is not None and request_id is None:
            inbound_invalid("request-id")
        if request_id is None:
            return
        inbound.request_id = request_id
        if inbound.trace_id is None:
            inbound.trace_id = ids.trace_id_for(request_id)
            inbound.parent_id = span_id_for(get("x-span-id"))
        inbound.parent_service = clean_token(get("x-parent"))
        sent = get("x-client-send")
        if sent is not None and len(sent) <= 24:
            sent = sent.strip()
            if _DIGITS.fullmatch(sent):
                inbound.client_send_us = int(sent)

    def inject(self, span: Span, service: str, headers: MutableMapping[str, str]) -> None:
        headers["request-id"] = span.request_id
        headers["x-span-id"] = span.span_id
        headers["x-parent"] = service
        headers["x-client-send"] = str(span.start_us)
        if span.local.must_collect:
            headers["x-must-collect"] = "1"


# Name -> format; later formats (tracecontext, b3) register here.
FORMATS: dict[str, Format] = {"trace": TraceFormat()}
DEFAULT = ("trace", "tracecontext", "b3")

_invalid_counter: Callable[[str], None] | None = None


def inbound_invalid(header: str) -> None:
    """Count an inbound header value that failed validation and was replaced."""
    if _invalid_counter is not None:
        _invalid_counter(header)


class Propagator:
    """Reads and writes the configured formats, in order."""

    def __init__(self, names: Sequence[str] = DEFAULT) -> None:
        unknown = [n for n in names if n not in FORMATS and n not in DEFAULT]
        if unknown:
            raise ValueError(f"unknown propagation format(s): {', '.join(unknown)}")
        self.formats: tuple[Format, ...] = tuple(FORMATS[n] for n in names if n in FORMATS)

    def extract(self, get: Getter, query: str | None = None) -> Inbound | None:
        """The inbound context, or None when the request starts a new trace."""
        inbound = Inbound()
        for fmt in self.formats:
            fmt.extract(get, inbound)
        if inbound.request_id is None and query and "requestId=" in query:
            values = parse_qs(query[:4096]).get("requestId")
            request_id = clean_token(values[0]) if values else None
            if request_id is not None:
                inbound.request_id = request_id
                if inbound.trace_id is None:
                    inbound.trace_id = ids.trace_id_for(request_id)
        if inbound.trace_id is None:
            return None if not inbound.must_collect else _forced_root(inbound)
        if inbound.request_id is None:
            inbound.request_id = inbound.trace_id
        return inbound

    def inject(self, span: Span, service: str, headers: MutableMapping[str, str]) -> None:
        """Write every configured format's headers for a call made by ``span``."""
        for fmt in self.formats:
            fmt.inject(span, service, headers)


def _forced_root(inbound: Inbound) -> Inbound:
    tid = ids.new_trace_id()
    inbound.trace_id = tid
    inbound.request_id = tid
    return inbound
