"""examples/otlp_collector.py keeps working, against the test receiver."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2")

from tests.conftest import ROOT, subprocess_env
from tests.export.receiver import OtlpReceiver


@pytest.mark.parametrize("extra", [[], ["--json"]])
def test_otlp_collector_example(receiver: OtlpReceiver, tmp_path: Path, extra: list[str]) -> None:
    example = Path(ROOT) / "examples" / "otlp_collector.py"
    done = subprocess.run(
        [sys.executable, str(example), receiver.endpoint, *extra],
        capture_output=True,
        text=True,
        timeout=60,
        env=subprocess_env(),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "delivered=6 dropped=0" in done.stdout
    spans = receiver.wait_spans(6)
    assert {s.service for s in spans} == {"otlp-example"}
    assert sorted(s.span.kind for s in spans) == [2, 2, 2, 3, 3, 3]
    failed = [s for s in spans if s.span.status.code == 2]
    assert sorted(s.span.kind for s in failed) == [2, 3]
    assert all(s.events("tracer.report") for s in spans if s.span.kind == 2)
    expected = "application/json" if extra else "application/x-protobuf"
    assert {r.content_type for r in receiver.requests} == {expected}
