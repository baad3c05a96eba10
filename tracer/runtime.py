"""The running tracer: what instrumentations call to start spans and move context.

One :class:`Runtime` exists while tracer is installed. Instrumentations hold a reference to it, so
the request path reads attributes of one object instead of looking up module globals. Features
(metrics, memory, later the profiler) are handed it too, and plug into spans as processors
(:class:`tracer.span.SpanProcessor`, :meth:`Runtime.add_processor`).
"""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tracer import _accel, freethreading, ids, propagation, safety
from tracer.config import Config
from tracer.context import current
from tracer.delivery import Pipeline
from tracer.delivery.ledger import Ledger
from tracer.propagation import Getter, Inbound, Propagator, header_map, header_token
from tracer.redaction import (
    MAX_PATH,
    MAX_URL,
    METHODS,
    clean_host,
    clean_method,
    clean_text,
    header_names,
    query_keys,
    redact_headers,
    redact_url,
    split_path,
)
from tracer.sampling import Collector, Sampler
from tracer.span import CLIENT, SERVER, Chain, LocalTrace, Span, SpanProcessor, new_root

# A client URL whose calls are not traced (an ignored host, or one that does not parse).
_IGNORED: tuple[str, str, str] = ("", "", "")

Hook = Callable[[Span], None]


def _wants(processor: object, name: str) -> bool:
    """Whether ``processor`` does something in ``name`` (not the no-op of SpanProcessor)."""
    method = getattr(processor, name, None)
    if method is None:
        return False
    return getattr(method, "__func__", None) is not getattr(SpanProcessor, name)


def _where(processor: object, name: str) -> str:
    return f"processor {type(processor).__name__}.{name}"


def chained(processors: tuple[Any, ...], name: str) -> Hook | None:
    """One function calling ``name`` (``on_start`` or ``on_end``) of each processor in order,
    or None when none of them does anything there.

    Built when the list changes, never per span: the calls are a tuple closed over, and one that
    raises is handed to :func:`tracer.safety.internal_error` (counted, logged once) while the
    others, and the request, go on. The only processor with that hook, when it declares it
    cannot raise (``can_raise = False``), is that hook itself: no guard to call through.
    """
    wanted = [p for p in processors if _wants(p, name)]
    if not wanted:
        return None
    if len(wanted) == 1 and not getattr(wanted[0], "can_raise", True):
        hook: Hook = getattr(wanted[0], name)
        return hook
    calls = tuple(getattr(p, name) for p in wanted)
    # Looked up only when a call raised.
    wheres = tuple(_where(p, name) for p in wanted)
    internal_error = safety.internal_error
    if len(calls) == 1:
        only = calls[0]

        def one(span: Span) -> None:
            try:
                only(span)
            except Exception as exc:
                internal_error(wheres[0], exc)

        return one

    if len(calls) == 2:
        # The usual list once a feature is on (metrics, then the collector): unrolled, since
        # the loop costs as much as a call.
        first, second = calls

        def two(span: Span) -> None:
            try:
                first(span)
            except Exception as exc:
                internal_error(wheres[0], exc)
            try:
                second(span)
            except Exception as exc:
                internal_error(wheres[1], exc)

        return two

    def each(span: Span) -> None:
        for call in calls:
            try:
                call(span)
            except Exception as exc:
                internal_error(wheres[calls.index(call)], exc)

    return each


def accelerated_end(
    processors: tuple[Any, ...], collector: Collector, pipeline: Pipeline
) -> Hook | None:
    """The accelerator's end hook for the usual processor lists, the collector alone or the
    request histogram and then the collector; None for any other list, or without the
    accelerator.

    It is what :func:`chained` builds from the same list, and takes those Python hooks itself
    for every span but the common one (a server span of a series met before, a sampled trace
    with nothing to force, a queue with room): only that one is recorded and queued in C.
    """
    end_chain = getattr(_accel.speedups, "end_chain", None)
    if (
        end_chain is None
        or freethreading.locks_needed()
        or not processors
        or len(processors) > 2
        or processors[-1] is not collector
        or type(collector) is not Collector
        or type(pipeline) is not Pipeline
        or collector.submit != pipeline.submit
    ):
        return None
    histogram = None
    if len(processors) == 2:
        # Only the metrics recorder says what its histogram is (tracer.metrics.recording).
        parts = getattr(processors[0], "end_histogram", None)
        if parts is None:
            return None
        histogram = parts()
    hook: Hook = end_chain(
        Span,
        LocalTrace,
        SERVER,
        collector,
        pipeline,
        safety.internal_error,
        _where(collector, "on_end"),
        histogram,
    )
    return hook


def accelerated_server_span(runtime: Runtime) -> Callable[..., Span | None] | None:
    """The accelerator's :meth:`Runtime.server_span` for ``runtime``, or None (without the
    accelerator, or where a request always needs the Python method: ignore rules, recorded
    request headers, or every request's headers extracted).

    It makes the common request's span itself (a path of printable ASCII with no query, a
    standard method, no trace header, a Host met before) as the method would, and hands every
    other request to the method, unchanged.
    """
    start = getattr(_accel.speedups, "server_start", None)
    names = runtime.propagator.header_names
    if (
        start is None
        or freethreading.locks_needed()
        or runtime._ignoring
        or runtime.record_headers
        or names is None
    ):
        return None
    python = Runtime.server_span.__get__(runtime)
    fast: Callable[..., Span | None] = start(
        python,
        Span,
        LocalTrace,
        Chain,
        SERVER,
        METHODS,
        MAX_PATH,
        tuple(sorted(names)),
        runtime._prefixes,
        runtime.sampler,
        runtime.chain,
    )
    return fast


def accelerated_response_headers(runtime: Runtime) -> Callable[..., bytes] | None:
    """The accelerator's :meth:`Runtime.response_headers` for ``runtime``, or None: it writes
    the headers of a span whose trace need not be kept (no error, no failing status, nothing
    slow, no ``x-must-collect``) and hands every other span to the method."""
    start = getattr(_accel.speedups, "response_start", None)
    if start is None or freethreading.locks_needed() or type(runtime.collector) is not Collector:
        return None
    python = Runtime.response_headers.__get__(runtime)
    fast: Callable[..., bytes] = start(
        python, runtime.collector, runtime.service_token, runtime._head_start
    )
    return fast


def idle_stats() -> dict[str, Any]:
    """What :meth:`Runtime.stats` says with nothing counted: the same keys, built by the same
    code (an empty ledger and collector), so ``tracer.stats()`` before ``install()`` has the
    shape it has after."""
    out = Ledger(lambda: 0).stats()
    out["held_bytes"] = 0
    out.update(Collector(lambda span: None).stats())
    out.update(_own_stats({}, 1.0))
    return out


def _own_stats(invalid: dict[str, int], probability: float) -> dict[str, Any]:
    return {
        "inbound_invalid": sum(invalid.values()),
        "inbound_invalid_by_header": invalid,
        "sample_probability": probability,
    }


class Runtime:
    """Config, sampler, propagator and pipeline, the span factories built on them, and the
    ordered list of span processors every span goes through.

    The list starts with :attr:`collector` (sampling and keep-on-error, then the pipeline);
    features add theirs with :meth:`add_processor` as they install, ahead of the collector, so
    that the collector, which hands the span out of the request thread, always comes last.
    """

    def __init__(self, config: Config, pipeline: Pipeline, sampler: Sampler) -> None:
        self.config = config
        self.pipeline = pipeline
        self.sampler = sampler
        self.service = config.app_name
        # The service name goes into x-parent headers; a name with spaces or worse is sent with
        # those characters replaced, never as is.
        self.service_token = header_token(config.app_name)
        # What every http.server response head gets first (see response_headers).
        self._head_start = f"x-parent: {self.service_token}\r\nx-client-send: ".encode("latin-1")
        self.host = socket.gethostname()
        self.propagator = Propagator(config.propagation)
        self.collector = Collector(
            pipeline.submit,
            error_status=config.error_status,
            slow_threshold_ms=config.slow_threshold_ms,
            max_forced_per_second=config.max_forced_per_second,
        )
        self.ignore_headers = tuple(config.ignore_headers.items())
        self.ignore_hosts = frozenset(config.ignore_hosts)
        self.ignore_paths = frozenset(p for p in config.ignore_paths if not p.endswith("*"))
        self.ignore_prefixes = tuple(p[:-1] for p in config.ignore_paths if p.endswith("*"))
        self._ignoring = bool(self.ignore_headers or config.ignore_paths)
        self.query_keys = query_keys(config.redact_query_keys)
        self.header_names = header_names(config.redact_headers)
        self.record_headers = config.record_headers
        # What the spans of this runtime call (through their LocalTrace): set from the
        # processor list whenever it changes, never per span.
        self.chain = Chain()
        self.processors: tuple[Any, ...] = ()
        self._set_processors((self.collector,))
        #: Processors that only database calls need (the N+1 check): added to the list by
        #: :meth:`watch_databases` on the first database call, so that a service that makes
        #: none pays nothing for them on its requests.
        self.database_processors: list[SpanProcessor] = []
        # Outgoing URL -> what a client span takes from it (see client_span).
        self._targets: dict[str, tuple[str, str, str]] = {}
        # Scheme -> Host header -> cleaned "scheme://host" prefix (see server_span).
        self._prefixes: dict[str, dict[str | None, str]] = {"http": {}, "https": {}}
        # Counted without a lock where the GIL keeps it exact (see freethreading), so that
        # nothing here can be held across fork().
        self._invalid: Counter[str] = Counter()
        propagation.set_invalid_counter(freethreading.serialized(self._count_invalid))
        # What instrumentations call, where the accelerator is built: its own, which takes
        # this class's methods for every request but the common one.
        fast = accelerated_server_span(self)
        if fast is not None:
            setattr(self, "server_span", fast)  # noqa: B010 (a method, shadowed per instance)
        headers = accelerated_response_headers(self)
        if headers is not None:
            setattr(self, "response_headers", headers)  # noqa: B010

    def _count_invalid(self, header: str) -> None:
        self._invalid[header] += 1

    # -- processors ----------------------------------------------------------------------------

    def add_processor(self, processor: SpanProcessor) -> None:
        """Run ``processor`` (see :class:`tracer.span.SpanProcessor`) on every span started and
        ended from now on, after those added before it and ahead of the collector (the last one
        while it is in the list). Called while installing, not per request; adding one twice
        changes nothing."""
        if processor in self.processors:
            return
        processors = list(self.processors)
        at = processors.index(self.collector) if self.collector in processors else len(processors)
        processors.insert(at, processor)
        self._set_processors(tuple(processors))

    def watch_databases(self) -> None:
        """Add :attr:`database_processors` to the list, once: called by the database
        instrumentations when a call starts while any are waiting."""
        pending = self.database_processors
        while pending:
            try:
                # pop() is one step for the interpreter: two threads starting their first
                # database call at once cannot both take the same processor.
                processor = pending.pop()
            except IndexError:
                return
            self.add_processor(processor)

    def remove_processor(self, processor: SpanProcessor) -> None:
        """Stop running ``processor``; one that is not in the list is ignored."""
        if processor in self.processors:
            self._set_processors(tuple(p for p in self.processors if p is not processor))

    def _set_processors(self, processors: tuple[Any, ...]) -> None:
        self.processors = processors
        chain = self.chain
        on_start = chained(processors, "on_start")
        on_end = (
            accelerated_end(processors, self.collector, self.pipeline)
            or chained(processors, "on_end")
            or _nothing
        )
        if freethreading.locks_needed():
            # Without the GIL, one lock keeps the processors' counters exact (see freethreading).
            lock = freethreading.make_lock()
            on_start = None if on_start is None else freethreading.serialized(on_start, lock)
            on_end = freethreading.serialized(on_end, lock)
        chain.on_start = on_start
        chain.on_end = on_end

    def close(self) -> None:
        """Spans of this runtime that end from now on go nowhere (uninstall): a request still
        running then finishes without reaching a stopped pipeline."""
        self.processors = ()
        self.chain.on_start = None
        self.chain.on_end = _nothing

    # -- inbound -------------------------------------------------------------------------------

    def ignored(self, get: Getter, path: str) -> bool:
        """True for requests the config says not to trace (health checks, probes)."""
        if path in self.ignore_paths:
            return True
        if self.ignore_prefixes and path.startswith(self.ignore_prefixes):
            return True
        for name, patterns in self.ignore_headers:
            value = get(name)
            if value is not None and any(p == "*" or p in value for p in patterns):
                return True
        return False

    def server_span(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        scheme: str = "http",
        multidict: bool = False,
    ) -> Span | None:
        """Start the server span of an inbound request (SR), or None when it is ignored.

        ``headers`` is the request's :func:`tracer.propagation.header_map` (lowercase names,
        repeated headers joined with ``,`` so that two differing traceparents are refused, not
        picked), or with ``multidict`` a case-insensitive multidict (aiohttp's), which is only
        turned into a header map when a trace header came. A request with no trace header at all
        skips extraction with one set check.
        """
        path, _, query = target.partition("?")
        absolute = None
        if path[:1] != "/" and "://" in path:
            # An absolute-form target (sent to proxies): the URL is the target itself, and the
            # path is its path, never its scheme, host or credentials.
            absolute = target
            try:
                parts = urlsplit(target[:MAX_URL])
                path, query = split_path(urlunsplit(("", "", parts.path, parts.query, "")))
            except ValueError:
                path, query = "/", ""
            path = path or "/"
        elif len(path) > MAX_PATH or not (path.isascii() and path.isprintable()):
            path = clean_text(path, MAX_PATH)
        if self._ignoring and self.ignored(headers.get, path):
            return None
        if method not in METHODS:
            method = clean_method(method)
        # Most requests carry no trace header at all: one set check (in C) settles it. Only a
        # request that carries one pays for reading its headers into a header map.
        names = self.propagator.header_names
        if (
            names is not None
            and not (query and "requestId=" in query)
            and (not (headers.keys() & names) if multidict else names.isdisjoint(headers))
        ):
            inbound = None
        else:
            hmap = header_map(headers.items()) if multidict else headers
            inbound = self.propagator.extract(hmap.get, query)
        if inbound is None:
            tid, sid = ids.new_ids()
            span = new_root(
                SERVER,
                f"{method} {path}",
                tid,
                tid,
                None,
                sid,
                self.sampler.decide(tid),
                self.chain,
            )
        else:
            tid = inbound.trace_id or ids.new_trace_id()
            sampled = inbound.sampled
            if sampled is None:
                sampled = self.sampler.decide(tid)
            span = new_root(
                SERVER,
                f"{method} {path}",
                tid,
                inbound.request_id or tid,
                inbound.parent_id,
                ids.new_span_id(),
                sampled,
                self.chain,
            )
            if inbound.must_collect:
                self.collector.force(span.local)
            span.tracestate = inbound.tracestate
            if inbound.parent_service is not None:
                span.set_tag("parent_service", inbound.parent_service)
        span.method = method
        span.path = path
        if absolute is None:
            # The Host header is nearly always one of a few values: its cleaned URL prefix is
            # kept, so the usual request costs one dict lookup here.
            host = headers.get("host")
            prefixes = self._prefixes.get(scheme)
            prefix = None if prefixes is None else prefixes.get(host)
            if prefix is None:
                prefix = f"{scheme}://{clean_host(host) or 'localhost'}"
                if prefixes is not None:
                    if len(prefixes) >= 64:
                        prefixes.clear()
                    prefixes[host] = prefix
            if not query and "#" not in path:
                # The prefix and the path are clean already, and there is no query to redact.
                span.url = prefix + path
            else:
                span.url = redact_url(prefix + target, self.query_keys)
        else:
            span.url = redact_url(absolute, self.query_keys)
        if self.record_headers:
            items = header_map(headers.items()) if multidict else headers
            span.set_tag("http.request_headers", redact_headers(items.items(), self.header_names))
        on_start = self.chain.on_start
        if on_start is not None:
            on_start(span)
        return span

    def response_headers(
        self, span: Span, headers: MutableMapping[str, str] | None = None
    ) -> bytes:
        """The headers a traced server adds to its response, as the original did: ``x-parent``
        (this service), ``x-client-send`` (the span's start), the caller's ``x-span-id``
        echoed, and ``x-must-collect: 1`` once the trace must be kept.

        Called once the response's status is on the span: a failed response first makes its
        trace one that must be kept, so the caller learns of it through ``x-must-collect``.

        With ``headers`` (aiohttp's response headers) they are set there and ``b""`` is
        returned; without, they are returned as the lines of an HTTP/1.x head, ready to append
        (http.server's header buffer). Both forms are written here, next to each other, because a
        generic one (a dict, formatted afterwards) would add work to every request of both
        servers: a header added to one form goes in the other too, and tests check that both
        forms, and both servers, answer with the same headers.
        """
        local = span.local
        if not local.must_collect:
            # Collector.note_failure(span), written out (it runs for every response): a
            # failed response makes its trace one that must be kept.
            collector = self.collector
            status = span.status_code
            slow_us = collector.slow_us
            if (
                span.error is not None
                or (status is not None and status >= collector.error_status)
                or (slow_us is not None and span.duration_us > slow_us)
            ):
                collector.force(local)
        parent = span.parent_id
        if headers is not None:
            headers["x-parent"] = self.service_token
            headers["x-client-send"] = str(span.start_us)
            if parent is not None:
                headers["x-span-id"] = parent
            if local.must_collect:
                headers["x-must-collect"] = "1"
            return b""
        # The constant part (x-parent and the name of x-client-send) is encoded once.
        head = self._head_start + f"{span.start_us}\r\n".encode("ascii")
        if parent is not None:
            head += f"x-span-id: {parent}\r\n".encode("latin-1")
        if local.must_collect:
            head += b"x-must-collect: 1\r\n"
        return head

    # -- outbound ------------------------------------------------------------------------------

    def _continued(self, kind: str, name: str, own: Inbound) -> Span:
        """A local root that continues the trace context ``own`` (validated) of the caller."""
        tid = own.trace_id or ids.new_trace_id()
        sampled = own.sampled
        if sampled is None:
            sampled = self.sampler.decide(tid)
        local = LocalTrace(sampled, False, self.chain)
        root = local.root = Span(kind, name, tid, own.request_id or tid, own.parent_id, local, True)
        root.tracestate = own.tracestate
        return root

    def child_span(self, kind: str, name: str, request_id: str | None = None) -> Span:
        """A span under the current one, or a new root when there is none.

        A root may take ``request_id`` (a valid id the caller already put on its request).
        """
        span = self._child(kind, name, request_id)
        on_start = self.chain.on_start
        if on_start is not None:
            on_start(span)
        return span

    def _child(self, kind: str, name: str, request_id: str | None = None) -> Span:
        parent = current.get()
        if parent is None:
            tid = ids.new_trace_id() if request_id is None else ids.trace_id_for(request_id)
            local = LocalTrace(self.sampler.decide(tid), False, self.chain)
            root = local.root = Span(kind, name, tid, request_id or tid, None, local, True)
            return root
        span = Span(
            kind, name, parent.trace_id, parent.request_id, parent.span_id, parent.local, False
        )
        span.tracestate = parent.tracestate
        return span

    def client_span(self, method: str, url: str, get: Getter | None = None) -> Span | None:
        """Start a client span (CS) for an outgoing call, or None for an ignored host."""
        # A service calls a few endpoints over and over: what the URL gives the span (name,
        # path, redacted URL, ignored or not) is kept per URL, in a bounded dict.
        target = self._targets.get(url)
        if target is None:
            target = self._client_target(url)
            if len(url) <= 2048:
                if len(self._targets) >= 256:
                    self._targets.clear()
                self._targets[url] = target
        if target is _IGNORED:
            return None
        where, path, redacted = target
        if method not in METHODS:
            method = clean_method(method)
        # A caller that set its own trace headers outside any trace (traceparent, b3,
        # request-id) continues that trace. Inside one, the current span is the parent and
        # tracer's headers replace the caller's: those are most often an inbound request's,
        # forwarded, and would make the callee a child of this service's caller.
        own = None
        if get is not None and current.get() is None:
            own = self.propagator.own(get)
        if own is None:
            span = self._child(CLIENT, f"{method} {where}{path}")
        else:
            span = self._continued(CLIENT, f"{method} {where}{path}", own)
        span.method = method
        span.url = redacted
        span.path = path
        on_start = self.chain.on_start
        if on_start is not None:
            on_start(span)
        return span

    def _client_target(self, url: str) -> tuple[str, str, str]:
        try:
            parts = urlsplit(url)
            hostname = parts.hostname or ""
            port = parts.port
        except ValueError:
            return _IGNORED
        if self.ignore_hosts and (
            hostname in self.ignore_hosts or f"{hostname}:{port}" in self.ignore_hosts
        ):
            return _IGNORED
        path = clean_text(parts.path or "/", MAX_PATH)
        where = clean_text(hostname if port is None else f"{hostname}:{port}", 300)
        return where, path, redact_url(url, self.query_keys)

    def inject(self, span: Span, headers: MutableMapping[str, str]) -> None:
        """Write the propagation headers for a call made by ``span``."""
        self.propagator.inject(span, self.service_token, headers)

    def read_response(self, span: Span, status: int, get: Getter) -> None:
        """Record a client span's response: status, and the callee's ``x-must-collect``.

        A callee that must keep the trace makes this process keep it too, and so on back to the
        first caller: each server answers with ``x-must-collect`` once its trace must be kept.
        """
        span.status_code = status
        must = get("x-must-collect")
        if must is not None and len(must) <= 16 and must.strip(" \t") == "1":
            self.collector.force(span.local)
        elif status >= self.collector.error_status:
            self.collector.force(span.local)

    def stats(self) -> dict[str, Any]:
        """Pipeline counts plus sampling and validation counters.

        ``unsampled_dropped`` counts spans of unsampled traces that were discarded (they never
        entered the pipeline, so ``created`` does not include them); ``inbound_invalid`` counts
        inbound header values that failed validation and were replaced.
        """
        out = self.pipeline.stats()
        out.update(self.collector.stats())
        out.update(_own_stats(dict(self._invalid), self.sampler.probability))
        return out


def _nothing(span: Span) -> None:
    pass
