"""tracer: Dapper-style distributed tracing for Python HTTP services.

``import tracer; tracer.install()`` patches http.server, requests and aiohttp (whichever are
present or imported later), records SR/SS and CS/CR events, propagates trace context in headers
and hands finished spans to a reporter through a bounded, non-blocking pipeline.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from tracer import installer
from tracer.config import ConfigError
from tracer.context import current
from tracer.outgoing import client_call
from tracer.runtime import Runtime, idle_stats
from tracer.span import INTERNAL, Span

if TYPE_CHECKING:
    from tracer.profiler import Profile

__version__ = "0.1.0"
__all__ = [
    "ConfigError",
    "Span",
    "asgi",
    "client_call",
    "current_span",
    "flush",
    "get_transaction_id",
    "install",
    "profile",
    "report",
    "span",
    "stats",
    "uninstall",
    "wsgi",
]

F = TypeVar("F", bound=Callable[..., Any])


def install(config_path: str | os.PathLike[str] | None = None, **overrides: Any) -> None:
    """Load the configuration, start the pipeline and patch the supported libraries.

    ``config_path`` names a ``trace.config.py``; without it the file named by
    ``TRACE_CONFIG_PATH`` is read, else ``trace.config.py`` in the working directory, else the
    one next to the entry point (the script or module running as ``__main__``), when present.
    Keyword arguments override any option. Calling
    ``install()`` again while installed changes nothing. Raises :class:`ConfigError` naming the
    file or variable and the key when the configuration is wrong.
    """
    installer.install(config_path, **overrides)


def uninstall() -> None:
    """Restore every patched object, flush what is queued and stop the pipeline."""
    installer.uninstall()


def wsgi(app: Callable[..., Any]) -> Callable[..., Any]:
    """``app`` (any WSGI application) with a server span for each of its requests.

    For an application whose framework tracer does not instrument: ``application =
    tracer.wsgi(application)``. It may be wrapped before or after ``install()``: while tracer is
    not installed each request is passed straight to ``app``. A request already traced by an
    outer layer (an instrumented framework, a server built on http.server) gets no second span.
    See docs/frameworks.md.
    """
    from tracer.instrumentation import wsgi as core

    return core.wrap(app, _installed_runtime)


def asgi(app: Callable[..., Any]) -> Callable[..., Any]:
    """``app`` (any ASGI application) with a server span for each ``http`` and ``websocket``
    scope (``lifespan`` passes through untraced).

    For an application whose framework tracer does not instrument: ``app = tracer.asgi(app)``.
    It may be wrapped before or after ``install()``: while tracer is not installed each scope is
    passed straight to ``app``. A request already traced by an outer layer (uvicorn's, or an
    outer ``tracer.asgi()``) gets no second span, and a traced framework inside (Starlette,
    FastAPI) only names the route. See docs/frameworks.md.
    """
    from tracer.instrumentation import asgi as core

    return core.wrap(app, _installed_runtime)


def _installed_runtime() -> Runtime | None:
    return installer.runtime


def current_span() -> Span | None:
    """The span of the code running now, or None."""
    return current.get()


def report(data: dict[str, Any]) -> None:
    """Attach ``data`` (a dict) as a user annotation to the current span.

    Raises TypeError for anything but a dict; outside a traced request it does nothing.
    """
    if not isinstance(data, dict):
        raise TypeError(f"tracer.report() takes a dict, got {type(data).__name__}")
    span = current.get()
    if span is not None:
        span.annotate(dict(data))


def get_transaction_id() -> str | None:
    """The current request id (the propagated ``request-id``), or None outside a request."""
    span = current.get()
    return None if span is None else span.request_id


def flush(timeout: float | None = 5.0) -> bool:
    """Wait until every span finished before the call is delivered (or dropped for a reason no
    retry can fix, counted in :func:`stats`).

    While the reporter fails, its batches are retried on their backoff schedule until
    ``timeout`` seconds have passed; then they go to the spool and the result is False. None
    means no limit. Raises TypeError for a timeout that is not a number or None.
    """
    rt = installer.runtime
    if rt is None:
        from tracer.delivery.pipeline import check_timeout

        check_timeout(timeout, "flush")
        return True
    return rt.pipeline.flush(timeout)


def profile(
    seconds: float = 30.0,
    *,
    rate: float | None = None,
    write: bool = True,
    report: bool = True,
    folder: str | os.PathLike[str] | None = None,
) -> Profile:
    """Start a CPU profile of every thread for ``seconds``; the :class:`tracer.profiler.Profile`
    handle has ``.stop()``, ``.wait()`` and is a context manager.

    Each sample carries the trace id, span id, local root span id and route of the request its
    thread (or event-loop task) was serving. At the end the profile is written to
    ``profile_dir`` as speedscope JSON, collapsed stacks and pprof (``write``), and sent to the
    reporters as a ``profile`` batch (``report``). One profile runs at a time
    (:class:`tracer.profiler.ProfileBusy`); ``seconds`` is capped by ``profile_max_seconds``.
    See docs/profiler.md.
    """
    from tracer import profiler

    return profiler.profile(seconds, rate=rate, write=write, report=report, folder=folder)


def stats() -> dict[str, Any]:
    """Span counts: created, delivered, spooled, dropped (and by reason), pending.

    ``created == delivered + dropped + spooled + pending`` whenever tracer is quiet. ``spooled``
    counts this process's spans in the disk spool now; ``replayed`` and ``replay_dropped`` count
    spans of earlier processes delivered from, or lost from, the spool.
    """
    rt = installer.runtime
    if rt is None:
        return idle_stats()
    return rt.stats()


class span:
    """An internal span around a block or a function (sync or async).

    ``with tracer.span("load", table="users") as s: ...`` or ``@tracer.span("load")``. The span is
    a child of the current span (or a new root), is current inside the block, records an
    exception that escapes it (the exception propagates unchanged) and finishes at the end.
    Without tracer installed it does nothing and yields None.
    """

    __slots__ = ("_entered", "name", "tags")

    def __init__(self, name: str, /, **tags: Any) -> None:
        self.name = name
        self.tags = tags
        # One (span, token) per active ``with``: the same object may be entered again inside
        # itself (or from several tasks), and each exit must undo its own enter.
        self._entered: list[tuple[Span, Any]] = []

    def __enter__(self) -> Span | None:
        rt = installer.runtime
        if rt is None:
            return None
        s = rt.child_span(INTERNAL, self.name)
        if self.tags:
            s.tags = dict(self.tags)
        self._entered.append((s, current.set(s)))
        return s

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._entered:
            return
        s, token = self._entered.pop()
        try:
            current.reset(token)
        except ValueError:
            # Exited in another context than it was entered in (a generator moved between
            # tasks): the span still finishes, and this context's current span is left alone.
            pass
        if exc is not None:
            s.record_exception(exc)
        s.finish()

    def __call__(self, func: F) -> F:
        name, tags = self.name, self.tags
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with span(name, **tags):
                    return await func(*args, **kwargs)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with span(name, **tags):
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]
