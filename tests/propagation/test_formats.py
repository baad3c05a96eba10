"""Parsing and writing of the trace, tracecontext (W3C) and b3 formats, without a network."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from tracer import ids, propagation
from tracer.propagation import (
    Propagator,
    parse_b3,
    parse_traceparent,
    parse_tracestate,
)
from tracer.span import LocalTrace, Span

TID = "4bf92f3577b34da6a3ce929d0e0e4736"
PID = "00f067aa0ba902b7"
TP = f"00-{TID}-{PID}-01"


def getter(headers: dict[str, str]) -> propagation.Getter:
    lower = {k.lower(): v for k, v in headers.items()}
    return lower.get


@pytest.fixture
def invalid() -> Iterator[list[str]]:
    seen: list[str] = []
    old = propagation.set_invalid_counter(seen.append)
    yield seen
    propagation.set_invalid_counter(old)


# -- traceparent ------------------------------------------------------------------------------


def test_traceparent_valid_and_flags() -> None:
    assert parse_traceparent(TP) == (TID, PID, True)
    assert parse_traceparent(f"00-{TID}-{PID}-00") == (TID, PID, False)
    # Only the sampled bit counts; other flag bits are allowed in version 00.
    assert parse_traceparent(f"00-{TID}-{PID}-03") == (TID, PID, True)
    assert parse_traceparent(f"00-{TID}-{PID}-fe") == (TID, PID, False)


@pytest.mark.parametrize(
    "value",
    [
        TP.upper(),
        f"00-{TID.upper()}-{PID}-01",
        f"00-{TID}-{PID.upper()}-01",
        f"00-{TID}-{PID}-0A",
        f"ff-{TID}-{PID}-01",
        f"00-{'0' * 32}-{PID}-01",
        f"00-{TID}-{'0' * 16}-01",
        f"00-{TID[:-1]}g-{PID}-01",
        f"00-{TID}-{PID}-01-extra",
        f"00-{TID}-{PID}-1",
        f"00_{TID}_{PID}_01",
        f"0-{TID}-{PID}-01",
        f"01-{TID}-{PID}-01x",
        f"01-{TID}-{PID}",
        "",
        "00",
        f"00-{TID}-{PID}-01," + TP,
        "00-" + "a" * 65000,
    ],
)
def test_traceparent_invalid(value: str) -> None:
    assert parse_traceparent(value) is None


def test_traceparent_higher_version_parsed_as_the_spec_says() -> None:
    # A future version may add fields after a dash; the first four are read as version 00's.
    assert parse_traceparent(f"01-{TID}-{PID}-01") == (TID, PID, True)
    assert parse_traceparent(f"cc-{TID}-{PID}-01-what-the-future-holds") == (TID, PID, True)
    assert parse_traceparent(f"cc-{TID}-{PID}-00-x") == (TID, PID, False)


def test_traceparent_surrounding_whitespace_is_trimmed() -> None:
    assert parse_traceparent(f"  {TP}\t ") == (TID, PID, True)


# -- tracestate -------------------------------------------------------------------------------


def test_tracestate_valid_members_kept() -> None:
    assert parse_tracestate("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE") == (
        "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
    )
    assert parse_tracestate(" a=1 , ,\tb@sys=x y ,") == "a=1,b@sys=x y"
    assert parse_tracestate("") is None
    assert parse_tracestate(" , ") is None


@pytest.mark.parametrize(
    "value",
    [
        "A=1",  # keys are lowercase
        "1a=1",  # a simple key starts with a letter
        "a=",  # an empty value
        "a=b=c",  # '=' is not allowed in a value
        "a=1,a=2",  # duplicated key
        "a=1 ,b",  # no '='
        "a=\x00",
        "a=\x7f",
        "a=" + "x" * 257,
        "k" * 257 + "=1",
        "t@" + "s" * 15 + "=1",  # system id at most 14 characters
        "a=1," * 3000,
    ],
)
def test_tracestate_invalid_is_dropped(value: str) -> None:
    assert parse_tracestate(value) is None


def test_tracestate_40_members_cut_to_32() -> None:
    value = ",".join(f"k{i}=v{i}" for i in range(40))
    kept = parse_tracestate(value)
    assert kept is not None
    assert kept.split(",") == [f"k{i}=v{i}" for i in range(32)]


def test_tracestate_40_members_with_bad_keys_dropped() -> None:
    value = ",".join(f"K{i}=v{i}" if i % 7 == 3 else f"k{i}=v{i}" for i in range(40))
    assert parse_tracestate(value) is None


def test_tracestate_cut_to_512_long_members_first() -> None:
    long = "big=" + "x" * 200
    small = [f"s{i}=" + "y" * 40 for i in range(14)]
    kept = parse_tracestate(",".join([small[0], long, *small[1:]]))
    assert kept is not None
    assert len(kept) <= 512
    assert "big=" not in kept
    assert kept.split(",") == small[: len(kept.split(","))]
    assert len(kept.split(",")) == 11  # 11 * 43 + 10 = 483; a 12th would pass 512


# -- b3 ---------------------------------------------------------------------------------------


def test_b3_single() -> None:
    assert parse_b3(f"{TID}-{PID}-1") == (TID, PID, True)
    assert parse_b3(f"{TID}-{PID}-0-{PID}") == (TID, PID, False)
    assert parse_b3(f"{TID}-{PID}-d") == (TID, PID, True)
    assert parse_b3(f"{TID}-{PID}") == (TID, PID, None)
    assert parse_b3(f"{PID}-{PID}-1") == ("0" * 16 + PID, PID, True)
    assert parse_b3(f"{TID.upper()}-{PID}-1") == (TID, PID, True)
    assert parse_b3("0") == (None, None, False)
    assert parse_b3("d") == (None, None, True)


@pytest.mark.parametrize(
    "value",
    [
        f"{TID}",
        f"{TID}-{PID}-2",
        f"{TID}-{PID}-1-zz",
        f"{TID}-{PID}-1-{PID}-x",
        f"{'0' * 32}-{PID}-1",
        f"{TID}-{'0' * 16}-1",
        f"{TID[:20]}-{PID}-1",
        "x" * 200,
    ],
)
def test_b3_single_invalid(value: str) -> None:
    assert parse_b3(value) is None


def test_b3_multi() -> None:
    p = Propagator(["b3multi"])
    inbound = p.extract(getter({"X-B3-TraceId": TID, "X-B3-SpanId": PID, "X-B3-Sampled": "0"}))
    assert inbound is not None
    assert (inbound.trace_id, inbound.parent_id, inbound.sampled) == (TID, PID, False)
    debug = p.extract(getter({"X-B3-TraceId": PID, "X-B3-SpanId": PID, "X-B3-Flags": "1"}))
    assert debug is not None and debug.trace_id == "0" * 16 + PID and debug.sampled is True
    # The single header wins over the multi headers.
    other = "a" * 32
    both = p.extract(getter({"b3": f"{other}-{PID}-1", "X-B3-TraceId": TID, "X-B3-SpanId": PID}))
    assert both is not None and both.trace_id == other


# -- the propagator: identity rules and order --------------------------------------------------


def test_plain_request_starts_a_root() -> None:
    assert Propagator().extract(getter({})) is None


def test_request_id_kept_verbatim_and_trace_id_derived() -> None:
    p = Propagator()
    inbound = p.extract(getter({"request-id": "req-42", "x-span-id": PID}))
    assert inbound is not None
    assert inbound.request_id == "req-42"
    assert inbound.trace_id == ids.trace_id_for("req-42")
    assert len(inbound.trace_id) == 32 and inbound.trace_id == inbound.trace_id.lower()
    assert inbound.parent_id == PID
    # Deterministic: every service derives the same trace id.
    again = Propagator(["trace"]).extract(getter({"request-id": "req-42"}))
    assert again is not None and again.trace_id == inbound.trace_id


def test_uuid_and_hex_request_ids_are_the_trace_id() -> None:
    u = str(uuid.uuid4())
    inbound = Propagator().extract(getter({"request-id": u}))
    assert inbound is not None
    assert inbound.request_id == u and inbound.trace_id == u.replace("-", "")
    inbound = Propagator().extract(getter({"request-id": TID.upper()}))
    assert inbound is not None
    assert inbound.request_id == TID.upper() and inbound.trace_id == TID


def test_traceparent_wins_and_request_id_is_kept() -> None:
    for order in (["trace", "tracecontext", "b3"], ["tracecontext", "trace"]):
        inbound = Propagator(order).extract(
            getter({"request-id": "req-42", "x-span-id": "1" * 16, "traceparent": TP})
        )
        assert inbound is not None
        assert inbound.trace_id == TID and inbound.parent_id == PID
        assert inbound.request_id == "req-42"
        assert inbound.sampled is True


def test_traceparent_alone_gives_request_id_equal_to_trace_id() -> None:
    inbound = Propagator().extract(getter({"traceparent": TP, "tracestate": "a=1"}))
    assert inbound is not None
    assert inbound.request_id == TID and inbound.tracestate == "a=1"


def test_order_decides_between_tracecontext_and_b3() -> None:
    other = "b" * 32
    headers = getter({"traceparent": TP, "b3": f"{other}-{PID}-0"})
    first = Propagator(["tracecontext", "b3"]).extract(headers)
    second = Propagator(["b3", "tracecontext"]).extract(headers)
    assert first is not None and (first.trace_id, first.sampled) == (TID, True)
    assert second is not None and (second.trace_id, second.sampled) == (other, False)


def test_tracestate_ignored_without_valid_traceparent() -> None:
    inbound = Propagator().extract(getter({"traceparent": TP.upper(), "tracestate": "a=1"}))
    assert inbound is None


def test_only_configured_formats_are_read() -> None:
    assert Propagator(["trace"]).extract(getter({"traceparent": TP})) is None
    assert Propagator(["tracecontext"]).extract(getter({"b3": f"{TID}-{PID}-1"})) is None
    with pytest.raises(ValueError):
        Propagator(["nope"])


def test_invalid_traceparent_falls_back_to_request_id(invalid: list[str]) -> None:
    inbound = Propagator().extract(getter({"traceparent": "garbage", "request-id": "r1"}))
    assert inbound is not None and inbound.trace_id == ids.trace_id_for("r1")
    assert invalid == ["traceparent"]


def test_invalid_values_are_counted(invalid: list[str]) -> None:
    Propagator().extract(
        getter(
            {
                "request-id": "bad value",
                "traceparent": "00-xyz",
                "b3": "nope",
            }
        )
    )
    assert sorted(invalid) == ["b3", "request-id", "traceparent"]


def test_must_collect_and_bare_sampling_decisions_start_a_root() -> None:
    forced = Propagator().extract(getter({"x-must-collect": "1"}))
    assert forced is not None and forced.must_collect and forced.trace_id is not None
    assert forced.parent_id is None and forced.request_id == forced.trace_id
    deny = Propagator().extract(getter({"b3": "0"}))
    assert deny is not None and deny.sampled is False and deny.parent_id is None


def test_request_id_from_query_and_its_validation(invalid: list[str]) -> None:
    inbound = Propagator().extract(getter({}), "a=1&requestId=from-q")
    assert inbound is not None and inbound.request_id == "from-q"
    assert Propagator().extract(getter({}), "requestId=a%0d%0ab") is None
    assert invalid == ["requestId"]


# -- injection --------------------------------------------------------------------------------


def _span(sampled: bool, must_collect: bool = False) -> Span:
    span = Span("client", "GET x", TID, "req-42", PID, LocalTrace(sampled, must_collect), False)
    span.tracestate = "a=1"
    return span


def test_inject_every_format() -> None:
    span = _span(True)
    headers: dict[str, str] = {}
    Propagator(["trace", "tracecontext", "b3", "b3multi"]).inject(span, "svc", headers)
    assert headers == {
        "request-id": "req-42",
        "x-span-id": span.span_id,
        "x-parent": "svc",
        "x-client-send": str(span.start_us),
        "traceparent": f"00-{TID}-{span.span_id}-01",
        "tracestate": "a=1",
        "b3": f"{TID}-{span.span_id}-1",
        "X-B3-TraceId": TID,
        "X-B3-SpanId": span.span_id,
        "X-B3-ParentSpanId": PID,
        "X-B3-Sampled": "1",
    }


def test_inject_unsampled_and_forced() -> None:
    headers: dict[str, str] = {}
    Propagator().inject(_span(False), "svc", headers)
    assert headers["traceparent"].endswith("-00") and headers["b3"].endswith("-0")
    assert "x-must-collect" not in headers
    headers = {}
    Propagator().inject(_span(False, must_collect=True), "svc", headers)
    assert headers["traceparent"].endswith("-01") and headers["x-must-collect"] == "1"


def test_only_configured_formats_are_injected() -> None:
    headers: dict[str, str] = {}
    Propagator(["tracecontext"]).inject(_span(True), "svc", headers)
    assert sorted(headers) == ["traceparent", "tracestate"]


def test_header_map_joins_repeated_headers() -> None:
    second = TP.replace("01", "00", 1)
    headers = propagation.header_map([("TraceParent", TP), ("A", "x"), ("traceparent", second)])
    assert headers["a"] == "x" and "missing" not in headers
    assert headers["traceparent"] == f"{TP},{second}"
    assert parse_traceparent(headers["traceparent"]) is None


def test_new_ids_are_well_formed_and_unique_across_threads() -> None:
    import re
    import sys
    import threading

    seen: list[list[str]] = []

    def draw() -> None:
        mine: list[str] = []
        for _ in range(2000):  # several refills of the id pool per thread
            tid, sid = ids.new_ids()
            mine += [tid, sid, ids.new_trace_id(), ids.new_span_id()]
        seen.append(mine)

    # Threads switch as often as they can, so that they empty the pool under each other.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=draw) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    every = [value for mine in seen for value in mine]
    assert len(every) == 16 * 2000 * 4  # no thread died of an exception
    assert len(set(every)) == len(every)
    for value in every:
        assert re.fullmatch(r"[0-9a-f]{16}|[0-9a-f]{32}", value), value
        assert int(value, 16) != 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_never_draws_its_parents_ids() -> None:
    ids.new_ids()  # the pool holds unused ids when the process forks
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read_end)
            drawn = [ids.new_span_id() for _ in range(50)] + [ids.new_trace_id()]
            os.write(write_end, " ".join(drawn).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        child = pipe.read().split()
    os.waitpid(pid, 0)
    # More than one pool's worth, so that the parent refills too: a child that kept its parent's
    # random state would draw what the parent draws next.
    parent = [ids.new_span_id() for _ in range(600)] + [ids.new_trace_id()]
    assert len(child) == 51
    assert not set(child) & set(parent)


def test_the_running_tracer_counts_invalid_values_through_the_public_hook() -> None:
    import reporters
    import tracer

    tracer.install(app_name="hook", reporter=reporters.create("memory"))
    try:
        propagation.inbound_invalid("request-id")
        assert tracer.stats()["inbound_invalid_by_header"] == {"request-id": 1}
    finally:
        tracer.uninstall()
    # Uninstalled: the old runtime is no longer what the formats report to.
    assert propagation.set_invalid_counter(None) is None
