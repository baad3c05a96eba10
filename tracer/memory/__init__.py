"""Memory-leak hunting in production: memwatch-style events, heap diffs and snapshots.

``tracer.memory.on("stats", fn)`` and ``on("leak", fn)`` subscribe to the watcher's events
(started by ``tracer.install()`` while ``memory_watch`` is on); :func:`gc` runs a full collection
and returns the stats; :class:`HeapDiff`, :func:`snapshot` and :func:`trace` find what grew.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from tracer import safety
from tracer.memory import snapshot as _snapshot_module
from tracer.memory.alloc import trace
from tracer.memory.heapdiff import HeapDiff
from tracer.memory.snapshot import snapshot
from tracer.memory.watch import Listener, Watcher, idle_stats

if TYPE_CHECKING:
    from tracer.runtime import Runtime

__all__ = ["EVENTS", "HeapDiff", "gc", "off", "on", "snapshot", "trace"]

log = logging.getLogger("tracer")

EVENTS = ("stats", "leak")

_lock = threading.Lock()
# Event -> listeners, replaced (never changed in place) so the watcher reads them without a lock.
_listeners: dict[str, tuple[Listener, ...]] = {event: () for event in EVENTS}
_watcher: Watcher | None = None
_runtime: Runtime | None = None
_collector: Any = None


def on(event: str, fn: Listener) -> None:
    """Call ``fn(data)`` on every ``event``: ``"stats"`` (after each full collection, or every
    ``memory_interval`` seconds when none came) or ``"leak"`` (a base kept growing over
    ``leak_observations`` observations and ``leak_window`` seconds). Listeners run on tracer's
    memory thread, never inside a collection; an exception they raise is logged and counted, and
    the others still run."""
    if event not in EVENTS:
        raise ValueError(f"unknown memory event {event!r}; expected one of {EVENTS}")
    if not callable(fn):
        raise TypeError("the listener must be callable")
    with _lock:
        _listeners[event] = (*_listeners[event], fn)


def off(event: str, fn: Listener) -> None:
    """Stop calling ``fn`` on ``event`` (once per :func:`on`; a listener never added is
    ignored)."""
    if event not in EVENTS:
        raise ValueError(f"unknown memory event {event!r}; expected one of {EVENTS}")
    with _lock:
        current = list(_listeners[event])
        if fn in current:
            current.remove(fn)
            _listeners[event] = tuple(current)


def _get_listeners(event: str) -> tuple[Listener, ...]:
    return _listeners.get(event, ())


def gc() -> dict[str, Any]:
    """Run a full collection and return the stats dict of the observation made after it (with
    the watcher running, the ``stats`` listeners get it too)."""
    watcher = _watcher
    if watcher is None or not watcher.running:
        return idle_stats()
    return watcher.collect()


def _on_leak(leak: dict[str, Any]) -> None:
    _snapshot_module.on_leak(leak)


def _start(runtime: Runtime) -> None:
    global _watcher
    cfg = runtime.config
    pipeline = runtime.pipeline
    watcher = Watcher(
        cfg.memory_interval,
        cfg.leak_observations,
        _get_listeners,
        submit=pipeline.submit_report,
        on_leak=_on_leak,
        span=cfg.leak_window,
    )
    watcher.start()
    _watcher = watcher


def _stop() -> None:
    global _watcher
    watcher, _watcher = _watcher, None
    if watcher is not None:
        watcher.stop()


def install(runtime: Runtime) -> None:
    """Start the memory watcher for the installed ``runtime`` (called by ``tracer.install()``,
    which hands it over: nothing here reads the installer)."""
    global _runtime
    with _lock:
        if _runtime is not None:
            return
        _runtime = runtime
    if runtime.config.memory_watch:
        _start(runtime)
        _add_collector()
    # The snapshot signal is an option of its own (heap_snapshot_signal), watcher or not.
    try:
        _snapshot_module.install(runtime.config)
    except Exception as exc:
        safety.internal_error("memory.snapshot.install", exc)


def uninstall() -> None:
    """Stop what :func:`install` started (called by ``tracer.uninstall()``): the gc callback,
    the thread, the metrics collector and the snapshot signal handler."""
    global _runtime
    with _lock:
        if _runtime is None:
            return
        _runtime = None
    try:
        _remove_collector()
    finally:
        _stop()
        try:
            _snapshot_module.uninstall()
        except Exception as exc:
            safety.internal_error("memory.snapshot.uninstall", exc)


def after_fork_in_child() -> None:
    """Give a forked child its own watcher state: fresh bases, counts and thread (the
    listeners stay, as the child runs the same code)."""
    global _lock, _watcher
    _lock = threading.Lock()
    runtime = _runtime
    old, _watcher = _watcher, None
    if old is not None:
        # The parent's thread does not exist here; only its gc callback was copied.
        old.stop(timeout=0)
        if runtime is not None:
            _start(runtime)
    try:
        _snapshot_module.after_fork_in_child()
    except Exception as exc:
        safety.internal_error("memory.snapshot.fork", exc)


# -- metrics --------------------------------------------------------------------------------------


class _Collector:
    """A prometheus_client custom collector: the leak counter and the base gauges."""

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        watcher = _watcher
        leaks = CounterMetricFamily(
            "tracer_memory_leaks",
            "Leak events raised by the memory watcher, by the measure that grew.",
            labels=["measure"],
        )
        heap = GaugeMetricFamily(
            "tracer_memory_heap_base_blocks",
            "Python heap after the last observation (allocated memory blocks).",
        )
        rss = GaugeMetricFamily(
            "tracer_memory_rss_base_bytes",
            "Resident set size at the last observation, in bytes.",
        )
        if watcher is not None:
            numbers = watcher.metrics()
            for measure, count in numbers["leaks"].items():
                leaks.add_metric([measure], count)
            if numbers["heap_base"] is not None:
                heap.add_metric([], numbers["heap_base"])
            if numbers["rss_base"] is not None:
                rss.add_metric([], numbers["rss_base"])
        return [leaks, heap, rss]


def _add_collector() -> None:
    global _collector
    from tracer import metrics

    add = getattr(metrics, "add_collector", None)
    if add is None or _collector is not None:
        return
    collector = _Collector()
    try:
        add(collector)
    except Exception as exc:
        safety.internal_error("memory.metrics", exc)
        return
    _collector = collector


def _remove_collector() -> None:
    global _collector
    collector, _collector = _collector, None
    if collector is None:
        return
    from tracer import metrics

    remove = getattr(metrics, "remove_collector", None)
    if remove is not None:
        try:
            remove(collector)
        except Exception as exc:
            safety.internal_error("memory.metrics", exc)
