"""``tracer heap show|diff`` on hostile files and command lines: one line on stderr, status 2.

Every child runs under an address-space limit and a timeout, so a reader that trusts its input
fails the test with a MemoryError or a timeout instead of taking the machine's memory.
"""

from __future__ import annotations

import gzip
import json
import os
import resource
import subprocess
import sys
import zlib
from typing import Any

from tests.conftest import subprocess_env

# Far above what the command needs (tens of MB), far below what an unbounded read would take.
ADDRESS_SPACE = 512 << 20
TIMEOUT = 60


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def heap(*args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    """``python -m tracer heap ARGS`` in a child with bounded memory."""
    return subprocess.run(
        [sys.executable, "-m", "tracer", "heap", *args],
        capture_output=True,
        text=True,
        errors="backslashreplace",
        timeout=timeout,
        env=subprocess_env(),
        preexec_fn=_limit_memory,
    )


def one_line(done: subprocess.CompletedProcess[str], action: str, expected: str) -> str:
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"tracer heap {action}: "), lines[0]
    assert expected in lines[0], lines[0]
    return lines[0]


def document(types: list[dict[str, Any]] | None = None, **fields: Any) -> dict[str, Any]:
    """A small valid snapshot document."""
    types = types if types is not None else [_type("builtins.dict", 10, 640)]
    doc: dict[str, Any] = {
        "format": "tracer-heap-snapshot",
        "version": 1,
        "time_us": 1_700_000_000_000_000,
        "reason": "manual",
        "leak": None,
        "process": {"service": "svc", "pid": 1, "host": "h", "python": "3"},
        "memory": {"rss_bytes": 1 << 20},
        "gc": {"counts": [0, 0, 0], "thresholds": [700, 10, 10], "garbage": 0},
        "census": {
            "nodes": sum(t["count"] for t in types),
            "size_bytes": sum(t["size_bytes"] for t in types),
            "size": "?",
            "seconds": 0.01,
            "types": types,
        },
        "containers": [],
        "allocation_sites": None,
    }
    doc.update(fields)
    return doc


def _type(what: str, count: int, size: int) -> dict[str, Any]:
    return {"what": what, "count": count, "size_bytes": size, "size": f"{size} bytes"}


def write(path: Any, doc: dict[str, Any]) -> str:
    path.write_text(json.dumps(doc))
    return str(path)


def test_deep_nesting_is_one_line(tmp_path: Any) -> None:
    plain = tmp_path / "nested.json"
    plain.write_bytes(b"[" * 400_000)
    packed = tmp_path / "nested.json.gz"
    packed.write_bytes(gzip.compress(b'{"format": ' + b"[" * 400_000))
    one_line(heap("show", str(plain)), "show", "nested too deeply")
    one_line(heap("diff", str(packed), str(plain)), "diff", "nested too deeply")


def test_a_gzip_bomb_is_refused_with_bounded_memory(tmp_path: Any) -> None:
    # 2 GiB of spaces in 2 MB: gzip members may be concatenated, so one compressed member
    # of 64 MiB repeated 32 times is a valid gzip file.
    chunk = zlib.compressobj(9, zlib.DEFLATED, 31)
    member = b"".join(chunk.compress(b" " * (1 << 20)) for _ in range(64)) + chunk.flush()
    bomb = tmp_path / "bomb.json.gz"
    with open(bomb, "wb") as f:
        for _ in range(32):
            f.write(member)
    assert os.path.getsize(bomb) < 4 << 20
    one_line(heap("show", str(bomb)), "show", "larger than")


def test_a_huge_file_is_refused_without_reading_it(tmp_path: Any) -> None:
    sparse = tmp_path / "sparse.json"
    with open(sparse, "wb") as f:
        f.truncate(3 << 30)  # a hole: no disk used
    one_line(heap("show", str(sparse)), "show", "larger than")


def test_devices_and_folders_are_refused(tmp_path: Any) -> None:
    one_line(heap("show", "/dev/zero"), "show", "not a regular file")
    folder = tmp_path / "folder"
    folder.mkdir()
    one_line(heap("show", str(folder)), "show", "not a regular file")


def test_a_fifo_is_refused_without_blocking(tmp_path: Any) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    # No writer ever opens the FIFO: a reader that opens it without O_NONBLOCK never returns.
    one_line(heap("show", str(fifo)), "show", "not a regular file")
    good = write(tmp_path / "good.json", document())
    one_line(heap("diff", good, str(fifo)), "diff", "not a regular file")


def test_version_must_be_a_whole_number(tmp_path: Any) -> None:
    for bad in (True, 0, -1, "1", 1.0, None):
        path = write(tmp_path / "v.json", document(version=bad))
        one_line(heap("show", path), "show", "format version")


def test_a_reader_that_closes_the_pipe_early_ends_it_quietly(tmp_path: Any) -> None:
    # Far more output than a pipe buffers, so writes hit the closed pipe.
    types = [_type(f"mod.Type{i}", i + 1, 64 * (i + 1)) for i in range(20_000)]
    old = write(tmp_path / "old.json", document(types=types[:10]))
    new = write(tmp_path / "new.json", document(types=types))
    for args in (["show", new, "--top", "20000"], ["show", new, "--json"], ["diff", old, new]):
        child = subprocess.Popen(
            [sys.executable, "-m", "tracer", "heap", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=subprocess_env(),
            preexec_fn=_limit_memory,
        )
        assert child.stdout is not None and child.stderr is not None
        first = child.stdout.readline()
        assert first
        child.stdout.close()  # as `| head -1` does
        err = child.stderr.read().decode(errors="backslashreplace")
        status = child.wait(timeout=TIMEOUT)
        assert err == "", err
        assert status == 0, args


ESCAPES = "\x1b[2J\x1b]0;owned\x07\r\x9b31m"


def test_control_characters_in_a_file_never_reach_the_terminal(tmp_path: Any) -> None:
    evil = f"mod.Evil{ESCAPES}\nforged line"
    types = [_type(evil, 500, 50_000), _type("builtins.dict", 10, 640)]
    sites = {
        "source": "tracing",
        "taken_at": 2,
        "frames": 1,
        "sites": [
            {
                "file": f"app{ESCAPES}.py",
                "line": 3,
                "code": "x\x1b[1m",
                "size_bytes": 9,
                "size": "9 bytes",
                "count": 1,
            }
        ],
    }
    old = write(tmp_path / "old.json", document(types=types[1:]))
    new = write(
        tmp_path / "new.json",
        document(
            types=types,
            process={"service": f"svc{ESCAPES}", "pid": 1, "host": "h\x1b[0m", "python": "3"},
            leak={"reason": f"grew{ESCAPES}"},
            containers=[
                {
                    "what": "list",
                    "len": 1,
                    "size_bytes": 2000,
                    "size": "2 kb",
                    "held_by": f"mod.X{ESCAPES}",
                }
            ],
            allocation_sites=sites,
        ),
    )
    for args in (["show", new], ["diff", old, new]):
        done = heap(*args)
        assert done.returncode == 0, done.stderr
        for raw in ("\x1b", "\x07", "\r", "\x9b"):
            assert raw not in done.stdout, (args, raw)
        assert not any(line.startswith("forged line") for line in done.stdout.splitlines())
        assert "mod.Evil\\x1b[2J" in done.stdout and "\\nforged line" in done.stdout
    named = tmp_path / f"bad{ESCAPES}.json"
    named.write_bytes(b"not json")
    line = one_line(heap("show", str(named)), "show", "is not a heap snapshot")
    assert "\x1b" not in line and "\\x1b" in line
