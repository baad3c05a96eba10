"""Moved to :mod:`tests.support.aio`; these names keep working."""

from tests.support.aio import AioServer, Handler, echo

__all__ = ["AioServer", "Handler", "echo"]
