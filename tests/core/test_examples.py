"""The examples keep working."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, subprocess_env


def test_custom_reporter_example(tmp_path: Path) -> None:
    out_file = tmp_path / "spans.jsonl"
    out = subprocess.run(
        [sys.executable, str(Path(ROOT) / "examples" / "custom_reporter.py"), str(out_file)],
        capture_output=True,
        text=True,
        timeout=60,
        env=subprocess_env(),
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    spans = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert sorted(s["kind"] for s in spans) == ["client"] * 3 + ["server"] * 3
    assert all(s["service"] == "custom-reporter-example" for s in spans)
    servers = [s for s in spans if s["kind"] == "server"]
    assert all(s["annotations"][0]["data"] == {"greeting": "hello"} for s in servers)
    assert "wrote" in out.stdout
