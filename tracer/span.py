"""Span: start, annotate, finish -> record dict.

A span is cheap to create and finish on the request thread: it only stores numbers and strings,
and a finished span is queued as a flat tuple (:meth:`Span.freeze`). Turning that into the record
dict that reporters receive (:func:`record`) happens later, a batch at a time, on the pipeline's
worker thread.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from typing import Any, ClassVar

from tracer import ids
from tracer._accel import speedups as _speedups
from tracer.redaction import MAX_ANNOTATIONS, MAX_TAGS, bounded, bounded_error, safe_text

SERVER = "server"
CLIENT = "client"
INTERNAL = "internal"
#: A websocket connection served (ASGI): SR at the handshake, SS when the connection is over.
WEBSOCKET = "websocket"

_time_ns = time.time_ns
MAX_STACK = 8192
MAX_NAME = 2200


def now_us() -> int:
    """Wall-clock time in epoch microseconds."""
    return _time_ns() // 1000


class SpanProcessor:
    """What runs on every span of a runtime, on the thread that starts or ends it.

    The contract (docs/design.md, "Span processors"): :meth:`on_start` is called once a span is
    made, before the instrumentation returns it; :meth:`on_end` once it finished, with
    ``duration_us`` final. Both run on the request path, so they do little, allocate little and
    never block; an exception they raise is caught, counted and logged once, and the request goes
    on. A subclass overrides what it needs: a method left as it is here is never called.

    A processor whose hooks cannot raise (no lookup that can fail, no call out of tracer) says so
    with :attr:`can_raise`: when it is the only one with a hook, the runtime calls that hook
    straight, without the guard, which saves the request a call.
    """

    __slots__ = ()

    #: False for a processor whose hooks never raise: the runtime may then call them unguarded.
    can_raise: ClassVar[bool] = True

    def on_start(self, span: Span) -> None:
        """Called with every span the runtime starts (not with ignored requests)."""

    def on_end(self, span: Span) -> None:
        """Called with every span that finishes, sampled or not."""


def _nowhere(span: Span) -> None:
    pass


class Chain:
    """The entry points of one runtime's processors, which its spans call.

    The runtime sets :attr:`on_start` (None when no processor wants it) and :attr:`on_end` each
    time its processor list changes, never per span, and points them at nothing when it stops;
    a span reaches them through its :class:`LocalTrace` with two attribute reads.
    """

    __slots__ = ("on_end", "on_start")

    def __init__(self) -> None:
        self.on_start: Callable[[Span], None] | None = None
        self.on_end: Callable[[Span], None] = _nowhere


#: The chain of spans made outside any runtime (tests, benchmarks): they go nowhere.
NO_CHAIN = Chain()


class LocalTrace:
    """What the spans of one trace in this process share: the sampling decision and held spans.

    An unsampled trace keeps its finished spans in ``held`` until its local root ends, so that an
    error anywhere in it can still have the whole local trace collected (keep-on-error).
    ``chain`` is the processors of the runtime that started the trace. ``statements`` counts its
    database calls by statement, for the N+1 check (:mod:`tracer.instrumentation.nplusone`).
    """

    __slots__ = (
        "chain", "closed", "held", "limited", "must_collect", "root", "sampled", "statements",
    )  # fmt: skip

    def __init__(self, sampled: bool, must_collect: bool = False, chain: Chain = NO_CHAIN) -> None:
        self.sampled = sampled
        self.must_collect = must_collect
        self.chain = chain
        # Made on the first held span: a sampled trace never needs the list.
        self.held: list[Span] | None = None
        self.closed = False
        # The local root span (a server span, or a root started here), set by whoever makes it.
        self.root: Span | None = None
        # Set when a forced keep was refused by the rate limit, so it is not asked for again.
        self.limited = False
        # Statement key -> [calls, the first call's Span.db], made on the first database call
        # when the N+1 check is on.
        self.statements: dict[str, list[Any]] | None = None


class Span:
    """One unit of work: a server request (SR/SS), a client call (CS/CR) or an internal span."""

    __slots__ = (
        "_done",
        "annotations",
        "db",
        "duration_us",
        "error",
        "is_local_root",
        "kind",
        "local",
        "method",
        "name",
        "parent_id",
        "path",
        "request_id",
        "route",
        "sent_us",
        "span_id",
        "start_us",
        "status_code",
        "tags",
        "trace_id",
        "tracestate",
        "url",
    )

    def __init__(
        self,
        kind: str,
        name: str,
        trace_id: str,
        request_id: str,
        parent_id: str | None,
        local: LocalTrace,
        is_local_root: bool,
        span_id: str | None = None,
    ) -> None:
        self.kind = kind
        self.name = name
        self.trace_id = trace_id
        self.request_id = request_id
        self.parent_id = parent_id
        self.local = local
        self.is_local_root = is_local_root
        self.span_id = span_id or ids.new_span_id()
        # SR (server) or CS (client) is the start; SS or CR the end: the events are derived
        # from the two times when the record is built, not kept in a list per span.
        self.start_us = _time_ns() // 1000
        self.duration_us = 0
        self.method: str | None = None
        self.url: str | None = None
        self.path: str | None = None
        self.status_code: int | None = None
        self.error: dict[str, Any] | None = None
        self.annotations: list[dict[str, Any]] | None = None
        self.tags: dict[str, Any] | None = None
        self.tracestate: str | None = None
        # The framework's route template (aiohttp's canonical form, ``/users/{id}``), when known.
        self.route: str | None = None
        # When a server began sending the last of its response: SS is that moment, so that the
        # caller's CR can never come before it, whatever the scheduler does after the write.
        self.sent_us = 0
        # A database call's (see DbCall): None for every other span.
        self.db: DbCall | None = None
        self._done = False

    # -- recording ---------------------------------------------------------------------------

    @property
    def sampled(self) -> bool:
        """Whether this span's trace was chosen by head sampling."""
        return self.local.sampled

    @property
    def must_collect(self) -> bool:
        """Whether this span's trace must be kept whatever the sampling decision."""
        return self.local.must_collect

    @property
    def finished(self) -> bool:
        """True once :meth:`finish` ran."""
        return self._done

    def set_tag(self, key: str, value: Any) -> None:
        """Attach a tag (a small key/value pair) to the span."""
        if self.tags is None:
            self.tags = {}
        self.tags[key] = value

    def annotate(self, data: dict[str, Any]) -> None:
        """Attach user data (``tracer.report``) to the span."""
        if self.annotations is None:
            self.annotations = []
        self.annotations.append({"time_us": now_us(), "data": data})

    def record_exception(self, exc: BaseException) -> None:
        """Mark the span as failed by ``exc`` (its type, message and a bounded stack)."""
        stack = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self.error = {
            "type": type(exc).__name__,
            "message": str(exc),
            "stack": stack[-MAX_STACK:],
        }

    def record_network_error(self, exc: BaseException) -> None:
        """Mark a client span as failed before any response: ``network-error``, as the original."""
        self.error = {
            "type": "network-error",
            "message": f"{type(exc).__name__}: {exc}",
            "stack": None,
        }

    def finish(self) -> None:
        """End the span (SS for a server span, CR for a client span) and hand it to the
        processors of its runtime."""
        if self._done:
            return
        self._done = True
        if self.is_local_root:
            # LocalTrace.root points back at this span: a cycle that would leave the pair to
            # the garbage collector, a collection every few hundred requests.
            self.local.root = None
        start = self.start_us
        sent = self.sent_us
        if sent >= start and self.kind == SERVER:
            # SS was taken when the response went out: no clock read more (sent is 0, below
            # any start, until then).
            end = sent
        else:
            end = _time_ns() // 1000
        # A wall clock set back during the span would make it negative.
        self.duration_us = end - start if end >= start else 0
        self.local.chain.on_end(self)

    # -- output --------------------------------------------------------------------------------

    def freeze(self) -> Frozen:
        """The finished span's fields as one flat tuple, which is what the pipeline queues.

        A tuple of strings and numbers is untracked by the garbage collector after its first
        young-generation pass, so thousands of queued spans cost the collector nothing; record
        dicts (nested lists and dicts) waiting in the queue were traversed again and again.
        The fields are in the order of the index constants below (``frozen[STATUS_CODE]``). It
        is not a NamedTuple: building one goes through a Python-level ``__new__`` on the
        request thread, and the collector untracks only exact tuples, never a subclass's.
        """
        return (
            self.kind,
            self.name,
            self.trace_id,
            self.request_id,
            self.span_id,
            self.parent_id,
            self.start_us,
            self.duration_us if self._done else None,
            self.method,
            self.url,
            self.path,
            self.status_code,
            self.error,
            self.annotations,
            self.tags,
            self.local.sampled,
            self.local.must_collect,
            self.tracestate,
            self.route,
            self.db,
        )

    def to_record(self, service: str, host: str, pid: int) -> dict[str, Any]:
        """The span record reporters receive (docs/reporters.md, "The span record"): a
        JSON-serialisable dict."""
        return record(self.freeze(), service, host, pid)

    def __repr__(self) -> str:
        return f"<Span {self.kind} {self.name!r} trace={self.trace_id} span={self.span_id}>"


_new_object = object.__new__


def new_root(
    kind: str,
    name: str,
    trace_id: str,
    request_id: str,
    parent_id: str | None,
    span_id: str,
    sampled: bool,
    chain: Chain,
) -> Span:
    """A local root span and its :class:`LocalTrace` (``root`` pointing at it), the same as
    ``LocalTrace(sampled, False, chain)`` and ``Span(kind, name, ..., local, True, span_id)``.

    Made without calling either class: every server request makes this pair, and calling a
    class whose ``__init__`` is Python costs more than all the stores together. Each slot is
    set here as the two ``__init__`` set it (a test compares them slot by slot).
    """
    local: LocalTrace = _new_object(LocalTrace)
    local.sampled = sampled
    local.must_collect = False
    local.chain = chain
    local.held = None
    local.closed = False
    local.limited = False
    local.statements = None
    span: Span = _new_object(Span)
    local.root = span
    span.kind = kind
    span.name = name
    span.trace_id = trace_id
    span.request_id = request_id
    span.parent_id = parent_id
    span.local = local
    span.is_local_root = True
    span.span_id = span_id
    span.start_us = _time_ns() // 1000
    span.duration_us = 0
    span.method = None
    span.url = None
    span.path = None
    span.status_code = None
    span.error = None
    span.annotations = None
    span.tags = None
    span.tracestate = None
    span.route = None
    span.sent_us = 0
    span.db = None
    span._done = False
    return span


# What Span.freeze() returns, a plain tuple (see freeze for why), and the index of each field in
# it. freeze() builds it and record() unpacks it in this order; a test checks both against these.
Frozen = tuple[Any, ...]
KIND = 0
NAME = 1
TRACE_ID = 2
REQUEST_ID = 3
SPAN_ID = 4
PARENT_ID = 5
START_US = 6
DURATION_US = 7  # None while the span is running
METHOD = 8
URL = 9
PATH = 10
STATUS_CODE = 11
ERROR = 12
ANNOTATIONS = 13
TAGS = 14
SAMPLED = 15
MUST_COLLECT = 16
TRACESTATE = 17
ROUTE = 18
DB = 19

#: A database call, as a database instrumentation puts it on ``Span.db``: a pair of tuples, the
#: first made once per connection, the second once per statement (cached), so that a call
#: stores one small tuple and builds no dict on the request thread.
#:
#: * the target, ``(system, namespace, address, port)``: ``db.system.name`` (``"sqlite"``,
#:   ``"postgresql"``, ``"redis"``), ``db.namespace`` (the database), ``server.address`` and
#:   ``server.port`` (None where there is none, as for sqlite);
#: * the statement, ``(text, operation, collection, name, key)``: ``db.query.text`` (normalized,
#:   or None when queries are not recorded), ``db.operation.name``, ``db.collection.name``, the
#:   span name and the grouping key (see :mod:`tracer.instrumentation.sqltext`; only the first
#:   three reach the record).
#:
#: :func:`record` turns it into the record's ``db`` part (docs/reporters.md).
DbTarget = tuple[str, str | None, str | None, int | None]
DbCall = tuple[DbTarget, tuple[Any, ...]]

_EVENT_TYPES = {SERVER: ("sr", "ss"), CLIENT: ("cs", "cr"), WEBSOCKET: ("sr", "ss")}


# Every record starts as a copy of this: copying a dict whose keys are all in place, then filling
# it in, is cheaper than inserting the keys one by one, and a record is built for every span.
_RECORD_TEMPLATE: dict[str, Any] = dict.fromkeys(
    (
        "trace_id",
        "request_id",
        "span_id",
        "parent_id",
        "kind",
        "name",
        "service",
        "host",
        "pid",
        "start_us",
        "duration_us",
        "events",
        "http",
        "error",
        "annotations",
        "tags",
        "sampled",
        "must_collect",
        "tracestate",
    )
)


def record_template(service: str, host: str, pid: int) -> dict[str, Any]:
    """The start of every record of one process (see :func:`record`): its service, host and pid
    in place, so that a batch of records does not store them one record at a time."""
    out = _RECORD_TEMPLATE.copy()
    out["service"] = service
    out["host"] = host
    out["pid"] = pid
    return out


def record(
    frozen: Frozen, service: str, host: str, pid: int, template: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The span record (docs/reporters.md, "The span record"), built from :meth:`Span.freeze`'s
    tuple; with ``template`` (:func:`record_template` of the same service, host and pid) as its
    start."""
    # Unpacked in one step, in the order of the index constants above (KIND ... ROUTE).
    (
        kind,
        name,
        trace_id,
        request_id,
        span_id,
        parent_id,
        start,
        duration,
        method,
        url,
        path,
        status,
        error,
        annotations,
        tags,
        sampled,
        must_collect,
        tracestate,
        route,
        db,
    ) = frozen
    if len(name) > MAX_NAME or not name.isascii():
        name = safe_text(name, MAX_NAME)
    if template is None:
        out = _RECORD_TEMPLATE.copy()
        out["service"] = service
        out["host"] = host
        out["pid"] = pid
    else:
        out = template.copy()
    out["trace_id"] = trace_id
    # None in the template already: a root has no parent, most spans no tracestate.
    if tracestate is not None:
        out["tracestate"] = tracestate
    out["request_id"] = request_id
    out["span_id"] = span_id
    if parent_id is not None:
        out["parent_id"] = parent_id
    out["kind"] = kind
    out["name"] = name
    out["start_us"] = start
    out["duration_us"] = duration or 0
    # Dapper's events: sr/ss for a server span, cs/cr for a client span (the end once finished),
    # none for an internal span. Built inline: this runs for every span.
    types = _EVENT_TYPES.get(kind)
    if types is None:
        out["events"] = []
    elif duration is None:
        out["events"] = [{"type": types[0], "time_us": start}]
    else:
        out["events"] = [
            {"type": types[0], "time_us": start},
            {"type": types[1], "time_us": start + duration},
        ]
    if method is not None or status is not None:
        out["http"] = {
            "method": method,
            "url": url,
            "path": path,
            "status_code": status,
            "route": route,
        }
    if error is not None:
        out["error"] = bounded_error(error)
    out["annotations"] = bounded(annotations, MAX_ANNOTATIONS) if annotations else []
    out["tags"] = bounded(tags, MAX_TAGS) if tags else {}
    out["sampled"] = sampled
    out["must_collect"] = must_collect
    if db is not None:
        out["db"] = db_part(db, error)
    return out


#: The compiled accelerator's :func:`record` with a template, for the common span only (no error,
#: tags, annotations or database call, a name that needs no cleaning): it returns None for any
#: other, which then takes :func:`record`. None without the accelerator.
fast_record: Callable[[Frozen, dict[str, Any]], dict[str, Any] | None] | None = None
#: The same for a list of frozen spans in one call: a list of records, None where a span needs
#: :func:`record` (or None without the accelerator).
fast_records: Callable[[list[Frozen], dict[str, Any]], list[dict[str, Any] | None]] | None = None
#: The Python Span.finish, the twin of the accelerator's (which takes it for a subclass).
py_finish = Span.finish
if _speedups is not None:
    _speedups.configure(_EVENT_TYPES, MAX_NAME, DB + 1)
    fast_record = _speedups.record
    fast_records = getattr(_speedups, "records", None)
    if hasattr(_speedups, "finish_method"):
        # A method descriptor of the class, so it binds as the Python method does.
        setattr(Span, "finish", _speedups.finish_method(Span, LocalTrace, Chain, SERVER, py_finish))  # noqa: B010


def db_part(db: DbCall, error: dict[str, Any] | None) -> dict[str, Any]:
    """The record's ``db`` part of a database call: OpenTelemetry's attribute names, each with
    a value (one that is None is left out)."""
    (system, namespace, address, port), statement = db
    text, operation, collection = statement[0], statement[1], statement[2]
    part: dict[str, Any] = {"db.system.name": system}
    if namespace is not None:
        part["db.namespace"] = namespace
    if operation is not None:
        part["db.operation.name"] = operation
    if collection is not None:
        part["db.collection.name"] = collection
    if address is not None:
        part["server.address"] = address
    if port is not None:
        part["server.port"] = port
    if text is not None:
        part["db.query.text"] = text
    if error is not None:
        part["error.type"] = error.get("type") or "_OTHER"
    return part
