"""Config -> reporter -> pipeline -> instrumentations. Idempotent install and exact uninstall."""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any

from tracer import config as config_module
from tracer import pipeline as pipeline_module
from tracer.context import current
from tracer.instrumentation.base import Instrumentation
from tracer.pipeline import Pipeline
from tracer.runtime import Runtime
from tracer.sampling import Collector, Sampler
from tracer.span import Span, _no_sink

log = logging.getLogger("tracer")

_lock = threading.RLock()
runtime: Runtime | None = None
_instrumentations: list[Instrumentation] = []
_old_record_factory: Any = None


def available_instrumentations() -> list[Instrumentation]:
    """One instance of every instrumentation tracer ships."""
    from tracer.instrumentation.http_server import HttpServerInstrumentation
    from tracer.instrumentation.requests import RequestsInstrumentation

    found: list[Instrumentation] = [HttpServerInstrumentation(), RequestsInstrumentation()]
    return found


def install(config_path: str | os.PathLike[str] | None = None, **overrides: Any) -> None:
    global runtime
    with _lock:
        if runtime is not None:
            log.debug("tracer: install() called again; already installed")
            return
        cfg = config_module.load(config_path, overrides)
        if cfg.disabled:
            log.info("tracer: disabled by configuration (%s)", cfg.source)
            return
        pipeline = Pipeline(
            cfg.reporter,
            cfg.app_name,
            socket.gethostname(),
            max_queue=cfg.max_queue,
            batch_size=cfg.batch_size,
            flush_interval=cfg.flush_interval,
            send_timeout=cfg.send_timeout,
            exit_timeout=cfg.exit_timeout,
        )
        sampler = Sampler(cfg.sample_rate, cfg.sample_size, cfg.collect_interval)
        rt = Runtime(cfg, pipeline, sampler)
        Span.sink = Collector(pipeline.submit).on_finish
        pipeline.start()
        pipeline_module._exit_pipelines.append(pipeline)
        wanted = None if cfg.instrument is None else set(cfg.instrument)
        _instrumentations.clear()
        for inst in available_instrumentations():
            if wanted is None or inst.name in wanted:
                inst.install(rt)
                _instrumentations.append(inst)
        if cfg.log_correlation:
            _install_log_correlation()
        runtime = rt


def uninstall() -> None:
    global runtime
    with _lock:
        rt = runtime
        if rt is None:
            return
        runtime = None
        for inst in _instrumentations:
            inst.uninstall()
        _instrumentations.clear()
        _uninstall_log_correlation()
        rt.pipeline.stop(timeout=rt.config.exit_timeout)
        if rt.pipeline in pipeline_module._exit_pipelines:
            pipeline_module._exit_pipelines.remove(rt.pipeline)
        Span.sink = _no_sink


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
