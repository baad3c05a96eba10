"""The bucket a duration is counted in: Prometheus' inclusive ``le``, with or without the table."""

from __future__ import annotations

from bisect import bisect_left

import pytest

from tracer.metrics.recording import MAX_STEPS, Recorder, bucket_index
from tracer.span import SERVER, LocalTrace, Span

DEFAULT = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
FINE = (0.0001, 0.00015, 1.0, 30.0)  # a table for these would be too large: bisect


def span(duration_us: int) -> Span:
    s = Span(SERVER, "GET /", "a" * 32, "a" * 32, None, LocalTrace(True), True)
    s.method, s.status_code, s.url, s.duration_us = "GET", 200, "http://h/", duration_us
    return s


@pytest.mark.parametrize("buckets", [DEFAULT, FINE])
def test_each_duration_lands_where_bisect_puts_it(buckets: tuple[float, ...]) -> None:
    recorder = Recorder(buckets)
    bounds = recorder.bounds_us
    durations = [0, 1, 99, 100, 101]
    for bound in bounds:
        durations += [bound - 1, bound, bound + 1]
    durations += [bounds[-1] * 3, 10**12]
    for duration in durations:
        recorder.record(span(duration))
    ((_, series),) = recorder.series()["http_server_request_duration_seconds"]
    expected = [0] * (len(bounds) + 1)
    for duration in durations:
        expected[bisect_left(bounds, duration)] += 1
    assert series[:-1] == expected
    assert series[-1] == sum(durations)


def test_table_only_when_small() -> None:
    step, table = bucket_index([round(b * 1e6) for b in DEFAULT])
    assert step == 5000 and len(table) == 2001
    assert bucket_index([round(b * 1e6) for b in FINE])[1] == []
    assert MAX_STEPS >= len(table)
