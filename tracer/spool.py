"""The disk spool; it lives in :mod:`tracer.delivery.spool` (this name is kept for imports)."""

from tracer.delivery.spool import (
    DEFAULT_MAX_BYTES,
    Spool,
    SpoolBusy,
    SpoolCorrupt,
    SpoolError,
    Stored,
    default_path,
    quarantine,
)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "Spool",
    "SpoolBusy",
    "SpoolCorrupt",
    "SpoolError",
    "Stored",
    "default_path",
    "quarantine",
]
