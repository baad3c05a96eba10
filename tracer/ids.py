"""Trace and span ids: generation and validation.

Ids come from a private PRNG rather than ``random``'s global one, so an application calling
``random.seed()`` cannot make two processes produce the same ids; it is reseeded in every forked
child for the same reason.
"""

from __future__ import annotations

import hashlib
import os
import random
import re

_rng = random.Random()
os.register_at_fork(after_in_child=_rng.seed)
_bits = _rng.getrandbits

MAX_REQUEST_ID = 128
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_HEX32 = re.compile(r"[0-9a-f]{32}")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def new_trace_id() -> str:
    """A fresh trace id: 32 lowercase hex characters, never all zeros."""
    # bytes.hex() is about three times cheaper than formatting the int with "032x".
    return (_bits(128) | 1).to_bytes(16, "big").hex()


def new_span_id() -> str:
    """A fresh span id: 16 lowercase hex characters, never all zeros."""
    return (_bits(64) | 1).to_bytes(8, "big").hex()


_SPAN_BIT = 1 << 64


def new_ids() -> tuple[str, str]:
    """A fresh trace id and span id at once (one draw, one conversion), neither all zeros."""
    both = (_bits(192) | _SPAN_BIT | 1).to_bytes(24, "big").hex()
    return both[:32], both[32:]


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
