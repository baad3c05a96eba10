from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tracer.delivery.spool import Spool, SpoolError, default_path

from .helpers import wait_child

REPO = Path(__file__).resolve().parents[2]


def run_python(code: str, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str]) -> str:
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    return out


def test_put_take_ack(spool_path: Path) -> None:
    with Spool(spool_path) as spool:
        assert spool.put(b"first", 2) == 0
        assert spool.put(b"second", 3) == 0
        assert spool.pending() == (2, 5)
        assert spool.size_bytes() == len(b"first") + len(b"second")

        taken = spool.take(limit=10)
        assert [(payload, count) for _, payload, count in taken] == [(b"first", 2), (b"second", 3)]
        assert spool.take() == []  # leased

        spool.ack([taken[0][0]])
        assert spool.pending() == (1, 3)
        spool.ack([taken[1][0], 999_999])
        assert spool.pending() == (0, 0)
        assert spool.size_bytes() == 0


def test_take_is_oldest_first_and_respects_limit(spool_path: Path) -> None:
    with Spool(spool_path) as spool:
        for i in range(5):
            spool.put(f"b{i}".encode(), 1)
        assert [p for _, p, _ in spool.take(2)] == [b"b0", b"b1"]
        assert [p for _, p, _ in spool.take(2)] == [b"b2", b"b3"]
        assert spool.take(0) == []


def test_release_returns_rows_to_the_queue(spool_path: Path) -> None:
    with Spool(spool_path) as spool:
        spool.put(b"a", 1)
        spool.put(b"b", 1)
        taken = spool.take(2)
        spool.release([taken[1][0]])
        assert [p for _, p, _ in spool.take(5)] == [b"b"]


def test_release_leaves_another_owners_lease_alone(spool_path: Path) -> None:
    with Spool(spool_path) as first, Spool(spool_path) as second:
        first.put(b"a", 1)
        ((row_id, _, _),) = first.take()
        second.release([row_id])
        assert second.take() == []
        first.release([row_id])
        assert [p for _, p, _ in second.take()] == [b"a"]


def test_expired_leases_become_takeable_again(spool_path: Path) -> None:
    with Spool(spool_path, lease_seconds=0) as spool:
        spool.put(b"a", 1)
        first = spool.take()
        assert spool.take() == first


def test_cap_evicts_oldest_and_counts_spans(spool_path: Path) -> None:
    with Spool(spool_path, max_bytes=100) as spool:
        assert spool.put(b"a" * 40, 3) == 0
        assert spool.put(b"b" * 40, 4) == 0
        assert spool.put(b"c" * 40, 5) == 3
        assert spool.pending() == (2, 9)
        assert spool.size_bytes() == 80
        # Room for 90 bytes means both older batches go.
        assert spool.put(b"d" * 90, 6) == 9
        assert [(p[:1], c) for _, p, c in spool.take(5)] == [(b"d", 6)]


def test_payload_larger_than_the_cap_is_refused(spool_path: Path) -> None:
    with Spool(spool_path, max_bytes=100) as spool:
        spool.put(b"a" * 10, 1)
        assert spool.put(b"x" * 101, 7) == 7
        assert spool.pending() == (1, 1)


def test_leased_batches_are_not_evicted(spool_path: Path) -> None:
    with Spool(spool_path, max_bytes=100) as spool:
        spool.put(b"a" * 40, 1)
        spool.put(b"b" * 40, 2)
        leased = spool.take()  # "a" is being sent right now
        assert spool.put(b"c" * 40, 3) == 2  # so "b" goes instead
        # No room can be made without the leased batch: the new one is refused.
        assert spool.put(b"d" * 70, 4) == 4
        assert spool.pending() == (2, 4)
        spool.ack([leased[0][0]])
        assert [p[:1] for _, p, _ in spool.take(5)] == [b"c"]


def test_persists_across_reopen(spool_path: Path) -> None:
    spool = Spool(spool_path)
    spool.put(b"kept", 4)
    spool.close()
    with Spool(spool_path) as reopened:
        assert reopened.pending() == (1, 4)
        assert [(p, c) for _, p, c in reopened.take()] == [(b"kept", 4)]


def test_close_releases_leases(spool_path: Path) -> None:
    with Spool(spool_path) as other:
        spool = Spool(spool_path)
        spool.put(b"a", 1)
        assert spool.take() != []
        assert other.take() == []
        spool.close()
        assert [p for _, p, _ in other.take()] == [b"a"]


def test_closed_spool_raises(spool_path: Path) -> None:
    spool = Spool(spool_path)
    spool.close()
    spool.close()
    with pytest.raises(SpoolError, match="closed"):
        spool.put(b"a", 1)


def test_persists_across_processes(spool_path: Path) -> None:
    writer = run_python(
        """
        import sys
        from tracer.delivery.spool import Spool
        with Spool(sys.argv[1]) as spool:
            for i in range(3):
                spool.put(b"from child %d" % i, i + 1)
        """,
        str(spool_path),
    )
    finish(writer)
    with Spool(spool_path) as spool:
        assert spool.pending() == (3, 6)
        assert [p for _, p, _ in spool.take(5)] == [
            b"from child 0",
            b"from child 1",
            b"from child 2",
        ]


def test_concurrent_take_from_two_processes_never_shares_a_row(spool_path: Path) -> None:
    total = 300
    with Spool(spool_path) as spool:
        for i in range(total):
            spool.put(str(i).encode(), 1)
    go = spool_path.parent / "go"
    code = """
        import json, os, sys, time
        from tracer.delivery.spool import Spool
        path, go, ready = sys.argv[1:]
        seen = []
        with Spool(path) as spool:
            open(ready, "w").close()
            while not os.path.exists(go):
                time.sleep(0.002)
            while True:
                rows = spool.take(limit=3)
                if not rows:
                    break
                seen.extend(int(payload) for _, payload, _ in rows)
                # Hold the lease a moment, as a real send would, so the workers interleave.
                time.sleep(0.001)
                spool.ack([row_id for row_id, _, _ in rows])
        print(json.dumps(seen))
    """
    ready = [spool_path.parent / f"ready{i}" for i in range(2)]
    workers = [run_python(code, str(spool_path), str(go), str(r)) for r in ready]
    deadline = time.monotonic() + 20
    while not all(r.exists() for r in ready) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    results = [json.loads(finish(worker)) for worker in workers]
    assert set(results[0]).isdisjoint(results[1])
    assert sorted(results[0] + results[1]) == list(range(total))
    with Spool(spool_path) as spool:
        assert spool.pending() == (0, 0)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_opens_its_own_connection(spool_path: Path) -> None:
    spool = Spool(spool_path)
    spool.put(b"parent", 1)
    parent_conn = spool._conn
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            spool.put(b"child", 2)
            rows = spool.take(5)
            own = spool._conn is not None and spool._conn is not parent_conn
            if own and [p for _, p, _ in rows] == [b"parent", b"child"]:
                spool.release([r for r, _, _ in rows])
                code = 0
        finally:
            os._exit(code)
    assert wait_child(pid) == 0
    # The parent's connection still works and sees the child's batch.
    assert spool._conn is parent_conn
    assert spool.pending() == (2, 3)
    assert [p for _, p, _ in spool.take(5)] == [b"parent", b"child"]
    spool.close()


def test_file_is_private_to_its_owner(spool_path: Path) -> None:
    with Spool(spool_path):
        pass
    assert stat.S_IMODE(spool_path.stat().st_mode) == 0o600


def test_corrupt_file_is_a_clear_error(spool_path: Path) -> None:
    spool_path.parent.mkdir(parents=True)
    spool_path.write_bytes(b"this is not a database" * 200)
    with pytest.raises(SpoolError, match="cannot open spool"):
        Spool(spool_path)


def test_foreign_sqlite_database_is_refused(spool_path: Path) -> None:
    spool_path.parent.mkdir(parents=True)
    conn = sqlite3.connect(spool_path)
    conn.execute("CREATE TABLE users (name TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(SpoolError, match="not a tracer spool"):
        Spool(spool_path)


def test_bad_arguments(spool_path: Path) -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        Spool(spool_path, max_bytes=0)


def test_default_path_uses_trace_spool_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TRACE_SPOOL_DIR", str(tmp_path))
    assert default_path("checkout") == tmp_path / "checkout.sqlite"


def test_default_path_falls_back_to_the_cache_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("TRACE_SPOOL_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_path("api") == tmp_path / ".cache" / "tracer" / "spool" / "api.sqlite"


def test_default_path_sanitises_the_service_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TRACE_SPOOL_DIR", str(tmp_path))
    unsafe = default_path("../etc/pass wd")
    assert unsafe.parent == tmp_path
    assert "/" not in unsafe.name and " " not in unsafe.name
    assert not unsafe.name.startswith(".")
    # Different originals never share a file, even when they sanitise alike.
    assert default_path("a b") != default_path("a_b")
    assert default_path("").parent == tmp_path
    with Spool(default_path("weird/name")) as spool:
        assert spool.put(b"x", 1) == 0


def test_many_batches_many_ids(spool_path: Path) -> None:
    # More ids than one SQL statement binds at once.
    with Spool(spool_path) as spool:
        for i in range(1200):
            spool.put(b"%d" % i, 1)
        rows = spool.take(limit=1200)
        assert len(rows) == 1200
        spool.release([r for r, _, _ in rows[:700]])
        assert len(spool.take(limit=2000)) == 700
        spool.ack([r for r, _, _ in rows])
        assert spool.pending() == (0, 0)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_while_another_thread_holds_the_lock(spool_path: Path) -> None:
    spool = Spool(spool_path)
    with spool._lock:
        pid = os.fork()
        if pid == 0:  # child
            code = 1
            try:
                if spool.put(b"child", 1) == 0 and spool.pending() == (1, 1):
                    code = 0
                spool.close()
            finally:
                os._exit(code)
    assert wait_child(pid) == 0
    assert [p for _, p, _ in spool.take()] == [b"child"]
    spool.close()
