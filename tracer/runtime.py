"""The running tracer: what instrumentations call to start spans and move context.

One :class:`Runtime` exists while tracer is installed. Instrumentations hold a reference to it, so
the request path reads attributes of one object instead of looking up module globals.
"""

from __future__ import annotations

import socket
from collections.abc import MutableMapping
from typing import Any
from urllib.parse import urlsplit

from tracer import ids
from tracer.config import Config
from tracer.context import current
from tracer.pipeline import Pipeline
from tracer.propagation import Getter, Propagator, clean_token
from tracer.redaction import MAX_PATH, clean_host, clean_text, redact_url, split_path
from tracer.sampling import Sampler
from tracer.span import CLIENT, SERVER, LocalTrace, Span


class Runtime:
    """Config, sampler, propagator and pipeline, and the span factories built on them."""

    def __init__(self, config: Config, pipeline: Pipeline, sampler: Sampler) -> None:
        self.config = config
        self.pipeline = pipeline
        self.sampler = sampler
        self.service = config.app_name
        self.host = socket.gethostname()
        self.propagator = Propagator(config.propagation)
        self.ignore_headers = tuple(config.ignore_headers.items())
        self.ignore_hosts = frozenset(config.ignore_hosts)
        self.ignore_paths = frozenset(config.ignore_paths)

    # -- inbound -------------------------------------------------------------------------------

    def ignored(self, get: Getter, path: str) -> bool:
        """True for requests the config says not to trace (health checks, probes)."""
        if path in self.ignore_paths:
            return True
        for name, patterns in self.ignore_headers:
            value = get(name)
            if value is not None and any(p == "*" or p in value for p in patterns):
                return True
        return False

    def server_span(
        self, method: str, target: str, get: Getter, scheme: str = "http"
    ) -> Span | None:
        """Start the server span of an inbound request (SR), or None when it is ignored."""
        path, query = split_path(target)
        if (self.ignore_headers or self.ignore_paths) and self.ignored(get, path):
            return None
        inbound = self.propagator.extract(get, query)
        if inbound is None:
            tid = ids.new_trace_id()
            span = Span(
                SERVER, f"{method} {path}", tid, tid, None, LocalTrace(self.sampler.decide()), True
            )
        else:
            sampled = inbound.sampled
            if sampled is None:
                sampled = self.sampler.decide()
            local = LocalTrace(sampled, inbound.must_collect)
            span = Span(
                SERVER,
                f"{method} {path}",
                inbound.trace_id or ids.new_trace_id(),
                inbound.request_id or "",
                inbound.parent_id,
                local,
                True,
            )
            span.tracestate = inbound.tracestate
            if inbound.parent_service is not None:
                span.set_tag("parent_service", inbound.parent_service)
        span.method = method
        span.path = path
        host = clean_host(get("host")) or "localhost"
        span.url = redact_url(f"{scheme}://{host}{target}")
        return span

    def response_headers(self, span: Span) -> list[tuple[str, str]]:
        """Headers a traced server adds to its response, as the original did."""
        if span.failed:
            span.local.must_collect = True
        headers = [("x-parent", self.service), ("x-client-send", str(span.start_us))]
        if span.parent_id is not None:
            headers.append(("x-span-id", span.parent_id))
        if span.local.must_collect:
            headers.append(("x-must-collect", "1"))
        return headers

    # -- outbound ------------------------------------------------------------------------------

    def child_span(self, kind: str, name: str, request_id: str | None = None) -> Span:
        """A span under the current one, or a new root when there is none.

        A root may take ``request_id`` (a valid id the caller already put on its request).
        """
        parent = current.get()
        if parent is None:
            tid = ids.new_trace_id() if request_id is None else ids.trace_id_for(request_id)
            local = LocalTrace(self.sampler.decide())
            return Span(kind, name, tid, request_id or tid, None, local, True)
        return Span(
            kind, name, parent.trace_id, parent.request_id, parent.span_id, parent.local, False
        )

    def client_span(self, method: str, url: str, get: Getter | None = None) -> Span | None:
        """Start a client span (CS) for an outgoing call, or None for an ignored host."""
        try:
            parts = urlsplit(url)
            hostname = parts.hostname or ""
            port = parts.port
        except ValueError:
            return None
        if self.ignore_hosts and (
            hostname in self.ignore_hosts or f"{hostname}:{port}" in self.ignore_hosts
        ):
            return None
        path = clean_text(parts.path or "/", MAX_PATH)
        where = hostname if port is None else f"{hostname}:{port}"
        # A caller that set its own request-id outside any trace starts the trace with it.
        own = clean_token(get("request-id")) if get is not None and current.get() is None else None
        span = self.child_span(CLIENT, f"{method} {where}{path}", own)
        span.method = method
        span.url = redact_url(url)
        span.path = path
        return span

    def inject(self, span: Span, headers: MutableMapping[str, str]) -> None:
        """Write the propagation headers for a call made by ``span``."""
        self.propagator.inject(span, self.service, headers)

    def read_response(self, span: Span, status: int, get: Getter) -> None:
        """Record a client span's response: status, and the callee's ``x-must-collect``."""
        span.status_code = status
        must = get("x-must-collect")
        if must is not None and must.strip() == "1":
            span.local.must_collect = True

    def stats(self) -> dict[str, Any]:
        return self.pipeline.stats()
