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
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.children import subprocess_env, wait_child
from tracer import _accel, ids
from tracer.span import MAX_NAME, LocalTrace, Span, fast_record, record, record_template

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
