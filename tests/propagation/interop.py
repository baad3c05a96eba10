"""Helpers for the interop tests: an OpenTelemetry SDK set up for one test, an aiohttp server."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import propagate
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased
from opentelemetry.trace import SpanKind

from tests.aioserver import AioServer
from tracer.instrumentation.base import Instrumentation

__all__ = ["AioServer", "Otel", "global_propagator", "hex_span", "hex_trace"]


class Otel:
    """A TracerProvider exporting to memory, parent-based (OpenTelemetry's default) or never
    sampling."""

    def __init__(self, sampled: bool = True) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider(sampler=ParentBased(ALWAYS_ON) if sampled else ALWAYS_OFF)
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def spans(self, kind: SpanKind) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.kind == kind]


@contextmanager
def global_propagator(propagator: TextMapPropagator) -> Iterator[None]:
    old = propagate.get_global_textmap()
    propagate.set_global_textmap(propagator)
    try:
        yield
    finally:
        propagate.set_global_textmap(old)


def hex_trace(value: int) -> str:
    return f"{value:032x}"


def hex_span(value: int) -> str:
    return f"{value:016x}"


def instrumentation_name(module: str) -> str | None:
    """The name of tracer's instrumentation in ``module``, or None when it does not exist yet."""
    if importlib.util.find_spec(module) is None:
        return None
    mod = importlib.import_module(module)
    for obj in vars(mod).values():
        if (
            isinstance(obj, type)
            and issubclass(obj, Instrumentation)
            and obj is not Instrumentation
            and obj.__module__ == mod.__name__
        ):
            return str(obj.name)
    return None
