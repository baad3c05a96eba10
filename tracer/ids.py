"""Trace and span ids: generation and validation.

Ids come from a private PRNG (the pure-Python build) or ``os.urandom`` (the compiled accelerator,
:mod:`tracer._accel`) rather than ``random``'s global one, so an application calling
``random.seed()`` cannot make two processes produce the same ids; a forked child draws afresh for
the same reason.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
from collections.abc import Callable

from tracer._accel import speedups as _speedups

_rng = random.Random()
_bits = _rng.getrandbits

# Ids are drawn from a pool of (trace id, span id) pairs, refilled a few hundred at once: one
# draw, one conversion and C-level slicing and pairing for the whole pool, so that taking ids is a
# list.pop(), which is also atomic between threads, and slices nothing. The mask sets the lowest
# bit of every trace id and span id, so none is ever all zeros. A forked child empties its pool
# (and reseeds), so that parent and child never hand out the same ids.
_POOL_SIZE = 256
# The pairs that go into the pool: all but the first, which the refilling caller takes.
_TRACE_CHUNKS = [slice(i, i + 32) for i in range(48, 48 * _POOL_SIZE, 48)]
_SPAN_CHUNKS = [slice(i + 32, i + 48) for i in range(48, 48 * _POOL_SIZE, 48)]
_MASK = sum(((1 << 64) | 1) << (192 * i) for i in range(_POOL_SIZE))
_pool: list[tuple[str, str]] = []
_take = _pool.pop


def _refill() -> tuple[str, str]:
    text = (_bits(192 * _POOL_SIZE) | _MASK).to_bytes(24 * _POOL_SIZE, "big").hex()
    # The caller gets the first pair, which never enters the pool: other threads may empty the
    # pool again before this thread could pop from it.
    trace_ids = map(text.__getitem__, _TRACE_CHUNKS)
    _pool.extend(zip(trace_ids, map(text.__getitem__, _SPAN_CHUNKS), strict=True))
    return text[:32], text[32:48]


def _after_fork_in_child() -> None:
    _pool.clear()
    _rng.seed()
    if _speedups is not None:
        _speedups.forget_ids()


os.register_at_fork(after_in_child=_after_fork_in_child)


MAX_REQUEST_ID = 128
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_HEX32 = re.compile(r"[0-9a-f]{32}")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


# The three below take a pair from the pool each, written out rather than through a shared
# helper: a span takes its ids on the request path, where a call more is measurable.


def py_new_trace_id() -> str:
    """A fresh trace id: 32 lowercase hex characters, never all zeros."""
    try:
        both = _take()
    except IndexError:
        both = _refill()
    return both[0]


def py_new_span_id() -> str:
    """A fresh span id: 16 lowercase hex characters, never all zeros."""
    try:
        both = _take()
    except IndexError:
        both = _refill()
    return both[1]


def py_new_ids() -> tuple[str, str]:
    """A fresh trace id and span id at once, neither all zeros."""
    try:
        return _take()
    except IndexError:
        return _refill()


# The accelerator's twins of the three above (hex of bytes from os.urandom, 256 pairs at a time,
# the lowest bit of each id set in the same way) when it is there.
new_trace_id: Callable[[], str] = py_new_trace_id
new_span_id: Callable[[], str] = py_new_span_id
new_ids: Callable[[], tuple[str, str]] = py_new_ids
if _speedups is not None:
    new_trace_id = _speedups.new_trace_id
    new_span_id = _speedups.new_span_id
    new_ids = _speedups.new_ids


def valid_request_id(value: str) -> bool:
    """True when ``value`` may be propagated verbatim: 1-128 chars of ``[A-Za-z0-9._:-]``."""
    # The length is checked first so that a hostile 64 KB value never reaches the regex.
    return 0 < len(value) <= MAX_REQUEST_ID and _REQUEST_ID.fullmatch(value) is not None


def trace_id_for(request_id: str) -> str:
    """The trace id that every service derives from the same request id.

    A UUID or 32 hex characters is the id itself (lowercased, dashes removed); anything else is
    hashed, so services that only see the request-id still agree on one trace id.
    """
    if len(request_id) == 32 and _HEX32.fullmatch(request_id.lower()):
        tid = request_id.lower()
    elif len(request_id) == 36 and _UUID.fullmatch(request_id):
        tid = request_id.replace("-", "").lower()
    else:
        tid = hashlib.sha256(request_id.encode("ascii", "replace")).hexdigest()[:32]
    if tid == "0" * 32:
        tid = hashlib.sha256(request_id.encode("ascii", "replace")).hexdigest()[:32]
    return tid


_LOW56 = (1 << 56) - 1
_SCALE = 1.0 / (1 << 56)


def sample_point(trace_id: str) -> float:
    """A number in [0, 1) that every service computes alike from the same trace id.

    Sampling compares it with the local probability, so services that share a rate make the same
    decision for a trace without being told, and a service with a lower rate keeps a subset of
    what a higher-rate service keeps. The two halves are mixed so that ids whose low bits are not
    random (time-based UUIDs) still spread evenly.
    """
    return ((int(trace_id[:16], 16) ^ int(trace_id[16:32], 16)) & _LOW56) * _SCALE
