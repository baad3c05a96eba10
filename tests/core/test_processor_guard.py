"""The processor chain's guard: skipped only for a processor that declares it cannot raise, and
only while it is the one processor with that hook; kept for every other."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

import reporters
import tracer
from tracer import installer, safety
from tracer.profiler.sampler import SpanMap
from tracer.runtime import Runtime, chained
from tracer.span import Span, SpanProcessor


class Bare(SpanProcessor):
    """Declares that it cannot raise."""

    can_raise = False

    def __init__(self) -> None:
        self.started: list[Span] = []

    def on_start(self, span: Span) -> None:
        self.started.append(span)


class StartRaises(SpanProcessor):
    def on_start(self, span: Span) -> None:
        raise RuntimeError("on_start failed")


def _install(tmp_path: Path) -> Runtime:
    tracer.install(
        app_name="guard",
        reporter=reporters.create("memory"),
        metrics=False,
        memory_watch=False,
        heap_snapshot_signal=None,
        profile_dir=str(tmp_path / "profiles"),
    )
    rt = installer.runtime
    assert rt is not None
    return rt


def _is_method_of(hook: Any, processor: object, name: str) -> bool:
    return getattr(hook, "__self__", None) is processor and getattr(hook, "__func__", None) is (
        getattr(type(processor), name)
    )


def test_the_only_processor_that_cannot_raise_is_called_straight(tmp_path: Path) -> None:
    rt = _install(tmp_path)
    bare = Bare()
    rt.add_processor(bare)
    # The chain's entry point is the processor's own method: no guard in between.
    assert _is_method_of(rt.chain.on_start, bare, "on_start")
    with tracer.span("one") as span:
        pass
    assert bare.started == [span]

    # A second processor with an on_start: both are guarded again, and one that raises is
    # counted and logged while the other still runs.
    rt.add_processor(StartRaises())
    assert not _is_method_of(rt.chain.on_start, bare, "on_start")
    counted = safety._counts["processor StartRaises.on_start"]
    with tracer.span("two") as second:
        pass
    assert bare.started == [span, second]
    assert [type(e) for e in safety.take_strict_errors()] == [RuntimeError]
    assert safety._counts["processor StartRaises.on_start"] == counted + 1


def test_the_only_processor_that_may_raise_is_still_guarded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rt = _install(tmp_path)
    raises = StartRaises()
    rt.add_processor(raises)
    assert not _is_method_of(rt.chain.on_start, raises, "on_start")
    counted = safety._counts["processor StartRaises.on_start"]
    safety._counts.pop("processor StartRaises.on_start", None)  # logged again once from here
    with caplog.at_level(logging.WARNING, logger="tracer"):
        for _ in range(2):
            with tracer.span("s"):
                pass
    assert len(safety.take_strict_errors()) == 2
    assert safety._counts["processor StartRaises.on_start"] == 2
    safety._counts["processor StartRaises.on_start"] += counted
    warnings = [r for r in caplog.records if "processor StartRaises.on_start" in r.getMessage()]
    assert len(warnings) == 1


def test_a_processor_without_the_declaration_is_guarded() -> None:
    class Plain:
        def on_start(self, span: Span) -> None:
            raise RuntimeError("plain")

    plain = Plain()
    hook = chained((plain,), "on_start")
    assert hook is not None and not _is_method_of(hook, plain, "on_start")
    hook(None)  # type: ignore[arg-type]
    assert [type(e) for e in safety.take_strict_errors()] == [RuntimeError]


def test_a_running_profile_puts_the_span_map_straight_in_the_chain(tmp_path: Path) -> None:
    rt = _install(tmp_path)
    assert rt.chain.on_start is None
    with tracer.profile(10, write=False, report=False):
        (span_map,) = [p for p in rt.processors if isinstance(p, SpanMap)]
        assert rt.chain.on_start is span_map.on_start  # its own hook, unguarded
        with tracer.span("profiled") as span:
            pass
        assert any(own.get("span") is span for own in span_map.threads.values())
    assert rt.chain.on_start is None
