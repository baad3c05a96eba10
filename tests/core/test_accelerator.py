"""The compiled accelerator (``tracer._speedups``) against its pure-Python twins.

Every function it has gives what its twin gives (the span record on generated spans, key order
included; ids of the same shape); it is built wherever a C compiler is there (so that the suite
runs on the build users get); ``TRACE_PURE_PYTHON=1`` turns it off for a whole process. The
suite runs once on each build (``.ci/run``): these tests are what differs between the two runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import threading
import types
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.children import assert_child_prints_ok, subprocess_env, wait_child
from tracer import _accel, ids
from tracer.span import MAX_NAME, Chain, LocalTrace, Span, fast_record, record, record_template

compiled = pytest.mark.skipif(
    _accel.speedups is None, reason="the accelerator is not built or TRACE_PURE_PYTHON is set"
)


def _compiler() -> bool:
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    return shutil.which(cc) is not None and headers.exists()


@pytest.mark.skipif(
    bool(os.environ.get("TRACE_PURE_PYTHON")), reason="this run is the pure-Python build's"
)
@pytest.mark.skipif(bool(sysconfig.get_config_var("Py_GIL_DISABLED")), reason="free-threaded")
def test_the_accelerator_is_built_where_a_compiler_is() -> None:
    if not _compiler():
        pytest.skip("no C compiler or no Python headers here: tracer installs pure-Python")
    assert _accel.build() == "compiled"
    assert ids.new_ids is _accel.speedups.new_ids  # type: ignore[union-attr]
    assert fast_record is not None


def test_trace_pure_python_makes_the_process_pure() -> None:
    code = (
        "from tracer import _accel, ids\n"
        "from tracer.span import fast_record\n"
        "print(_accel.build(), ids.new_ids is ids.py_new_ids, fast_record is None)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=subprocess_env(TRACE_PURE_PYTHON="1"),
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["pure", "True", "True"]


# -- ids ------------------------------------------------------------------------------------------


def _shape(trace_id: str, span_id: str) -> None:
    assert len(trace_id) == 32 and len(span_id) == 16
    assert set(trace_id + span_id) <= set("0123456789abcdef")
    # The lowest bit of each is set, as the pure pool's mask sets it: never all zeros.
    assert int(trace_id[-1], 16) & 1 and int(span_id[-1], 16) & 1


@pytest.mark.parametrize("build", ["compiled", "pure"])
def test_ids_have_the_same_shape_in_both_builds(build: str) -> None:
    if build == "compiled" and _accel.speedups is None:
        pytest.skip("the accelerator is not built")
    new_ids = ids.new_ids if build == "compiled" else ids.py_new_ids
    new_trace_id = ids.new_trace_id if build == "compiled" else ids.py_new_trace_id
    new_span_id = ids.new_span_id if build == "compiled" else ids.py_new_span_id
    seen: set[str] = set()
    for _ in range(2_000):  # several refills of the 256-pair buffer
        trace_id, span_id = new_ids()
        _shape(trace_id, span_id)
        _shape(new_trace_id(), new_span_id())
        seen.update((trace_id, span_id))
    assert len(seen) == 4_000


@compiled
def test_threads_never_get_the_same_ids() -> None:
    got: list[list[tuple[str, str]]] = [[] for _ in range(4)]

    def take(out: list[tuple[str, str]]) -> None:
        for _ in range(3_000):
            out.append(ids.new_ids())

    threads = [threading.Thread(target=take, args=(out,)) for out in got]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    every = [pair for out in got for pair in out]
    assert len(every) == 12_000 and len(set(every)) == 12_000


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_a_forked_child_never_hands_out_its_parents_next_ids() -> None:
    ids.new_ids()  # the buffer (or pool) is now part-used: its next pairs are known to both
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read)
            os.write(write, ",".join(ids.new_ids()[0] for _ in range(5)).encode())
        finally:
            os._exit(0)
    os.close(write)
    parents = {ids.new_ids()[0] for _ in range(5)}
    assert wait_child(pid) == 0
    with os.fdopen(read) as pipe:
        childs = set(pipe.read().split(","))
    assert len(childs) == 5
    assert not parents & childs


# -- the span record -----------------------------------------------------------------------------

texts = st.text(max_size=20)
maybe_texts = st.none() | texts
names = st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=30) | st.text(max_size=30)
numbers = st.integers(min_value=0, max_value=2**53)


@st.composite
def frozen_spans(draw: Any) -> tuple[Any, ...]:
    """A frozen span as Span.freeze() lays it out, common and uncommon fields alike."""
    done = draw(st.booleans())
    return (
        draw(st.sampled_from(["server", "client", "internal", "websocket", "other"])),
        draw(names) if draw(st.integers(0, 9)) else "x" * (MAX_NAME + draw(st.integers(0, 1))),
        draw(texts),
        draw(texts),
        draw(texts),
        draw(maybe_texts),
        draw(numbers),
        draw(st.none() | numbers) if not done else draw(numbers),
        draw(st.none() | st.sampled_from(["GET", "POST"])),
        draw(maybe_texts),
        draw(maybe_texts),
        draw(st.none() | st.integers(100, 599)),
        draw(st.none() | st.just({"type": "E", "message": "m", "stack": None})),
        draw(st.none() | st.just([]) | st.just([{"time_us": 1, "data": {"a": 1}}])),
        draw(st.none() | st.just({}) | st.just({"k": "v"})),
        draw(st.booleans()),
        draw(st.booleans()),
        draw(maybe_texts),
        draw(maybe_texts),
        draw(st.none() | st.just((("sqlite", "main", None, None), ("SELECT ?", "SELECT", "t")))),
    )


@compiled
@settings(max_examples=400, deadline=None)
@given(frozen_spans())
def test_the_compiled_record_is_the_python_record(frozen: tuple[Any, ...]) -> None:
    template = record_template("checkout", "web-1", 4242)
    fast = fast_record
    assert fast is not None
    made = fast(frozen, template)
    expected = record(frozen, "checkout", "web-1", 4242, template)
    name = frozen[1]
    common = (
        name.isascii()
        and len(name) <= MAX_NAME
        and frozen[12] is None  # error
        and not frozen[13]  # annotations
        and not frozen[14]  # tags
        and frozen[19] is None  # db
    )
    if not common:
        assert made is None
        return
    assert made == expected
    assert list(made) == list(expected)
    assert type(made["duration_us"]) is int
    # The template is copied, never changed.
    assert template == record_template("checkout", "web-1", 4242)


@compiled
def test_the_compiled_record_refuses_what_is_not_a_frozen_span() -> None:
    fast = fast_record
    assert fast is not None
    template = record_template("s", "h", 1)
    assert fast((1, 2, 3), template) is None
    assert fast([None] * 20, template) is None
    frozen = Span("server", "GET /", "t" * 32, "t" * 32, None, LocalTrace(True), True).freeze()
    assert fast(frozen, dict(template)) is not None
    with pytest.raises(TypeError):
        fast(frozen)  # type: ignore[call-arg]


# -- request headers ------------------------------------------------------------------------------

header_names = st.sampled_from(
    ["Host", "host", "X-Span-Id", "TraceParent", "İx", "ß", "a"]
) | st.text(max_size=8)
header_values = st.text(max_size=8) | st.integers()


@compiled
@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(header_names, header_values), max_size=12))
def test_the_compiled_header_map_is_the_python_one(pairs: list[tuple[str, Any]]) -> None:
    from tracer.propagation import header_map, py_header_map

    assert header_map is not py_header_map
    expected = py_header_map(pairs)
    for items in (pairs, [list(p) for p in pairs], iter(pairs), (iter(p) for p in pairs)):
        made = header_map(items)
        assert made == expected
        assert list(made) == list(expected)


@compiled
def test_the_compiled_header_map_fails_as_the_python_one() -> None:
    from multidict import CIMultiDict

    from tracer.propagation import header_map, py_header_map

    raw = [("Host", "a"), ("HOST", "b"), ("Accept", "*/*")]
    assert header_map(CIMultiDict(raw).items()) == py_header_map(CIMultiDict(raw).items())
    assert header_map(raw) == {"host": "a,b", "accept": "*/*"}
    for bad in ([("a", "b", "c")], [("a",)], [7], None):
        with pytest.raises((ValueError, TypeError)) as c_error:
            header_map(bad)  # type: ignore[arg-type]
        with pytest.raises((ValueError, TypeError)) as py_error:
            py_header_map(bad)  # type: ignore[arg-type]
        assert c_error.type is py_error.type


# -- the end of a span ---------------------------------------------------------------------------


class _Nowhere:
    def send(self, data: Any, callback: Any) -> None:
        callback(None)


_DB_CALL = (("sqlite", "main", None, None), ("SELECT ?", "SELECT", "t"))


@st.composite
def ending_spans(draw: Any) -> dict[str, Any]:
    """What a finished span may hold when its runtime's end hook gets it."""
    return {
        "kind": draw(st.sampled_from(["server", "server", "client", "internal", "websocket"])),
        "method": draw(st.sampled_from(["GET", "POST"])),
        "route": draw(st.none() | st.sampled_from(["/a", "/b/{id}"])),
        "url": draw(st.sampled_from(["http://h/a", "https://h/a", "http://h:81/b"]) | st.none()),
        "status": draw(st.none() | st.sampled_from([200, 204, 404, 499, 500, 503])),
        "error": draw(st.none() | st.just({"type": "E", "message": "m", "stack": None})),
        "duration": draw(
            st.sampled_from([0, 1, 4_999, 5_000, 5_001, 2_500_000, 10**7, 10**12, 2**70])
            | st.integers(0, 20_000_000)
        ),
        "sampled": draw(st.booleans()),
        "must_collect": draw(st.booleans()),
        "root": draw(st.booleans()),
        "same_trace": draw(st.booleans()),
        "db": draw(st.none() | st.just(_DB_CALL)),
        "done": draw(st.integers(0, 9)) > 0,
    }


def _world(metrics: bool, limits: dict[str, Any], accelerated: bool) -> Any:
    from tracer.delivery import Pipeline
    from tracer.metrics.recording import Recorder
    from tracer.runtime import accelerated_end, chained
    from tracer.sampling import Collector

    pipeline = Pipeline(
        _Nowhere(), "svc", "host", max_queue=limits["max_queue"], batch_size=limits["batch_size"]
    )
    collector = Collector(
        pipeline.submit,
        error_status=limits["error_status"],
        slow_threshold_ms=limits["slow_ms"],
    )
    recorder = Recorder((0.005, 0.01, 0.1, 1.0, 2.5))
    processors: tuple[Any, ...] = (recorder, collector) if metrics else (collector,)
    hook = accelerated_end(processors, collector, pipeline) if accelerated else None
    if accelerated:
        assert hook is not None and type(hook).__name__ == "builtin_function_or_method"
    else:
        hook = chained(processors, "on_end")
    return pipeline, collector, recorder, hook


def _run(specs: list[dict[str, Any]], metrics: bool, limits: dict[str, Any], fast: bool) -> Any:
    from tracer import safety

    pipeline, collector, recorder, hook = _world(metrics, limits, fast)
    before = dict(safety._counts)
    local = None
    spans = []
    # Twice over: the second time every series is one met before, which the accelerator counts
    # itself.
    for i, spec in enumerate(specs + specs):
        if local is None or not spec["same_trace"]:
            local = LocalTrace(spec["sampled"], spec["must_collect"])
        span = Span(spec["kind"], f"span {i}", f"t{i}", f"r{i}", None, local, spec["root"], f"s{i}")
        span.start_us = 1_000_000 + i
        span.method = spec["method"]
        span.route = spec["route"]
        span.url = spec["url"]
        span.status_code = spec["status"]
        span.error = spec["error"]
        span.duration_us = spec["duration"]
        span.db = spec["db"] if spec["kind"] == "client" else None
        span._done = spec["done"]
        hook(span)
        spans.append(span)
    errors = [type(e).__name__ for e in safety.take_strict_errors()]
    counts = {k: v - before.get(k, 0) for k, v in safety._counts.items() if v != before.get(k, 0)}
    return {
        "queue": list(pipeline._queue),
        "woken": pipeline._wake.is_set(),
        "ledger": pipeline.stats(),
        "collector": collector.stats(),
        "server": recorder.server,
        "client": recorder.client,
        "db": recorder.db,
        "locals": [
            (s.local.must_collect, s.local.closed, len(s.local.held or ()), s.local.sampled)
            for s in spans
        ],
        "errors": errors,
        "counts": counts,
    }


@compiled
@settings(max_examples=300, deadline=None)
@given(
    st.lists(ending_spans(), min_size=1, max_size=14),
    st.booleans(),
    st.fixed_dictionaries(
        {
            "max_queue": st.sampled_from([2, 5, 100_000]),
            "batch_size": st.sampled_from([1, 3, 1000]),
            "error_status": st.sampled_from([400, 500]),
            "slow_ms": st.none() | st.sampled_from([0.001, 3.0, 2_000.0]),
        }
    ),
)
def test_the_compiled_end_hook_does_what_the_python_chain_does(
    specs: list[dict[str, Any]], metrics: bool, limits: dict[str, Any]
) -> None:
    python = _run(specs, metrics, limits, fast=False)
    compiled_ = _run(specs, metrics, limits, fast=True)
    assert compiled_ == python
    # The same tuples Span.freeze() makes, in the same order.
    assert [type(f) for f in compiled_["queue"]] == [tuple] * len(python["queue"])


@compiled
def test_the_compiled_end_hook_records_and_queues_the_common_span_itself() -> None:
    """A server span of a known series: counted in its bucket and queued as its frozen tuple,
    by the accelerator alone (the Python hooks are not called)."""
    from tracer.delivery import Pipeline
    from tracer.metrics.recording import Recorder
    from tracer.runtime import accelerated_end
    from tracer.sampling import Collector

    pipeline = Pipeline(_Nowhere(), "svc", "host", batch_size=2)
    collector = Collector(pipeline.submit)
    recorder = Recorder((0.005, 0.01))
    calls: list[str] = []
    python_record = recorder.record

    def record(span: Span) -> None:
        calls.append("record")
        python_record(span)

    recorder.record = record
    hook = accelerated_end((recorder, collector), collector, pipeline)
    assert hook is not None

    def span(duration: int) -> Span:
        s = Span("server", "GET /", "t", "r", None, LocalTrace(True), True, "s")
        s.method, s.route, s.url, s.status_code = "GET", "/", "http://h/", 200
        s.duration_us, s._done = duration, True
        return s

    first = span(7_000)
    hook(first)  # a new series: the Python hook makes it
    assert calls == ["record"]
    second = span(3_000)
    hook(second)
    assert calls == ["record"]  # the known series: counted in C
    (series,) = recorder.server.values()
    assert series == [1, 1, 0, 10_000]  # <= 5 ms, <= 10 ms, +Inf, the sum
    assert list(pipeline._queue) == [first.freeze(), second.freeze()]
    assert pipeline._wake.is_set()  # a batch's worth is queued: the worker is woken


@compiled
@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_a_forked_childs_spans_go_to_its_own_queue() -> None:
    """The child's pipeline makes a queue of its own at the fork: its spans go there, never
    into the copy of its parent's."""
    code = (
        "import os, tracer\n"
        "from tracer import installer\n"
        "class Nowhere:\n"
        "    def send(self, data, callback): callback(None)\n"
        "tracer.install(app_name='f', reporter=Nowhere(), sample_rate=1, batch_size=100_000,\n"
        "               flush_interval=3600)\n"
        "rt = installer.runtime\n"
        "assert type(rt.chain.on_end).__name__ == 'builtin_function_or_method'\n"
        "with tracer.span('before'):\n"
        "    pass\n"
        "parent_queue = rt.pipeline._queue\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    with tracer.span('child'):\n"
        "        pass\n"
        "    names = [f[1] for f in rt.pipeline._queue]\n"
        "    os._exit(0 if names == ['child'] and len(parent_queue) == 1 else 3)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "code = os.waitstatus_to_exitcode(status)\n"
        "print('ok' if code == 0 else f'the child exited {code}')\n"
    )
    assert_child_prints_ok(code)


# -- the start of a server span ------------------------------------------------------------------

_TARGETS = [
    "/",
    "/a/b",
    "/users/42",
    "/a?x=1",
    "/a?requestId=r-1",
    "/a#top",
    "http://h.example/x?y=1",
    "a",
    "",
    "/caf\u00e9",
    "/tab\there",
    "/\x7f",
    "/" + "a" * 2100,
]
_HEADERS = [
    ("Host", "127.0.0.1:8080"),
    ("host", "h.example"),
    ("HOST", "[::1]:81"),
    ("Host", "bad host\r\n"),
    ("traceparent", "00-" + "1" * 32 + "-" + "2" * 16 + "-01"),
    ("TraceParent", "00-" + "3" * 32 + "-" + "4" * 16 + "-00"),
    ("traceparent", "garbage"),
    ("request-id", "req-1"),
    ("X-Span-Id", "abc"),
    ("b3", "1"),
    ("x-must-collect", "1"),
    ("accept", "*/*"),
    ("user-agent", "wrk"),
]


def _span_fields(span: Span | None) -> Any:
    if span is None:
        return None
    fresh = ("trace_id", "request_id", "span_id", "start_us", "local")
    out = {name: getattr(span, name) for name in Span.__slots__ if name not in fresh}
    out["request_id is trace_id"] = span.request_id == span.trace_id
    out["ids"] = (len(span.trace_id), len(span.span_id))
    out["local"] = {n: getattr(span.local, n) for n in LocalTrace.__slots__ if n != "root"}
    out["root"] = span.local.root is span
    return out


@compiled
@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(["GET", "POST", "DELETE", "get", "BREW", ""]),
    st.sampled_from(_TARGETS),
    st.lists(st.sampled_from(_HEADERS), max_size=5),
    st.sampled_from([None, "http", "https", "ws"]),
    st.booleans(),
)
def test_the_compiled_server_span_is_the_python_one(
    method: str, target: str, pairs: list[tuple[str, str]], scheme: str | None, multidict: bool
) -> None:
    from multidict import CIMultiDict

    from tracer import installer
    from tracer.propagation import py_header_map
    from tracer.runtime import Runtime

    if installer.runtime is None:
        tracer_install()
    rt = installer.runtime
    assert rt is not None
    fast = rt.server_span
    assert type(fast).__name__ == "builtin_function_or_method"
    headers: Any = CIMultiDict(pairs) if multidict else py_header_map(pairs)
    args: tuple[Any, ...] = (method, target, headers)
    if scheme is not None:
        args += (scheme,)
    if multidict:
        args = (*args, "http") if scheme is None else args
        args += (True,)
    recorder = next(p for p in rt.processors if hasattr(p, "end_histogram"))
    # The first request from a Host makes its URL prefix (the Python method, either way).
    Runtime.server_span(rt, *args)
    started = recorder.started[0]
    expected = Runtime.server_span(rt, *args)
    made = fast(*args)
    assert _span_fields(made) == _span_fields(expected)
    # on_start ran once for each (the active-requests count).
    assert recorder.started[0] - started == (2 if made is not None else 0)


def tracer_install() -> None:
    import tracer

    tracer.install(
        app_name="fast-start",
        reporter=_Nowhere(),
        sample_rate=1,
        flush_interval=3600,
        # Every failed response is kept, however many the examples make: none is rate-limited.
        max_forced_per_second=10**9,
    )


@compiled
def test_the_compiled_server_span_makes_the_common_span_itself() -> None:
    """A request with a plain path, a standard method, no trace header and a Host met before is
    made in C; a request with a trace header or a query goes to the Python method."""
    from tracer import installer
    from tracer.redaction import MAX_PATH, METHODS
    from tracer.span import SERVER, Chain

    tracer_install()
    rt = installer.runtime
    assert rt is not None
    python_calls: list[tuple[Any, ...]] = []
    python = rt.server_span

    def method(*args: Any) -> Any:
        python_calls.append(args)
        return python(*args)

    names = rt.propagator.header_names
    assert names is not None and _accel.speedups is not None
    fast = _accel.speedups.server_start(
        method, Span, LocalTrace, Chain, SERVER, METHODS, MAX_PATH, tuple(sorted(names)),
        rt._prefixes, rt.sampler, rt.chain,
    )  # fmt: skip
    host = {"host": "api.example:8080"}
    first = fast("GET", "/orders/7", host)  # a new Host: its prefix is made by the method
    assert len(python_calls) == 1 and first is not None
    span = fast("GET", "/orders/8", host)
    assert len(python_calls) == 1  # made in C
    assert span.name == "GET /orders/8" and span.url == "http://api.example:8080/orders/8"
    assert span.kind == SERVER and span.local.root is span and span.local.sampled is True
    assert span.parent_id is None and span.request_id == span.trace_id
    assert len(span.trace_id) == 32 and len(span.span_id) == 16
    fast("GET", "/orders/8?full=1", host)
    fast("GET", "/orders/8", {**host, "traceparent": "00-" + "5" * 32 + "-" + "6" * 16 + "-01"})
    assert len(python_calls) == 3
    for s in (first, span):
        s.finish()


# -- Span.finish and the response headers ------------------------------------------------------


class _Kind(str):
    """A kind that is a str subclass (an enum's member, say): equal to "server" all the same."""


@st.composite
def finishing_spans(draw: Any) -> dict[str, Any]:
    return {
        "kind": draw(st.sampled_from(["server", "client", "internal", _Kind("server")])),
        "root": draw(st.booleans()),
        "start": draw(
            st.sampled_from([0, -5, 1_700_000_000_000_000, 4_000_000_000_000_000, 2**63 + 1])
        ),
        "sent": draw(
            st.sampled_from([0, 1_700_000_000_000_005, 4_000_000_000_000_009, 3, 2**64, -1])
        ),
        "done": draw(st.integers(0, 4)) == 0,
    }


def _finished(spec: dict[str, Any], finish: Any) -> tuple[Any, ...]:
    ended: list[Span] = []
    chain = Chain()
    chain.on_end = ended.append
    local = LocalTrace(True, False, chain)
    span = Span(spec["kind"], "s", "t", "t", None, local, spec["root"], "s1")
    if spec["root"]:
        local.root = span
    span.start_us = spec["start"]
    span.sent_us = spec["sent"]
    span._done = spec["done"]
    finish(span)
    finish(span)  # a second call changes nothing
    far = span.start_us > 2_000_000_000_000_000  # a start in the future: the duration is 0
    took_sent = span.sent_us >= span.start_us and span.kind == "server"
    return (
        span._done,
        local.root is None,
        len(ended),
        span.duration_us if (took_sent or far or spec["done"]) else span.duration_us > 0,
    )


@compiled
@settings(max_examples=200, deadline=None)
@given(finishing_spans())
def test_the_compiled_finish_is_the_python_one(spec: dict[str, Any]) -> None:
    from tracer.span import py_finish

    assert Span.finish is not py_finish
    assert _finished(spec, Span.finish) == _finished(spec, py_finish)


@compiled
def test_the_compiled_finish_is_a_method_and_takes_subclasses_to_the_python_one() -> None:
    from tracer.span import py_finish

    class Mine(Span):
        __slots__ = ("extra",)

    local = LocalTrace(True)
    mine = Mine("internal", "m", "t", "t", None, local, False, "s")
    mine.finish()
    assert mine.finished and mine.duration_us >= 0
    plain = Span("internal", "p", "t", "t", None, local, False, "s")
    bound = plain.finish
    bound()
    assert plain.finished
    assert isinstance(Span.__dict__["finish"], types.MethodDescriptorType)
    assert py_finish.__doc__ and Span.finish.__doc__


@compiled
@settings(max_examples=300, deadline=None)
@given(
    st.none() | st.sampled_from([200, 404, 499, 500, 503]),
    st.none() | st.just({"type": "E", "message": "m", "stack": None}),
    st.booleans(),
    st.none() | st.sampled_from(["a" * 16, "caf\u00e9"]),
    st.booleans(),
)
def test_the_compiled_response_headers_are_the_python_ones(
    status: int | None, error: Any, must_collect: bool, parent: str | None, multidict: bool
) -> None:
    from multidict import CIMultiDict

    from tracer import installer
    from tracer.runtime import Runtime

    if installer.runtime is None:
        tracer_install()
    rt = installer.runtime
    assert rt is not None
    assert type(rt.response_headers).__name__ == "builtin_function_or_method"

    def answer(put: Any) -> Any:
        local = LocalTrace(True, must_collect, rt.chain)
        span = Span("server", "GET /", "t", "t", parent, local, True, "s")
        span.start_us = 1_765_000_000_123_456
        span.status_code = status
        span.error = error
        try:
            if multidict:
                headers: Any = CIMultiDict({"Content-Type": "text/plain"})
                out: Any = (put(span, headers), list(headers.items()))
            else:
                out = put(span)
        except Exception as exc:
            out = type(exc).__name__
        return out, local.must_collect

    assert answer(rt.response_headers) == answer(lambda *a: Runtime.response_headers(rt, *a))


@compiled
@settings(max_examples=100, deadline=None)
@given(st.lists(frozen_spans(), max_size=20))
def test_the_compiled_records_of_a_slice_are_its_spans_records(frozen: list[Any]) -> None:
    from tracer.span import fast_records

    assert fast_records is not None and fast_record is not None
    template = record_template("checkout", "web-1", 4242)
    assert fast_records(frozen, template) == [fast_record(f, template) for f in frozen]


def test_the_worker_builds_every_record_of_a_batch_in_order() -> None:
    """Common spans and spans that need the Python record, mixed: all of them, in order, as the
    Python record builds them (on either build)."""
    from tracer.delivery.batcher import RECORD_SLICE

    local = LocalTrace(True)
    spans = []
    for i in range(RECORD_SLICE + 7):
        span = Span("server", f"GET /{i}", "t", "t", None, local, False, f"s{i}")
        if i % 3 == 0:
            span.set_tag("n", i)  # the Python path
        span.finish()
        spans.append(span)
    frozen = [s.freeze() for s in spans]
    import tracer.delivery.batcher as batcher_module
    from tracer.delivery import Pipeline

    pipeline = Pipeline(_Nowhere(), "svc", "host")
    made = batcher_module.Batcher.records(pipeline.batcher, frozen)
    assert made == [record(f, "svc", "host", os.getpid()) for f in frozen]
