"""N+1 queries: a request that runs the same statement over and over, once per row of another.

:class:`NPlusOne` is a span processor (docs/design.md, "Span processors"). It counts each
finished database call (a span with ``Span.db``) in its local trace
(``LocalTrace.statements``), by the statement's grouping key: the normalized statement, so
``SELECT * FROM t WHERE id = 1`` and ``... id = 2`` are one statement, and a redis command with
the same number of arguments is one too. When the local root (the server span) ends, it looks at
the counts once: if the most repeated statement ran more than ``threshold`` times, the root gets
the tag ``n_plus_one``::

    {"statement": "SELECT * FROM users WHERE id = ?", "count": 11, "system": "sqlite"}

``statement`` is ``db.query.text``, or the span name (``SELECT users``) when ``record_queries``
is off, so no statement text is recorded then either.

It joins its runtime's processors only when the first database call starts
(``Runtime.database_processors``), so a service that makes none pays nothing for it. From then
on, on the request path: one attribute read for a span that is neither a database call nor a
local root; for a database call, a dict lookup and an increment (a small list made on a statement's
first call); for a root, nothing more unless it held database calls. At most
:data:`MAX_STATEMENTS` distinct statements are counted per trace, so a request running thousands
of different statements keeps a bounded dict.

The counts belong to the local trace: calls made in other threads or tasks of the same request
are counted with it, and calls that end after their root ended are not checked.
"""

from __future__ import annotations

from typing import Any

from tracer.span import Span, SpanProcessor

#: The tag a local root gets when one of its statements ran more than the threshold.
TAG = "n_plus_one"
#: Distinct statements counted per local trace; further new ones are not counted.
MAX_STATEMENTS = 256


class NPlusOne(SpanProcessor):
    """Tags a local root whose trace ran one statement more than ``threshold`` times."""

    __slots__ = ("threshold",)

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold

    def on_end(self, span: Span) -> None:
        db = span.db
        if db is not None:
            counts = span.local.statements
            if counts is None:
                counts = span.local.statements = {}
            statement = db[1]
            seen = counts.get(statement[4])
            if seen is not None:
                seen[0] += 1
            elif len(counts) < MAX_STATEMENTS:
                counts[statement[4]] = [1, db]
        elif span.is_local_root:
            counts = span.local.statements
            if counts:
                self._check(span, counts)

    def _check(self, span: Span, counts: dict[str, list[Any]]) -> None:
        count, db = max(counts.values(), key=_first)
        if count > self.threshold:
            statement = db[1]
            text = statement[0]
            span.set_tag(
                TAG,
                {
                    "statement": statement[3] if text is None else text,
                    "count": count,
                    "system": db[0][0],
                },
            )


def _first(entry: list[Any]) -> Any:
    return entry[0]
