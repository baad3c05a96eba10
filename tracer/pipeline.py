"""The span pipeline; it lives in :mod:`tracer.delivery` (this name is kept for imports)."""

from tracer.delivery.pipeline import Pipeline

__all__ = ["Pipeline"]
