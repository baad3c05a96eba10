"""Request, runtime and tracer-health metrics, exposed for Prometheus and sent to reporters.

``tracer.install()`` starts them (``metrics = True`` by default): every finished server and
client span is counted into histograms of tracer's own (:mod:`tracer.metrics.recording`),
which a custom collector turns into Prometheus families at scrape time, next to
prometheus-client's process, platform and GC collectors, GC pauses, event-loop lag, threads and
the ledger of ``tracer.stats()``. Expose them with ``metrics_port``, or mount
:func:`aiohttp_handler`, :func:`wsgi_app` or :func:`serve_http` in the application.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from tracer import safety
from tracer.metrics import exposition, health, multiprocess, report
from tracer.metrics.process import GC_NAME, GcPauses, gc_family, thread_families
from tracer.metrics.recording import ACTIVE_NAME, LoopWatcher, Recorder, request_families

if TYPE_CHECKING:
    from tracer.runtime import Runtime

__all__ = [
    "add_collector",
    "aiohttp_handler",
    "metrics_port",
    "registry",
    "remove_collector",
    "serve_http",
    "wsgi_app",
]

log = logging.getLogger("tracer")

# How often each running event loop is probed for lag.
LOOP_PROBE_INTERVAL = 1.0

_registry = CollectorRegistry(auto_describe=True)
_lock = threading.RLock()
_state: _State | None = None


class _TracerCollector:
    """Reads tracer's own structures at scrape time (and, with ``metrics_dir``, the files of
    the other processes)."""

    def __init__(self, state: _State) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        state = self.state
        files = state.files
        # The other files first, so that this scrape's own samples count what it left out.
        states = [] if files is None else files.others(state.sample_kinds())
        series, samples = state.local()
        families: Iterable[Metric] | None = None
        merged = series
        if files is not None:
            try:
                merged = multiprocess.merge_series(series, states, {ACTIVE_NAME})
                families = multiprocess.merge_samples(samples, states)
            except Exception as exc:
                # The files are validated as they are read; a scrape still answers if not.
                safety.internal_error("metrics.merge", exc)
                merged = series
        if families is None:
            families = state.sample_families()
        yield from request_families(state.recorder.buckets, merged, state.recorder.admission)
        yield gc_family(merged.get(GC_NAME, []))
        yield from thread_families()
        yield from families


class _State:
    """Everything :func:`install` started, so that :func:`uninstall` stops exactly that."""

    def __init__(self, runtime: Runtime) -> None:
        cfg = runtime.config
        self.runtime = runtime
        self.directory: str | None = cfg.metrics_dir
        # The shared directory once it is checked (start): None for this process alone.
        self.files: multiprocess.Files | None = None
        self._kinds: dict[str, str] | None = None
        self.loops = LoopWatcher(LOOP_PROBE_INTERVAL)
        self.recorder = Recorder(tuple(cfg.metrics_buckets), self.loops)
        self.gc = GcPauses()
        self.collectors: list[Collector] = [
            _TracerCollector(self),
            ProcessCollector(registry=None),
            PlatformCollector(registry=None),
            # It registers itself in the registry it is given: a scratch one, ours is below.
            GCCollector(registry=CollectorRegistry()),
        ]
        self.thread: exposition.MetricsThread | None = None
        self.reporting = cfg.metrics_interval is not None

    # -- what one process has ------------------------------------------------------------------

    def sample_families(self) -> list[Metric]:
        families = list(health.families(self.runtime))
        families.append(self.loops.family())
        if self.files is not None:
            families.append(self.files.family())
        return families

    def sample_kinds(self) -> dict[str, str]:
        """The names of :meth:`sample_families` and their types (always the same ones)."""
        kinds = self._kinds
        if kinds is None:
            kinds = self._kinds = {f.name: f.type for f in self.sample_families()}
        return kinds

    def local(self) -> tuple[dict[str, list[Any]], list[dict[str, Any]]]:
        series: dict[str, list[Any]] = dict(self.recorder.series())
        series[GC_NAME] = self.gc.rows()
        if self.files is None:
            return series, []
        return series, multiprocess.encode_samples(self.sample_families())

    def write(self, exited: bool = False) -> None:
        files = self.files
        if files is None:
            return
        series, samples = self.local()
        files.write(
            {
                "pid": os.getpid(),
                "exited": exited,
                "buckets": list(self.recorder.buckets),
                "series": series,
                "samples": samples,
            },
        )

    def at_exit(self) -> None:
        try:
            self.write(exited=True)
        except Exception as exc:
            safety.internal_error("metrics.exit", exc)

    # -- start and stop ------------------------------------------------------------------------

    def start(self) -> None:
        runtime = self.runtime
        cfg = runtime.config
        if self.directory is not None:
            problem = multiprocess.check_directory(self.directory)
            if problem is None:
                self.files = multiprocess.Files(self.directory, self.recorder.buckets)
            else:
                log.warning(
                    "tracer: metrics_dir %s %s: not used, so the metrics are this process's alone",
                    self.directory,
                    problem,
                )
        for collector in self.collectors:
            _registry.register(collector)
        runtime.add_processor(self.recorder)
        self.gc.install()
        self.loops.hook()
        self.start_thread(cfg.metrics_host, cfg.metrics_port)
        if self.files is not None:
            atexit.register(self.at_exit)
        if self.reporting:
            report.start(runtime, _registry)

    def start_thread(self, host: str | None, port: int | None) -> None:
        if port is None and self.files is None:
            return
        try:
            thread = exposition.MetricsThread(
                _registry, host, port, self.tick, multiprocess.WRITE_INTERVAL
            )
        except OSError as exc:
            # A port in use is the deployment's problem: the application runs on, unscraped.
            log.warning("tracer: cannot serve metrics on %s:%s: %s", host, port, exc)
            if self.files is None:
                return
            thread = exposition.MetricsThread(
                _registry, None, None, self.tick, multiprocess.WRITE_INTERVAL
            )
        self.thread = thread
        thread.start()

    def tick(self) -> None:
        self.write()

    def stop(self) -> None:
        runtime = self.runtime
        if self.reporting:
            try:
                report.stop()
            except Exception as exc:
                safety.internal_error("metrics.report.stop", exc)
        runtime.remove_processor(self.recorder)
        self.gc.uninstall()
        self.loops.unhook()
        self.loops.stop()
        if self.thread is not None:
            self.thread.stop()
            self.thread = None
        if self.files is not None:
            atexit.unregister(self.at_exit)
            self.at_exit()
        for collector in self.collectors:
            try:
                _registry.unregister(collector)
            except KeyError:
                pass

    def after_fork_in_child(self) -> None:
        # The parent's counts stay the parent's; the threads did not come along.
        self.recorder.reset()
        self.gc.reset()
        self.loops.reset()
        if self.files is not None:
            self.files.after_fork_in_child()
        if self.thread is not None:
            self.thread.forget()
            self.thread = None
        # A worker of a pre-forking server writes its own file; only the parent serves the port.
        self.start_thread(None, None)
        if self.reporting:
            report.after_fork_in_child()


def install(runtime: Runtime) -> None:
    """Start metrics for the installed ``runtime`` (called by ``tracer.install()``, which hands
    it over: nothing here reads the installer): its request recording is a span processor of
    ``runtime``."""
    global _state
    if not runtime.config.metrics:
        return
    with _lock:
        if _state is not None:
            return
        state = _State(runtime)
        _state = state
        try:
            state.start()
        except BaseException:
            _state = None
            state.stop()
            raise


def uninstall() -> None:
    """Stop what :func:`install` started (called by ``tracer.uninstall()``)."""
    global _state
    with _lock:
        state, _state = _state, None
        if state is not None:
            state.stop()


def after_fork_in_child() -> None:
    """Give a forked child its own metrics state."""
    global _lock
    _lock = threading.RLock()
    state = _state
    if state is not None:
        state.after_fork_in_child()


# -- public API ---------------------------------------------------------------------------------


def registry() -> CollectorRegistry:
    """tracer's registry: request histograms, active requests, process, platform and GC
    collectors, GC pauses, event-loop lag, threads and tracer's health, while installed, and
    any collector given to :func:`add_collector`. The same object for the life of the process;
    without tracer installed it holds only the added collectors."""
    return _registry


def add_collector(collector: Collector) -> None:
    """Expose ``collector`` (an object with ``collect()``, as prometheus-client's custom
    collectors) with tracer's metrics, until :func:`remove_collector`."""
    _registry.register(collector)


def remove_collector(collector: Collector) -> None:
    """Stop exposing ``collector``; one that was never added is ignored."""
    try:
        _registry.unregister(collector)
    except KeyError:
        pass


def metrics_port() -> int | None:
    """The port tracer's own ``/metrics`` server listens on (None when there is none)."""
    state = _state
    thread = None if state is None else state.thread
    return None if thread is None else thread.port


def wsgi_app() -> Callable[[dict[str, Any], Any], Iterable[bytes]]:
    """A WSGI application answering with the exposition of :func:`registry` (mount it at
    ``/metrics``)."""
    return exposition.wsgi(_registry)


def aiohttp_handler() -> Callable[[Any], Any]:
    """An aiohttp handler answering with the exposition of :func:`registry`:
    ``app.router.add_get("/metrics", tracer.metrics.aiohttp_handler())``."""
    from aiohttp import web

    async def metrics(request: web.Request) -> web.Response:
        body, content_type = exposition.render(_registry, request.headers.get("Accept"))
        response = web.Response(body=body)
        # Set whole: web.Response would split off the charset and refuse parameters.
        response.headers["Content-Type"] = content_type
        return response

    return metrics


def serve_http(handler: Any) -> None:
    """Answer an ``http.server`` request with the exposition of :func:`registry`: call it from
    ``do_GET`` of a ``BaseHTTPRequestHandler`` for the metrics path."""
    body, content_type = exposition.render(_registry, handler.headers.get("Accept"))
    handler.send_response(200)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)
