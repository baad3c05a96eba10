"""What every benchmark subprocess shares: variant set-up, counting sinks, result lines.

A variant is ``untraced``, ``tracer`` or ``otel``. Each one is set up in a fresh process, so the
patches of one variant never leak into another. The sinks count every span they receive, which is
how a variant proves that it produced and exported what it claims.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

RESULT_PREFIX = "RESULT "
PORT_PREFIX = "PORT "

Callback = Callable[[BaseException | None], None]


def emit(result: dict[str, Any]) -> None:
    """Print the one line the orchestrator parses."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def rss_bytes() -> int:
    """Resident set size now (Linux), else the peak as reported by getrusage."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def _batch_size(data: dict[str, Any]) -> int:
    spans = data.get("spans")
    return len(spans) if isinstance(spans, list) else 0


class CountingReporter:
    """A reporter that discards every batch, counts its spans and acknowledges at once.

    ``mode`` decides what happens instead: ``"block"`` holds the sending thread until
    :meth:`release` (the queue cannot drain), ``"fail"`` answers every batch with an error until
    :meth:`release` (the receiver is down). Released, it behaves like ``"discard"``.
    """

    def __init__(self, mode: str = "discard", hold_limit: float = 60.0) -> None:
        self.mode = mode
        self.spans = 0
        self.batches = 0
        self.failed_spans = 0
        self.entered = threading.Event()
        self.failed = threading.Event()  # set once a delivery has failed ("fail" mode)
        self._released = threading.Event()
        self._hold_limit = hold_limit
        self._lock = threading.Lock()
        if mode == "discard":
            self._released.set()

    def release(self) -> None:
        self._released.set()

    def send(self, data: dict[str, Any], callback: Callback) -> None:
        count = _batch_size(data)
        self.entered.set()
        if not self._released.is_set():
            if self.mode == "fail":
                with self._lock:
                    self.failed_spans += count
                self.failed.set()
                callback(ConnectionError("benchmark reporter is down"))
                return
            # "block": bounded, so a lost release cannot hang the benchmark.
            self._released.wait(self._hold_limit)
        with self._lock:
            self.spans += count
            self.batches += 1
        callback(None)


def install_tracer(reporter: CountingReporter, **options: Any) -> dict[str, Any]:
    """Install tracer with ``reporter``, every request sampled; returns the notes to print."""
    import tracer

    base: dict[str, Any] = {"app_name": "bench", "reporter": reporter, **options}
    try:
        tracer.install(**base, sample_rate=1)
    except Exception as exc:  # an unknown option may be a TypeError or a config error
        try:
            tracer.uninstall()
        except Exception:
            pass
        tracer.install(**base)
        return {"sample_rate": f"default ({type(exc).__name__})"}
    return {}


def tracer_stats() -> dict[str, Any]:
    import tracer

    stats = getattr(tracer, "stats", None)
    if stats is None:
        return {}
    try:
        return dict(stats())
    except Exception as exc:
        return {"stats_error": repr(exc)}


class Setup:
    """The untraced variant: nothing installed, nothing delivered."""

    name = "untraced"

    def __init__(self) -> None:
        self.notes: dict[str, Any] = {}

    def delivered(self) -> int:
        return 0

    def flush(self, timeout: float = 10.0) -> bool:
        return True

    def stats(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass

    def suspend(self) -> None:
        """Switch the instrumentation off; spans made so far still count."""

    def resume(self) -> None:
        """Switch it on again, with the same sink."""


class TracerSetup(Setup):
    name = "tracer"

    def __init__(self, reporter: CountingReporter | None = None, **options: Any) -> None:
        super().__init__()
        import tracer

        self._tracer = tracer
        self.reporter = reporter or CountingReporter()
        self._options = options
        self.notes = install_tracer(self.reporter, **options)

    def delivered(self) -> int:
        return self.reporter.spans

    def flush(self, timeout: float = 10.0) -> bool:
        return bool(self._tracer.flush(timeout=timeout))

    def stats(self) -> dict[str, Any]:
        return tracer_stats()

    def close(self) -> None:
        self._tracer.uninstall()

    def suspend(self) -> None:
        self._tracer.uninstall()

    def resume(self) -> None:
        install_tracer(self.reporter, **self._options)


# OpenTelemetry instrumentors by the name a benchmark asks for: (module, class).
OTEL_INSTRUMENTORS: dict[str, tuple[str, str]] = {
    "requests": ("opentelemetry.instrumentation.requests", "RequestsInstrumentor"),
    "aiohttp-client": ("opentelemetry.instrumentation.aiohttp_client", "AioHttpClientInstrumentor"),
    "aiohttp-server": ("opentelemetry.instrumentation.aiohttp_server", "AioHttpServerInstrumentor"),
    "httpx": ("opentelemetry.instrumentation.httpx", "HTTPXClientInstrumentor"),
    "urllib3": ("opentelemetry.instrumentation.urllib3", "URLLib3Instrumentor"),
    "urllib": ("opentelemetry.instrumentation.urllib", "URLLibInstrumentor"),
    "flask": ("opentelemetry.instrumentation.flask", "FlaskInstrumentor"),
    "django": ("opentelemetry.instrumentation.django", "DjangoInstrumentor"),
    "sqlite3": ("opentelemetry.instrumentation.sqlite3", "SQLite3Instrumentor"),
    "psycopg": ("opentelemetry.instrumentation.psycopg", "PsycopgInstrumentor"),
    "fastapi": ("opentelemetry.instrumentation.fastapi", "FastAPIInstrumentor"),
    "redis": ("opentelemetry.instrumentation.redis", "RedisInstrumentor"),
}


def make_otel_exporter(mode: str = "discard", hold_limit: float = 60.0) -> Any:
    """A SpanExporter that counts and discards (or blocks, like :class:`CountingReporter`)."""
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class CountingExporter(SpanExporter):
        def __init__(self) -> None:
            self.spans = 0
            self.entered = threading.Event()
            self._released = threading.Event()
            if mode == "discard":
                self._released.set()

        def release(self) -> None:
            self._released.set()

        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            self.entered.set()
            self._released.wait(hold_limit)
            self.spans += len(spans)
            return SpanExportResult.SUCCESS

        def shutdown(self) -> None:
            self._released.set()

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return True

    return CountingExporter()


class OtelSetup(Setup):
    """OpenTelemetry SDK: default (always-on) sampler, BatchSpanProcessor, counting exporter."""

    name = "otel"

    def __init__(
        self, instrument: Sequence[str] = (), exporter: Any = None, max_queue: int | None = None
    ) -> None:
        super().__init__()
        import importlib

        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        self.exporter = exporter if exporter is not None else make_otel_exporter()
        self.provider = TracerProvider()
        # The memory row queues more spans than the default 2,048 and must not see them dropped.
        queue = {} if max_queue is None else {"max_queue_size": max_queue}
        self.provider.add_span_processor(BatchSpanProcessor(self.exporter, **queue))
        self._instrumentors: list[Any] = []
        for what in instrument:
            module_name, class_name = OTEL_INSTRUMENTORS[what]
            instrumentor = getattr(importlib.import_module(module_name), class_name)()
            instrumentor.instrument(tracer_provider=self.provider)
            self._instrumentors.append(instrumentor)

    def delivered(self) -> int:
        return int(self.exporter.spans)

    def flush(self, timeout: float = 10.0) -> bool:
        return bool(self.provider.force_flush(timeout_millis=int(timeout * 1000)))

    def close(self) -> None:
        for instrumentor in self._instrumentors:
            instrumentor.uninstrument()
        self.provider.shutdown()

    def suspend(self) -> None:
        for instrumentor in self._instrumentors:
            instrumentor.uninstrument()

    def resume(self) -> None:
        for instrumentor in self._instrumentors:
            instrumentor.instrument(tracer_provider=self.provider)


def make_setup(variant: str, instrument: Sequence[str] = ()) -> Setup:
    if variant == "untraced":
        return Setup()
    if variant == "tracer":
        # Spans only, as this variant measured before metrics and the memory watch existed, so
        # that its history stays comparable.
        return TracerSetup(metrics=False, memory_watch=False)
    if variant == "metrics":
        # tracer plus request and runtime metrics (no metrics batches: their thread wakes once
        # a minute, which a run under callgrind may or may not reach).
        return TracerSetup(metrics=True, metrics_interval=None, memory_watch=False)
    if variant == "memory":
        return TracerSetup(metrics=False, memory_watch=True)
    if variant == "defaults":
        # What install() does by default: request and runtime metrics and the memory watch on
        # (metrics batches off, as in the metrics variant).
        return TracerSetup(metrics=True, metrics_interval=None, memory_watch=True)
    if variant == "spanmap":
        # tracer plus the profiler's thread->span map in the processor list, as while a profile
        # runs, but no sampling thread: the map's own cost per request.
        setup = TracerSetup(metrics=False, memory_watch=False)
        from tracer import installer
        from tracer.profiler.sampler import SpanMap

        assert installer.runtime is not None
        installer.runtime.add_processor(SpanMap())
        return setup
    if variant == "profiled":
        # tracer with a profile running all along: the span map and the sampling thread.
        import tracer

        setup = TracerSetup(metrics=False, memory_watch=False, profile_max_seconds=86400.0)
        tracer.profile(86400.0, write=False, report=False)
        return setup
    if variant == "otel":
        return OtelSetup(instrument)
    raise ValueError(f"unknown variant {variant!r}")
