"""The current span lives in one ContextVar.

Every change is made with ``set()`` and undone with the token it returned, so a keep-alive
connection, a task or a thread can never see a span that is not its own. A second ContextVar
marks code that must not be traced: the pipeline sets it around ``reporter.send()`` so a
reporter's own HTTP or socket I/O never produces spans, also in threads it starts.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tracer.span import Span

current: ContextVar[Span | None] = ContextVar("tracer.current_span", default=None)
suppress: ContextVar[bool] = ContextVar("tracer.suppressed", default=False)


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
