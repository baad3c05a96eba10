"""Threads: work handed to another thread stays in the trace that handed it over.

A new thread starts with an empty context, so without help every span a worker makes would start
a trace of its own. Two patches carry tracer's context across:

* ``threading.Thread.start`` notes the current span (and whether tracing is suppressed) and the
  new thread runs with them. ``_bootstrap_inner`` is where the thread begins, before ``run()``, so
  subclasses that override ``run()`` are covered too.
* ``concurrent.futures.ThreadPoolExecutor.submit`` wraps the function in the submitter's span.
  ``loop.run_in_executor`` and ``asyncio.to_thread`` go through ``submit``.

Only tracer's own two context variables travel, not a copy of the whole context: the
application's variables behave in threads exactly as they did without tracer. A pool's worker
threads are started from inside ``submit`` and serve many submitters, so they are started with no
span; each work item sets its span and resets it when done, so nothing leaks to the next item.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from typing import Any

from tracer.context import current, suppress
from tracer.instrumentation.base import Instrumentation
from tracer.span import Span

_CARRY = "_tracer_carry"


def _run_in(span: Span | None, suppressed: bool, fn: Callable[..., Any], *a: Any, **k: Any) -> Any:
    span_token = current.set(span)
    suppress_token = suppress.set(suppressed)
    try:
        return fn(*a, **k)
    finally:
        suppress.reset(suppress_token)
        current.reset(span_token)


class ThreadsInstrumentation(Instrumentation):
    """Carries the current span into threads and thread pool work items."""

    name = "threads"
    module = "threading"

    def _install(self, module: types.ModuleType) -> None:
        import concurrent.futures.thread as futures_thread

        thread_cls = module.Thread

        def start(
            wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kw: dict[str, Any]
        ) -> Any:
            span = current.get()
            suppressed = suppress.get()
            if span is not None or suppressed:
                instance.__dict__[_CARRY] = (span, suppressed)
            return wrapped(*args, **kw)

        def bootstrap_inner(
            wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kw: dict[str, Any]
        ) -> Any:
            carry = instance.__dict__.pop(_CARRY, None)
            if carry is None:
                return wrapped(*args, **kw)
            return _run_in(carry[0], carry[1], wrapped, *args, **kw)

        def submit(
            wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kw: dict[str, Any]
        ) -> Any:
            span = current.get()
            suppressed = suppress.get()
            if span is None and not suppressed:
                return wrapped(*args, **kw)
            # An interpreter pool (3.14) sends the function to another interpreter: a closure
            # over our span cannot go there, and that interpreter has no tracer anyway.
            interpreters = sys.modules.get("concurrent.futures.interpreter")
            if interpreters is not None and isinstance(
                instance, interpreters.InterpreterPoolExecutor
            ):
                return wrapped(*args, **kw)
            if args:  # submit(fn, /, *args, **kwargs): fn is positional-only
                args = (_bind(span, suppressed, args[0]), *args[1:])
            # Worker threads the pool starts now outlive this submitter: start them clean.
            span_token = current.set(None)
            suppress_token = suppress.set(False)
            try:
                return wrapped(*args, **kw)
            finally:
                suppress.reset(suppress_token)
                current.reset(span_token)

        self.wrap(thread_cls, "start", start)
        # Where a thread begins; fall back to run() on an interpreter without it.
        entry = "_bootstrap_inner" if "_bootstrap_inner" in vars(thread_cls) else "run"
        self.wrap(thread_cls, entry, bootstrap_inner)
        self.wrap(futures_thread.ThreadPoolExecutor, "submit", submit)


def _bind(span: Span | None, suppressed: bool, fn: Callable[..., Any]) -> Callable[..., Any]:
    def carried(*a: Any, **k: Any) -> Any:
        return _run_in(span, suppressed, fn, *a, **k)

    return carried
