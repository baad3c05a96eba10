"""Property-based tests on every parser: never raises, never emits CR, LF or NUL, valid JSON out."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import reporters
from tracer import config, ids, redaction
from tracer.delivery import Pipeline
from tracer.propagation import (
    Propagator,
    clean_token,
    header_map,
    parse_b3,
    parse_b3_multi,
    parse_traceparent,
    parse_tracestate,
    span_id_for,
)
from tracer.runtime import Runtime
from tracer.sampling import Sampler
from tracer.span import CLIENT, LocalTrace, Span

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FORBIDDEN = re.compile(r"[\r\n\x00]")
HEX32 = re.compile(r"[0-9a-f]{32}")
HEX16 = re.compile(r"[0-9a-f]{16}")
TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

# Any text, text over the latin-1 range http.server decodes bytes into, and near-valid values
# made by mutating a valid one, so the parsers' deeper branches are reached too.
anything = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=120)
latin1 = st.binary(max_size=120).map(lambda b: b.decode("latin-1"))
near_tp = st.tuples(
    st.integers(0, len(TP)), st.text(alphabet="0123456789abcdefABCDEF-\r\n\x00 ff", max_size=4)
).map(lambda t: TP[: t[0]] + t[1] + TP[t[0] + len(t[1]) :])
values = st.one_of(anything, latin1, near_tp, st.from_regex(r"[0-9a-f\-]{1,70}", fullmatch=True))
HEADERS = [
    "request-id",
    "x-span-id",
    "x-parent",
    "x-client-send",
    "x-must-collect",
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-sampled",
    "x-b3-flags",
    "host",
    "authorization",
]
header_maps = st.dictionaries(st.sampled_from(HEADERS), values, max_size=len(HEADERS))


def clean(value: str) -> None:
    assert not FORBIDDEN.search(value), repr(value)


@SETTINGS
@given(values)
def test_traceparent_parser(value: str) -> None:
    parsed = parse_traceparent(value)
    if parsed is not None:
        trace_id, parent_id, sampled = parsed
        assert HEX32.fullmatch(trace_id) and trace_id != "0" * 32
        assert HEX16.fullmatch(parent_id) and parent_id != "0" * 16
        assert isinstance(sampled, bool)


@SETTINGS
@given(st.one_of(values, st.lists(values, max_size=40).map(",".join)))
def test_tracestate_parser(value: str) -> None:
    parsed = parse_tracestate(value)
    if parsed is not None:
        clean(parsed)
        assert len(parsed) <= 512 and len(parsed.split(",")) <= 32
        assert all(0x20 <= ord(c) <= 0x7E for c in parsed)


@SETTINGS
@given(values)
def test_b3_parser(value: str) -> None:
    parsed = parse_b3(value)
    if parsed is not None:
        trace_id, span_id, _ = parsed
        assert trace_id is None or HEX32.fullmatch(trace_id)
        assert span_id is None or HEX16.fullmatch(span_id)


@SETTINGS
@given(header_maps)
def test_b3_multi_parser(headers: dict[str, str]) -> None:
    parsed = parse_b3_multi(headers.get)
    if parsed is not None:
        trace_id, span_id, _ = parsed
        assert trace_id is None or HEX32.fullmatch(trace_id)
        assert span_id is None or HEX16.fullmatch(span_id)


@SETTINGS
@given(values)
def test_token_and_span_id(value: str) -> None:
    token = clean_token(value)
    if token is not None:
        assert ids.valid_request_id(token)
        assert HEX32.fullmatch(ids.trace_id_for(token))
    span_id = span_id_for(value)
    assert span_id is None or HEX16.fullmatch(span_id)


def _runtime(**options: Any) -> Runtime:
    cfg = config.load(
        overrides={"app_name": "svc ∆\r\n", "reporter": reporters.create("memory"), **options},
        env={},
    )
    pipeline = Pipeline(cfg.reporter, cfg.app_name, "host")
    return Runtime(cfg, pipeline, Sampler(sample_rate=1))


RUNTIME = _runtime(record_headers=True)


@SETTINGS
@given(header_maps, st.one_of(anything, latin1), st.one_of(anything, latin1))
def test_extract_inject_and_record(headers: dict[str, str], target: str, method: str) -> None:
    span = RUNTIME.server_span(method, target, header_map(headers.items()))
    assert span is not None
    head = RUNTIME.response_headers(span).decode("latin-1")
    assert head.endswith("\r\n")
    lines: dict[str, str] = {}
    for line in head[:-2].split("\r\n"):
        name, _, value = line.partition(": ")
        assert name in ("x-parent", "x-client-send", "x-span-id", "x-must-collect"), line
        clean(value)
        lines[name] = value
    # The form aiohttp gets (set in its response headers) carries the very same headers.
    mapping: dict[str, str] = {}
    assert RUNTIME.response_headers(span, mapping) == b""
    assert mapping == lines
    child = Span(CLIENT, "c", span.trace_id, span.request_id, span.span_id, span.local, False)
    child.tracestate = span.tracestate
    outgoing: dict[str, str] = {}
    Propagator(["trace", "tracecontext", "b3", "b3multi"]).inject(child, "svc", outgoing)
    for name, value in outgoing.items():
        clean(value)
        assert value.isascii() and value.isprintable(), (name, value)
    assert HEX32.fullmatch(span.trace_id)
    assert ids.valid_request_id(span.request_id)
    span.status_code = 200
    record = span.to_record("svc", "host", 1)
    text = json.dumps(record, allow_nan=False)
    text.encode("utf-8")
    for key in ("name", "request_id"):
        clean(record[key])
    for key in ("url", "path", "method"):
        clean(record["http"][key])
    for value in record["tags"].get("http.request_headers", {}).values():
        clean(value)


json_like = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=True, allow_infinity=True),
        anything,
        st.binary(max_size=50),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=8),
        st.dictionaries(st.one_of(anything, st.integers()), children, max_size=8),
        st.tuples(children, children),
    ),
    max_leaves=60,
)


@SETTINGS
@given(json_like, st.integers(min_value=1, max_value=5000))
def test_bounded_is_valid_bounded_json(value: Any, budget: int) -> None:
    out = redaction.bounded(value, budget)
    text = json.dumps(out, allow_nan=False)
    json.dumps(out, allow_nan=False, ensure_ascii=False).encode("utf-8")
    # Bounded: escapes may grow a character to six, containers add their punctuation.
    assert len(text) <= 6 * budget + 2048


@SETTINGS
@given(json_like, json_like, anything, anything)
def test_span_record_is_always_valid_json(data: Any, tag: Any, name: str, message: str) -> None:
    span = Span(CLIENT, name, "a" * 32, "r", None, LocalTrace(True), True)
    span.annotate({"data": data, "nan": math.nan})
    span.set_tag("t", tag)
    try:
        raise ValueError(message)
    except ValueError as exc:
        span.record_exception(exc)
    record = span.to_record("svc", "host", 1)
    text = json.dumps(record, allow_nan=False, ensure_ascii=False)
    text.encode("utf-8")
    assert len(text) < 64 * 1024


@SETTINGS
@given(st.one_of(anything, latin1), st.lists(st.tuples(anything, anything), max_size=80))
def test_redaction_functions(url: str, headers: list[tuple[str, str]]) -> None:
    clean(redaction.redact_url(url))
    clean(redaction.clean_text(url, 100))
    clean(redaction.clean_method(url))
    host = redaction.clean_host(url)
    assert host is None or not FORBIDDEN.search(host)
    recorded = redaction.redact_headers(headers)
    assert len(recorded) <= redaction.MAX_HEADERS
    for name, value in recorded.items():
        clean(name)
        clean(value)
        assert len(value) <= redaction.MAX_HEADER_VALUE
    json.dumps(recorded, ensure_ascii=False).encode("utf-8")
