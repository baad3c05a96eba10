"""Config -> reporter -> pipeline -> processors -> instrumentations. Idempotent install and exact
uninstall.

The top of the layering (docs/design.md, "Layers"): it hands the runtime to each instrumentation
and feature as a parameter, and none of them imports this module.

Also the process-level duties of delivery: flush at exit (atexit), flush on SIGTERM before the
handler that was there runs, and a fresh pipeline in a forked child.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import socket
import threading
from types import FrameType
from typing import Any

from tracer import config as config_module
from tracer import propagation, safety
from tracer.context import current
from tracer.delivery import Pipeline
from tracer.instrumentation.base import Instrumentation, discover
from tracer.instrumentation.nplusone import NPlusOne
from tracer.runtime import Runtime
from tracer.sampling import Sampler

log = logging.getLogger("tracer")

_lock = threading.RLock()
runtime: Runtime | None = None
_instrumentations: list[Instrumentation] = []
_old_record_factory: Any = None
_previous_sigterm: Any = None
_our_sigterm: Any = None


def available_instrumentations() -> list[Instrumentation]:
    """One instance of every instrumentation there is: tracer's own, those of installed packages
    (entry points) and registered ones (see :func:`tracer.instrumentation.base.discover`)."""
    return [cls() for cls in discover()]


def _spool_path(cfg: config_module.Config) -> str | None:
    """Where the spool lives; nothing is opened here (the sender opens it when needed)."""
    if not cfg.spool:
        return None
    from tracer.delivery.spool import default_path

    return os.fspath(cfg.spool_path or default_path(cfg.app_name))


def install(config_path: str | os.PathLike[str] | None = None, **overrides: Any) -> None:
    global runtime
    with _lock:
        if runtime is not None:
            log.debug("tracer: install() called again; already installed")
            return
        found: list[Instrumentation] = []

        def known() -> dict[str, str]:
            # The names `instrument` may use and the library each patches; load() asks only
            # when `instrument` names some.
            found[:] = available_instrumentations()
            return {inst.name: inst.module for inst in found}

        cfg = config_module.load(config_path, overrides, instrumentations=known)
        if cfg.disabled:
            log.info("tracer: disabled by configuration (%s)", cfg.source)
            return
        pipeline = Pipeline(
            cfg.reporter,
            cfg.app_name,
            socket.gethostname(),
            max_queue=cfg.max_queue,
            max_queue_bytes=cfg.max_queue_bytes,
            batch_size=cfg.batch_size,
            flush_interval=cfg.flush_interval,
            send_timeout=cfg.send_timeout,
            max_retries=cfg.max_retries,
            max_backoff=cfg.max_backoff,
            exit_timeout=cfg.exit_timeout,
            spool_path=_spool_path(cfg),
            spool_max_bytes=cfg.spool_max_bytes,
        )
        sampler = Sampler(cfg.sample_rate, cfg.sample_size, cfg.collect_interval)
        # The runtime starts with its collector as the one span processor; features add theirs.
        rt = Runtime(cfg, pipeline, sampler)
        if cfg.n_plus_one_threshold:
            rt.database_processors.append(NPlusOne(cfg.n_plus_one_threshold))
        pipeline.start()
        wanted = None if cfg.instrument is None else set(cfg.instrument)
        _instrumentations.clear()
        for inst in found or available_instrumentations():
            if wanted is None or inst.name in wanted:
                inst.install(rt)
                _instrumentations.append(inst)
        if cfg.log_correlation:
            _install_log_correlation()
        if cfg.handle_sigterm:
            _install_sigterm()
        runtime = rt
        # After the runtime is set: both read it, and neither may fail install().
        for feature in _features():
            try:
                feature.install(rt)
            except Exception as exc:
                safety.internal_error(f"{feature.__name__}.install", exc)


def _features() -> list[Any]:
    """The parts started with the runtime and stopped before it: metrics, memory and the
    profiler."""
    from tracer import memory, metrics, profiler

    return [metrics, memory, profiler]


def instruments(module_name: str) -> bool:
    """Whether an installed instrumentation patches the module named ``module_name``."""
    with _lock:
        return any(inst.module == module_name for inst in _instrumentations)


def instrument_main(module_name: str) -> bool:
    """Apply the instrumentations of ``module_name`` to ``sys.modules["__main__"]`` as well,
    which ``tracer run -m`` filled from that module's source (see ``tracer.cli``): its classes
    are not the patched ones. The copies are uninstalled with the rest. False when none applies.
    """
    with _lock:
        rt = runtime
        if rt is None:
            return False
        copies = [type(inst)() for inst in _instrumentations if inst.module == module_name]
        for copy in copies:
            copy.module = "__main__"
            copy.install(rt)
            _instrumentations.append(copy)
        return bool(copies)


def uninstall() -> None:
    global runtime
    with _lock:
        rt = runtime
        if rt is None:
            return
        runtime = None
        for feature in _features():
            try:
                feature.uninstall()
            except Exception as exc:
                safety.internal_error(f"{feature.__name__}.uninstall", exc)
        for inst in _instrumentations:
            inst.uninstall()
        _instrumentations.clear()
        _uninstall_log_correlation()
        _uninstall_sigterm()
        rt.close()
        propagation.set_invalid_counter(None)
        rt.pipeline.stop(rt.config.exit_timeout)


# -- exit, signals, fork ------------------------------------------------------------------------


def _at_exit() -> None:
    rt = runtime
    if rt is not None:
        try:
            rt.pipeline.stop(rt.config.exit_timeout)
        except Exception as exc:
            safety.internal_error("atexit", exc)


atexit.register(_at_exit)


def _flush_on_sigterm() -> None:
    rt = runtime
    if rt is not None:
        try:
            rt.pipeline.flush(rt.config.exit_timeout)
        except Exception as exc:
            safety.internal_error("sigterm", exc)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Deliver (or spool) what we have, then do what would have happened without us. Only the
    # default action ends the process here: an application's own handler (gunicorn's and
    # uvicorn's graceful stop) or SIG_IGN lets it go on, finishing requests whose spans must
    # still be delivered, so the pipeline is flushed, not stopped; atexit stops it.
    previous = _previous_sigterm
    if callable(previous):
        _flush_on_sigterm()
        previous(signum, frame)
    elif previous == signal.SIG_IGN:
        _flush_on_sigterm()
    else:
        _at_exit()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)


def _install_sigterm() -> None:
    """Chain a SIGTERM flush in front of the existing handler, where that is allowed.

    Only the main thread may set signal handlers, and an application that handles SIGTERM itself
    keeps its handler: ours runs first and then calls it. A handler set by something outside
    Python (None from getsignal) is left alone.
    """
    global _previous_sigterm, _our_sigterm
    if threading.current_thread() is not threading.main_thread():
        log.debug("tracer: not in the main thread; SIGTERM flush not installed")
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is None or previous is _on_sigterm:
        return
    _previous_sigterm = previous
    signal.signal(signal.SIGTERM, _on_sigterm)
    _our_sigterm = _on_sigterm


def _uninstall_sigterm() -> None:
    global _previous_sigterm, _our_sigterm
    if _our_sigterm is None or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is _our_sigterm:
        signal.signal(signal.SIGTERM, _previous_sigterm)
    _previous_sigterm = _our_sigterm = None


def _after_fork_in_child() -> None:
    rt = runtime
    if rt is not None:
        try:
            rt.pipeline.after_fork_in_child()
        except Exception as exc:
            safety.internal_error("fork", exc)
        for feature in _features():
            try:
                feature.after_fork_in_child()
            except Exception as exc:
                safety.internal_error(f"{feature.__name__}.fork", exc)


os.register_at_fork(after_in_child=_after_fork_in_child)


# -- log correlation ----------------------------------------------------------------------------


def _install_log_correlation() -> None:
    global _old_record_factory
    if _old_record_factory is not None:
        return
    old = logging.getLogRecordFactory()
    _old_record_factory = old

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = old(*args, **kwargs)
        span = current.get()
        if span is None:
            record.trace_id = record.span_id = record.request_id = None
        else:
            record.trace_id = span.trace_id
            record.span_id = span.span_id
            record.request_id = span.request_id
        return record

    logging.setLogRecordFactory(factory)


def _uninstall_log_correlation() -> None:
    global _old_record_factory
    if _old_record_factory is not None:
        logging.setLogRecordFactory(_old_record_factory)
        _old_record_factory = None
