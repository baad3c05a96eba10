"""A span survives Span.freeze() and record() intact: the queued tuple and the record dict."""

from __future__ import annotations

import importlib
from typing import Any

import reporters
import tracer
from tracer.span import CLIENT, LocalTrace, Span, record

# The module itself: the name tracer.span is tracer's span() function.
span_module = importlib.import_module("tracer.span")

# The index constants in the order freeze() lays the fields out, with the span's attribute each
# one holds (duration_us is None until the span finished; sampled and must_collect are the local
# trace's).
INDICES = {
    "KIND": "kind",
    "NAME": "name",
    "TRACE_ID": "trace_id",
    "REQUEST_ID": "request_id",
    "SPAN_ID": "span_id",
    "PARENT_ID": "parent_id",
    "START_US": "start_us",
    "DURATION_US": "duration_us",
    "METHOD": "method",
    "URL": "url",
    "PATH": "path",
    "STATUS_CODE": "status_code",
    "ERROR": "error",
    "ANNOTATIONS": "annotations",
    "TAGS": "tags",
    "SAMPLED": "sampled",
    "MUST_COLLECT": "must_collect",
    "TRACESTATE": "tracestate",
    "ROUTE": "route",
    "DB": "db",
}


def full_span() -> Span:
    """A finished client span with every field set, each to a value no other field has."""
    local = LocalTrace(sampled=False, must_collect=True)
    span = Span(CLIENT, "GET api:80/items", "a" * 32, "req-1", "b" * 16, local, False, "c" * 16)
    span.method = "GET"
    span.url = "http://api:80/items?q=REDACTED"
    span.path = "/items"
    span.status_code = 503
    span.error = {"type": "network-error", "message": "ConnectionError: refused", "stack": None}
    span.set_tag("retry", 2)
    span.annotate({"step": "sent"})
    span.tracestate = "vendor=opaque"
    span.route = "/items/{id}"
    span.finish()
    # Distinct from every other number in the span, so a swapped index cannot go unnoticed.
    span.start_us, span.duration_us = 1_714_564_800_000_001, 1234
    return span


def held(span: Span, attribute: str) -> Any:
    return getattr(span.local if attribute in ("sampled", "must_collect") else span, attribute)


def test_every_index_names_the_field_freeze_puts_there() -> None:
    span = full_span()
    frozen = span.freeze()
    assert sorted(getattr(span_module, name) for name in INDICES) == list(range(len(frozen)))
    for name, attribute in INDICES.items():
        assert frozen[getattr(span_module, name)] == held(span, attribute), name


def test_the_record_holds_exactly_what_the_span_held() -> None:
    span = full_span()
    out = record(span.freeze(), "checkout", "web-1", 4242)
    assert out == {
        "trace_id": span.trace_id,
        "request_id": span.request_id,
        "span_id": span.span_id,
        "parent_id": span.parent_id,
        "kind": span.kind,
        "name": span.name,
        "service": "checkout",
        "host": "web-1",
        "pid": 4242,
        "start_us": span.start_us,
        "duration_us": span.duration_us,
        "events": [
            {"type": "cs", "time_us": span.start_us},
            {"type": "cr", "time_us": span.start_us + span.duration_us},
        ],
        "http": {
            "method": span.method,
            "url": span.url,
            "path": span.path,
            "status_code": span.status_code,
            "route": span.route,
        },
        "error": span.error,
        "annotations": span.annotations,
        "tags": span.tags,
        "sampled": False,
        "must_collect": True,
        "tracestate": "vendor=opaque",
    }


def test_a_span_reaches_the_reporter_as_it_was() -> None:
    """Through the running pipeline: queued frozen, built into its record on tracer's thread."""
    memory = reporters.create("memory")
    tracer.install(app_name="frozen", reporter=memory, flush_interval=0.02, sample_rate=1)
    with tracer.span("work", color="blue") as span:
        assert span is not None
        tracer.report({"n": 1})
    assert tracer.flush(10)
    (out,) = memory.spans
    assert out["span_id"] == span.span_id and out["trace_id"] == span.trace_id
    assert out["request_id"] == span.request_id and out["parent_id"] is None
    assert (out["kind"], out["name"]) == ("internal", "work")
    assert (out["start_us"], out["duration_us"]) == (span.start_us, span.duration_us)
    assert out["tags"] == span.tags == {"color": "blue"}
    assert out["annotations"] == span.annotations
    assert (out["sampled"], out["must_collect"], out["error"]) == (True, False, None)


def test_finished_spans_go_to_their_chain_and_nowhere_without_one() -> None:
    seen: list[Span] = []
    chain = span_module.Chain()
    chain.on_end = seen.append
    span = Span(CLIENT, "c", "a" * 32, "r", None, LocalTrace(True, False, chain), True)
    span.finish()
    span.finish()  # a second finish hands nothing on
    assert seen == [span]
    # A span of no runtime (made here, in tests and benchmarks) goes nowhere.
    Span(CLIENT, "c", "a" * 32, "r", None, LocalTrace(True), True).finish()
    assert seen == [span]
    # install() gives each span its runtime's chain; uninstall() points it at nothing.
    tracer.install(app_name="chain", reporter=reporters.create("memory"))
    runtime = tracer.installer.runtime
    assert runtime is not None
    with tracer.span("s") as s:
        assert s is not None and s.local.chain is runtime.chain
    assert runtime.chain.on_end is not span_module.NO_CHAIN.on_end
    tracer.uninstall()
    assert runtime.chain.on_start is None and runtime.processors == ()


def test_a_wall_clock_set_back_gives_no_negative_duration() -> None:
    span = Span(CLIENT, "GET api:80/", "a" * 32, "r", None, LocalTrace(True), True)
    span.start_us += 3_000_000  # as if the clock went back 3 s while the span ran
    span.finish()
    assert span.duration_us == 0


def _slots(obj: object) -> dict[str, Any]:
    """Every slot of ``obj`` that is set, with its value (an unset slot is left out)."""
    names = [n for cls in type(obj).__mro__ for n in getattr(cls, "__slots__", ())]
    return {n: getattr(obj, n) for n in names if hasattr(obj, n)}


def test_new_root_sets_every_slot_as_the_two_classes_do() -> None:
    chain = span_module.Chain()
    made = span_module.new_root(
        "server", "GET /x", "a" * 32, "r-1", "b" * 16, "c" * 16, False, chain
    )
    local = LocalTrace(False, False, chain)
    called = Span("server", "GET /x", "a" * 32, "r-1", "b" * 16, local, True, "c" * 16)
    local.root = called
    got, want = _slots(made), _slots(called)
    assert set(got) == set(Span.__slots__)
    got_local, want_local = _slots(got.pop("local")), _slots(want.pop("local"))
    assert got_local.pop("root") is made and want_local.pop("root") is called
    assert got_local == want_local
    assert abs(got.pop("start_us") - want.pop("start_us")) < 10_000_000
    assert got == want
