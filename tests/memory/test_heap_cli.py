"""``tracer heap show`` / ``tracer heap diff``: a leaking service's snapshots, and bad files."""

from __future__ import annotations

import gzip
import json
import os
import tracemalloc
from typing import Any

from tests.memory.heap_helpers import heap_cli, service

LEAKS = 150


def test_diff_of_two_signal_snapshots_puts_the_leaking_class_on_top(tmp_path: Any) -> None:
    with service(str(tmp_path)) as svc:
        for _ in range(5):
            svc.get_kept_alive("/leak")
        old = svc.signal_snapshot()
        for _ in range(LEAKS):
            svc.get_kept_alive("/leak")
        new = svc.signal_snapshot()

    out = heap_cli("diff", old, new, "--json")
    assert out.returncode == 0, out.stderr
    diff = json.loads(out.stdout)
    first = diff["types"][0]
    assert first["what"] == "tests.memory.heap_helpers.Record"
    assert first["+"] == LEAKS and first["-"] == 0
    assert (first["count_before"], first["count_after"]) == (5, 5 + LEAKS)
    assert first["size_bytes"] > 0
    # What holds them: the module-level list, as heap show names the largest containers.
    holder = first["held_by"][0]
    assert holder["held_by"] == "tests.memory.heap_helpers.RECORDS"
    assert holder["what"] == "list" and holder["count"] == 5 + LEAKS
    assert (holder["len_before"], holder["len"]) == (5, 5 + LEAKS)

    text = heap_cli("diff", old, new)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[-1:] == ["type"])
    top = lines[header + 1].split()
    assert top[-1] == "tests.memory.heap_helpers.Record"
    assert f"+{LEAKS}" in top
    held = lines[header + 2].split()
    assert held[:3] == ["held", "by", "tests.memory.heap_helpers.RECORDS"], lines[header + 2]
    assert f"+{LEAKS}" in lines[header + 2] and f"{5 + LEAKS}" in lines[header + 2]

    shown = heap_cli("show", new)
    assert shown.returncode == 0, shown.stderr
    assert "heap snapshot of heapleak" in shown.stdout
    assert "top types by size:" in shown.stdout and "top types by count:" in shown.stdout
    assert "largest containers:" in shown.stdout


def _snapshot(path: str) -> str:
    import importlib

    module = importlib.import_module("tracer.memory.snapshot")
    result: str = module.snapshot(path)
    return result


def test_show_json_is_the_document_and_lists_sites(tmp_path: Any) -> None:
    tracemalloc.start(5)
    try:
        kept = [bytearray(1000) for _ in range(200)]  # the line the sites must name
        path = _snapshot(str(tmp_path / "s.json.gz"))
    finally:
        tracemalloc.stop()
    out = heap_cli("show", path, "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["format"] == "tracer-heap-snapshot" and doc["version"] == 1
    text = heap_cli("show", path, "--top", "5")
    assert text.returncode == 0, text.stderr
    assert "test_heap_cli.py" in text.stdout and "bytearray(1000)" in text.stdout
    assert len(kept) == 200


def test_diff_names_the_lines_that_grew(tmp_path: Any) -> None:
    tracemalloc.start(1)
    try:
        old = _snapshot(str(tmp_path / "old.json"))
        grown = [bytearray(2000) for _ in range(300)]  # the growth
        new = _snapshot(str(tmp_path / "new.json"))
    finally:
        tracemalloc.stop()
    out = heap_cli("diff", old, new, "--json")
    assert out.returncode == 0, out.stderr
    sites = json.loads(out.stdout)["allocation_sites"]
    assert sites["compared"] is True
    top = sites["sites"][0]
    assert top["file"].endswith("test_heap_cli.py") and "bytearray(2000)" in top["code"]
    assert top["size_bytes"] >= 300 * 2000
    assert len(grown) == 300


def _fails(args: list[str], expected: str) -> None:
    out = heap_cli(*args)
    assert out.returncode == 2
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"tracer heap {args[0]}: ") and expected in lines[0]


def test_unreadable_files_are_one_line_and_exit_status_2(tmp_path: Any) -> None:
    good = _snapshot(str(tmp_path / "good.json.gz"))
    missing = str(tmp_path / "missing.json.gz")
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\x00\x01not json")
    truncated = tmp_path / "truncated.json.gz"
    truncated.write_bytes(open(good, "rb").read()[:40])
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"spans": []}))
    future = tmp_path / "future.json.gz"
    doc = json.loads(gzip.decompress(open(good, "rb").read()))
    doc["version"] = 99
    future.write_bytes(gzip.compress(json.dumps(doc).encode()))

    _fails(["show", missing], "No such file")
    _fails(["show", str(garbage)], "is not a heap snapshot")
    _fails(["show", str(truncated)], "is not a heap snapshot")
    _fails(["show", str(other)], "is not a heap snapshot")
    _fails(["show", str(future)], "format version 99")
    _fails(["diff", good, missing], "missing.json.gz")
    _fails(["diff", str(garbage), good], "garbage")
    assert os.path.exists(good)


def test_a_snapshot_missing_a_field_is_one_line_and_status_2(tmp_path: Any) -> None:
    path = tmp_path / "odd.json"
    path.write_text(
        json.dumps(
            {
                "format": "tracer-heap-snapshot",
                "version": 1,
                "census": {"nodes": 1, "size_bytes": 10, "types": [{"what": "x"}]},
            }
        )
    )
    done = heap_cli("show", str(path))
    assert done.returncode == 2
    assert "damaged heap snapshot" in done.stderr and "Traceback" not in done.stderr


def test_a_missing_argument_is_a_usage_line() -> None:
    for args, missing in ((["diff", "OLD"], "NEW"), (["diff"], "OLD, NEW"), (["show"], "FILE")):
        done = heap_cli(*args)
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr, done.stderr
        lines = done.stderr.splitlines()
        assert lines[0].startswith("usage: ") and f"heap {args[0]}" in lines[0], lines
        assert lines[-1].endswith(f"error: the following arguments are required: {missing}")
