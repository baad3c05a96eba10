"""HeapDiff: object counts and sizes by type between two moments, in memwatch's shape."""

from __future__ import annotations

from typing import Any


class HeapDiff:
    """``hd = HeapDiff(); ...; diff = hd.end()``."""

    def end(self) -> dict[str, Any]:
        raise NotImplementedError
