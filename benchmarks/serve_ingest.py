"""Decoding speed of ``tracer serve``'s receivers: spans per second of
:func:`tracer.serve.ingest.decode_otlp_traces` on OTLP protobuf (and JSON) bodies of 512 spans
made by tracer's own OTLP encoder, and of the Zipkin and tracer-batch decoders on the same spans.

    python -m benchmarks.serve_ingest [--batches 40] [--repeat 5]

The spans are shaped as a traced web request makes them: a server span with its route, status
and tags, a client call with its URL, database calls with their statement, an internal span, a
``tracer.report()`` annotation, and one failed request in eight with its exception and stack.
Each figure (spans per second of wall time, and per second of the process's CPU time, which
moves less on a busy machine) is the best of ``--repeat`` runs over ``--batches`` bodies
(decoding only: the bodies are encoded before the clock starts).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from collections.abc import Callable
from typing import Any

from tracer.reporters import otlp_encode, zipkin_encode
from tracer.serve import ingest
from tracer.serve.model import Decoded

BATCH = 512
STACK = "".join(
    f'  File "/srv/app/views.py", line {n}, in handler_{n}\n    result = step_{n}(request)\n'
    for n in range(12)
)


def _ids(rng: random.Random) -> tuple[str, str]:
    return f"{rng.getrandbits(128):032x}", f"{rng.getrandbits(64):016x}"


def request_spans(rng: random.Random, start_us: int) -> list[dict[str, Any]]:
    """The eight spans of one traced request."""
    trace_id, root = _ids(rng)
    failed = rng.random() < 0.125
    status = 500 if failed else 200
    user = rng.randrange(1, 10_000)
    base = {
        "trace_id": trace_id,
        "request_id": trace_id,
        "service": "checkout",
        "host": "web-1",
        "pid": 4242,
        "annotations": [],
        "tags": {},
        "sampled": True,
        "must_collect": failed,
        "tracestate": None,
        "error": None,
        "http": None,
    }

    def span(
        kind: str, name: str, parent: str | None, offset: int, duration: int, **more: Any
    ) -> dict[str, Any]:
        span_id = root if parent is None else f"{rng.getrandbits(64):016x}"
        record = dict(base, span_id=span_id, parent_id=parent, kind=kind, name=name)
        record.update(start_us=start_us + offset, duration_us=duration, events=[], **more)
        return record

    spans = [
        span(
            "server",
            "GET /users/{id}",
            None,
            0,
            9_000,
            http={
                "method": "GET",
                "url": f"http://shop.example/users/{user}?page=2",
                "path": f"/users/{user}",
                "status_code": status,
                "route": "/users/{id}",
            },
            tags={"ttfb_us": 8_100, "team": "payments"},
            annotations=[{"time_us": start_us + 500, "data": {"user": user, "cart": 3}}],
            error={"type": "ValueError", "message": "no such user", "stack": STACK}
            if failed
            else None,
        ),
        span(
            "client",
            "GET inventory:8080/items",
            root,
            300,
            2_500,
            http={
                "method": "GET",
                "url": "http://inventory:8080/items?user=1",
                "path": "/items",
                "status_code": 200,
                "route": None,
            },
        ),
        span("internal", "render", root, 7_000, 1_500),
    ]
    for n in range(5):
        spans.append(
            span(
                "client",
                "SELECT users",
                root,
                2_900 + n * 800,
                400,
                db={
                    "db.system.name": "postgresql",
                    "db.namespace": "shop",
                    "db.operation.name": "SELECT",
                    "db.collection.name": "users",
                    "db.query.text": "SELECT id, name, email FROM users WHERE id = ? AND org = ?",
                    "server.address": "db.internal",
                    "server.port": 5432,
                },
            )
        )
    return spans


def batches(count: int) -> list[dict[str, Any]]:
    """``count`` batches of 512 span records each."""
    rng = random.Random(24)
    start = 1_790_000_000_000_000
    out = []
    for _ in range(count):
        spans: list[dict[str, Any]] = []
        while len(spans) < BATCH:
            spans.extend(request_spans(rng, start))
            start += 10_000
        out.append({"service": "checkout", "host": "web-1", "pid": 4242, "spans": spans[:BATCH]})
    return out


def rate(
    decode: Callable[[bytes, str], Decoded], bodies: list[bytes], media: str, repeat: int
) -> tuple[float, float]:
    """Spans per second of wall time and per second of this process's CPU time, best runs."""
    wall = cpu = float("inf")
    spans = 0
    for _ in range(repeat):
        began, began_cpu = time.perf_counter(), time.process_time()
        spans = sum(len(decode(body, media).spans) for body in bodies)
        wall = min(wall, time.perf_counter() - began)
        cpu = min(cpu, time.process_time() - began_cpu)
    assert spans == BATCH * len(bodies)
    return spans / wall, spans / max(cpu, 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    made = batches(args.batches)
    grouped = [otlp_encode.prepare(batch, {})[0] for batch in made]
    protobuf = [otlp_encode.to_protobuf(groups) for groups in grouped]
    otlp_json = [otlp_encode.to_json(groups) for groups in grouped]
    zipkin = [zipkin_encode.encode(batch) or b"[]" for batch in made]
    own = [json.dumps(batch).encode() for batch in made]
    size = sum(map(len, protobuf)) / len(protobuf)
    print(
        f"{args.batches} bodies of {BATCH} spans (protobuf {size / 1024:,.0f} KiB each), "
        f"best of {args.repeat}, pid {os.getpid()}"
    )
    rows = [
        ("OTLP protobuf", ingest.decode_otlp_traces, protobuf, "application/x-protobuf"),
        ("OTLP JSON", ingest.decode_otlp_traces, otlp_json, "application/json"),
        ("Zipkin v2 JSON", ingest.decode_zipkin, zipkin, "application/json"),
        ("tracer batches", ingest.decode_tracer, own, "application/json"),
    ]
    print(f"  {'':<16} {'spans/s':>10} {'per CPU s':>10}")
    for label, decode, bodies, media in rows:
        wall, cpu = rate(decode, bodies, media, args.repeat)
        print(f"  {label:<16} {wall:>10,.0f} {cpu:>10,.0f}")


if __name__ == "__main__":
    main()
