"""The heap snapshot folder and files against another user of the machine: a default folder
that is not this user's own and private is refused with one warning, and links planted where a
snapshot is written are never followed."""

from __future__ import annotations

import importlib
import logging
import os
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tracer
from tests.memory.heap_helpers import Discard

snapshot_module = importlib.import_module("tracer.memory.snapshot")
load = importlib.import_module("tracer.memory.cli").load

LEAK = {"start": 1.0, "end": 2.0, "growth": 1000, "reason": "heap growth (test)"}
NOBODY = 65534
as_root = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0, reason="chown to another user needs root"
)


@pytest.fixture
def tmpdir_(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A system temporary directory of the test's own, as the default folder's parent."""
    base = tmp_path / "tmp"
    base.mkdir()
    base.chmod(0o1777)
    monkeypatch.setattr(tempfile, "tempdir", str(base))
    yield base


def _install(**options: Any) -> None:
    tracer.install(
        app_name="folder",
        reporter=Discard(),
        memory_watch=False,
        heap_snapshot_signal=None,
        heap_snapshot_min_interval=0.0,
        **options,
    )


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


@as_root
def test_a_default_folder_of_another_user_is_refused_with_one_warning(
    tmpdir_: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmpdir_ / "tracer-heap"
    folder.mkdir()
    folder.chmod(0o777)
    os.chown(folder, NOBODY, NOBODY)
    _install()
    with caplog.at_level(logging.WARNING, logger="tracer"):
        assert snapshot_module.on_leak(LEAK) is None
        assert snapshot_module.on_leak(LEAK) is None
    assert os.listdir(folder) == []
    said = _warnings(caplog)
    assert len(said) == 1, said
    assert str(folder) in said[0] and f"uid {NOBODY}" in said[0]
    assert "heap_snapshot_dir" in said[0]
    # Asked for directly, the same answer is an error.
    with pytest.raises(OSError, match="uid 65534"):
        snapshot_module.snapshot()
    assert os.listdir(folder) == []


def test_a_default_folder_open_to_others_is_refused(
    tmpdir_: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmpdir_ / "tracer-heap"
    folder.mkdir()
    folder.chmod(0o777)
    _install()
    with caplog.at_level(logging.WARNING, logger="tracer"):
        assert snapshot_module.on_leak(LEAK) is None
    assert os.listdir(folder) == []
    said = _warnings(caplog)
    assert len(said) == 1 and "0777" in said[0], said


def test_a_default_folder_that_is_a_link_is_refused(tmpdir_: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "chosen-by-someone-else"
    elsewhere.mkdir(mode=0o700)
    os.symlink(elsewhere, tmpdir_ / "tracer-heap")
    _install()
    with pytest.raises(OSError, match="link"):
        snapshot_module.snapshot()
    assert snapshot_module.on_leak(LEAK) is None
    assert os.listdir(elsewhere) == []


def test_the_default_folder_is_created_private_and_used(tmpdir_: Path) -> None:
    _install()
    path = snapshot_module.snapshot()
    folder = tmpdir_ / "tracer-heap"
    assert os.path.dirname(path) == str(folder)
    assert stat.S_IMODE(os.lstat(folder).st_mode) == 0o700
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
    assert load(path)["reason"] == "manual"


def test_a_configured_folder_others_can_write_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(0o777)
    _install(heap_snapshot_dir=str(folder))
    with caplog.at_level(logging.WARNING, logger="tracer"):
        assert snapshot_module.on_leak(LEAK) is None
    assert os.listdir(folder) == []
    assert len(_warnings(caplog)) == 1


def test_a_configured_folder_readable_by_others_is_used(tmp_path: Path) -> None:
    folder = tmp_path / "team"
    folder.mkdir()
    folder.chmod(0o755)
    _install(heap_snapshot_dir=str(folder))
    path = snapshot_module.on_leak(LEAK)
    assert path is not None and os.path.dirname(path) == str(folder)


def test_a_link_planted_at_the_temporary_name_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    target = tmp_path / "out" / "snap.json.gz"
    target.parent.mkdir()
    planted = f"{target}.{os.getpid()}.{threading.get_ident()}.tmp"
    os.symlink(victim, planted)
    path = snapshot_module.snapshot(str(target))
    assert victim.read_bytes() == b"precious"
    assert not os.path.islink(path) and load(path)["format"] == "tracer-heap-snapshot"
    assert sorted(os.listdir(target.parent)) == ["snap.json.gz"]


def test_a_link_planted_at_the_file_name_is_replaced_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    target = tmp_path / "snap.json"
    os.symlink(victim, target)
    snapshot_module.snapshot(str(target))
    assert victim.read_bytes() == b"precious"
    assert not os.path.islink(target)
