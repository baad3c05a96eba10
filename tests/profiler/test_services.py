"""The proofs against real services in child processes: an aiohttp one and an http.server one,
each with a CPU-bound ``/hot`` and a light ``/cold`` (tests/profiler/service.py), profiled from
the metrics port's ``/debug/profile`` while clients load them."""

from __future__ import annotations

import asyncio
import glob
import gzip
import http.client
import json
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest

from tests.profiler.pprof_proto import profile_class
from tests.support.children import Child
from tests.support.waiting import eventually
from tracer.profiler import formats

# speedscope's file format schema, as speedscope publishes it at
# https://www.speedscope.app/file-format-schema.json (github.com/jlfwong/speedscope, MIT).
SCHEMA = json.loads((Path(__file__).parent / "speedscope-file-format-schema.json").read_text())
HOT = "burn_hot"


class Service:
    def __init__(self, kind: str, out: Path) -> None:
        self.kind = kind
        self.out = out
        self.child = Child(
            kind, str(out), cwd=out, command=(sys.executable, "-m", "tests.profiler.service")
        )
        ready = json.loads(self.child.wait_for('"port"'))
        self.port: int = ready["port"]
        self.metrics_port: int = ready["metrics_port"]
        self.profiles = out / "profiles"

    def get(self, path: str, port: int | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", port or self.port, timeout=60)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def files(self, ext: str) -> list[str]:
        return sorted(glob.glob(str(self.profiles / f"*.{ext}")))

    def batches(self) -> list[dict[str, Any]]:
        self.get("/flush")
        path = self.out / "batches.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def spans(self) -> list[dict[str, Any]]:
        return [s for b in self.batches() for s in b.get("spans", [])]

    def profile(self, seconds: float) -> None:
        status, body = self.get(f"/debug/profile?seconds={seconds}", self.metrics_port)
        assert status == 202, body


def load(service: Service, stop: threading.Event, path: str, counts: dict[str, int]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=60)
    try:
        while not stop.is_set():
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            assert response.status == 200
            counts[path] = counts.get(path, 0) + 1
    finally:
        conn.close()


def profiled_under_load(service: Service, seconds: float) -> dict[str, str]:
    """Profile ``service`` for ``seconds`` while two clients load /hot and one /cold; the new
    profile's files by format."""
    before = set(service.files("pb.gz"))
    stop = threading.Event()
    counts: dict[str, int] = {}
    clients = [
        threading.Thread(target=load, args=(service, stop, path, counts))
        for path in ("/hot", "/hot", "/cold")
    ]
    for client in clients:
        client.start()
    try:
        eventually(lambda: counts.get("/hot", 0) >= 2, what="the first /hot answers")
        service.profile(seconds)
        new = eventually(
            lambda: set(service.files("pb.gz")) - before, what="the profile's pprof file"
        )
    finally:
        stop.set()
        for client in clients:
            client.join(60)
    (pprof,) = new
    stem = pprof[: -len(".pb.gz")]
    paths = {
        "pprof": pprof,
        "speedscope": stem + ".speedscope.json",
        "collapsed": stem + ".collapsed.txt",
    }
    # The three are written one after another; the pprof last.
    for path in paths.values():
        assert os.path.exists(path), path
    return paths


@pytest.fixture(scope="module", params=["aiohttp", "http-server"])
def profiled(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Service, dict[str, str]]]:
    out = tmp_path_factory.mktemp(f"profiled-{request.param}")
    service = Service(request.param, out)
    try:
        yield service, profiled_under_load(service, 2.0)
    finally:
        assert service.child.stop() == 0, "".join(service.child.stderr)[-3000:]


def _hot_share(rows: list[formats.Row], route: str) -> tuple[float, int]:
    chosen = [row for row in rows if row[1] == route]
    weight = sum(row[2] for row in chosen)
    hot = sum(row[2] for row in chosen if any(HOT in frame for frame in row[0]))
    return (hot / weight if weight else 0.0), weight


def test_hot_samples_are_in_the_hot_function_and_route(
    profiled: tuple[Service, dict[str, str]],
) -> None:
    _, paths = profiled
    for what, path in paths.items():
        kind, rows = formats.read(Path(path).read_bytes())
        assert kind == what
        share, hot_weight = _hot_share(rows, "/hot")
        assert share >= 0.6, (what, share)
        cold_weight = sum(row[2] for row in rows if row[1] == "/cold")
        assert cold_weight * 4 < hot_weight, (what, cold_weight, hot_weight)
        # Nearly every sample in the hot function was taken in a /hot request.
        in_hot = [row for row in rows if any(HOT in frame for frame in row[0])]
        on_route = sum(row[2] for row in in_hot if row[1] == "/hot")
        assert on_route >= 0.9 * sum(row[2] for row in in_hot), what


def test_the_speedscope_file_validates_against_speedscope_schema(
    profiled: tuple[Service, dict[str, str]],
) -> None:
    _, paths = profiled
    doc = json.loads(Path(paths["speedscope"]).read_text())
    jsonschema.validate(doc, SCHEMA)
    assert any(p["name"] == "route /hot" for p in doc["profiles"])


def test_the_speedscope_check_fails_for_a_broken_file(
    profiled: tuple[Service, dict[str, str]],
) -> None:
    # The schema check above can fail: a sampled profile without weights is refused.
    _, paths = profiled
    doc = json.loads(Path(paths["speedscope"]).read_text())
    del doc["profiles"][0]["weights"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, SCHEMA)


def test_the_pprof_file_decodes_with_profile_proto_and_has_the_span_labels(
    profiled: tuple[Service, dict[str, str]],
) -> None:
    service, paths = profiled
    message = profile_class()()
    message.ParseFromString(gzip.decompress(Path(paths["pprof"]).read_bytes()))
    strings = list(message.string_table)
    assert strings[0] == ""
    assert [(strings[t.type], strings[t.unit]) for t in message.sample_type] == [
        ("samples", "count"),
        ("cpu", "nanoseconds"),
    ]
    functions = {f.id: strings[f.name] for f in message.function}
    locations = {
        loc.id: [functions[line.function_id] for line in loc.line] for loc in message.location
    }
    hot_labels = []
    for sample in message.sample:
        labels = {strings[label.key]: strings[label.str] for label in sample.label}
        assert "thread_name" in labels
        names = [name for loc in sample.location_id for name in locations[loc]]
        if labels.get("route") == "/hot" and HOT in names[0]:
            hot_labels.append(labels)
    assert hot_labels
    # The labels are those of the /hot requests' server spans, which the service delivered.
    servers = {
        s["span_id"]: s
        for s in service.spans()
        if s["kind"] == "server" and s["http"]["path"] == "/hot"
    }
    for labels in hot_labels:
        span = servers.get(labels["span_id"])
        assert span is not None, labels
        assert labels["trace_id"] == span["trace_id"]
        assert labels["local_root_span_id"] == span["span_id"]


def test_every_reporter_gets_a_profile_batch(profiled: tuple[Service, dict[str, str]]) -> None:
    service, paths = profiled
    profiles = [b["profile"] for b in service.batches() if "profile" in b]
    (batch,) = [p for p in profiles if p.get("files", {}).get("pprof") == paths["pprof"]]
    assert batch["reason"] == "http"
    assert "/hot" in batch["routes"]
    assert any(HOT in entry["function"] for entry in batch["top"][:3])
    assert batch["samples"] > 0
    # The sampler's own CPU, as the profile measured it (reported by the benchmark).
    assert batch["sampler_cpu_s"] >= 0


def test_a_second_profile_while_one_runs_is_refused_with_409(
    profiled: tuple[Service, dict[str, str]],
) -> None:
    service, _ = profiled
    before = set(service.files("pb.gz"))
    service.profile(0.5)
    status, body = service.get("/debug/profile?seconds=0.5", service.metrics_port)
    assert status == 409, body
    status, body = service.get("/debug/profile?seconds=100000", service.metrics_port)
    assert status in (400, 409), body
    eventually(lambda: set(service.files("pb.gz")) - before, what="the short profile")
    status, body = service.get("/debug/profile?seconds=nope", service.metrics_port)
    assert status == 400, body


# -- many concurrent aiohttp requests ------------------------------------------------------------


@pytest.fixture(scope="module")
def aio_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    service = Service("aiohttp", tmp_path_factory.mktemp("concurrent"))
    try:
        yield service
    finally:
        assert service.child.stop() == 0, "".join(service.child.stderr)[-3000:]


CONCURRENT = 300


def test_a_profile_during_many_concurrent_requests_leaves_every_parent_right(
    aio_service: Service,
) -> None:
    service = aio_service

    async def burst() -> list[int]:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def one() -> int:
                async with session.get(f"http://127.0.0.1:{service.port}/chain") as response:
                    await response.read()
                    return response.status

            return await asyncio.gather(*(one() for _ in range(CONCURRENT)))

    before = set(service.files("pb.gz"))
    service.profile(2)
    statuses = asyncio.run(burst())
    assert statuses == [200] * CONCURRENT
    spans: list[dict[str, Any]] = []

    def arrived() -> bool:
        spans[:] = service.spans()
        return len(spans) >= 3 * CONCURRENT

    eventually(arrived, what="every span of the burst")
    by_id = {s["span_id"]: s for s in spans}
    chains = [s for s in spans if s["kind"] == "server" and s["http"]["path"] == "/chain"]
    assert len(chains) == CONCURRENT
    children_of: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        if span["parent_id"] is not None:
            children_of.setdefault(span["parent_id"], []).append(span)
    for root in chains:
        assert root["parent_id"] is None
        (client,) = children_of[root["span_id"]]
        assert client["kind"] == "client" and client["trace_id"] == root["trace_id"]
        (callee,) = children_of[client["span_id"]]
        assert callee["kind"] == "server" and callee["http"]["path"] == "/cold"
        assert callee["trace_id"] == root["trace_id"]
        assert by_id[callee["parent_id"]] is client
    # What the profile tied to /chain is each time a /chain request's own trace and root.
    (pprof,) = eventually(lambda: set(service.files("pb.gz")) - before, what="the profile")
    message = profile_class()()
    message.ParseFromString(gzip.decompress(Path(pprof).read_bytes()))
    strings = list(message.string_table)
    roots = {s["span_id"]: s for s in chains}
    tied = 0
    for sample in message.sample:
        labels = {strings[label.key]: strings[label.str] for label in sample.label}
        if labels.get("route") == "/chain":
            root = roots[labels["local_root_span_id"]]
            assert labels["trace_id"] == root["trace_id"]
            assert by_id[labels["span_id"]]["trace_id"] == root["trace_id"]
            tied += 1
    assert tied
