"""The current span lives in one ContextVar.

Every change is made with ``set()`` and undone with the token it returned, so a keep-alive
connection, a task or a thread can never see a span that is not its own. A second ContextVar
marks code that must not be traced: the pipeline sets it around ``reporter.send()`` so a
reporter's own HTTP or socket I/O never produces spans, also in threads it starts.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tracer.span import Span

current: ContextVar[Span | None] = ContextVar("tracer.current_span", default=None)
suppress: ContextVar[bool] = ContextVar("tracer.suppressed", default=False)

#: While an instrumented client call runs (requests, urllib3, httpx, ``client_call``): the span
#: that was current when it began, or :data:`NO_SPAN`. A library it runs on (requests on urllib3
#: on http.client) sees the call already has its client span and adds none; a call made where
#: another span is current (a server span of this process) is a call of its own.
calling: ContextVar[object] = ContextVar("tracer.calling", default=None)

#: What :data:`calling` holds for a call that began with no current span.
NO_SPAN = object()


def in_call() -> bool:
    """Whether an instrumented client call of the current span is already under way here."""
    outer = calling.get()
    if outer is None:
        return False
    span = current.get()
    return outer is (NO_SPAN if span is None else span)


def call_began() -> Token[object]:
    """Mark a client call as under way (see :data:`calling`); returns the token to reset."""
    span = current.get()
    return calling.set(NO_SPAN if span is None else span)


def current_span() -> Span | None:
    """The span of the code running now, or None."""
    return current.get()


@contextmanager
def suppressed() -> Iterator[None]:
    """Nothing inside the block is traced (tracer's own I/O)."""
    token = suppress.set(True)
    try:
        yield
    finally:
        suppress.reset(token)
