"""The heap snapshot signal: requests in flight, the handler that was there, uninstall, fork."""

from __future__ import annotations

import importlib
import os
import signal
import threading
from types import FrameType
from typing import Any

import pytest

import tracer
from tests.conftest import assert_child_prints_ok
from tests.memory.heap_helpers import Discard, service, wait_for_file

snapshot_module = importlib.import_module("tracer.memory.snapshot")
load = importlib.import_module("tracer.memory.cli").load


def test_sigusr2_during_a_request_in_flight(tmp_path: Any) -> None:
    with service(str(tmp_path)) as svc:
        answer: list[str] = []
        slow = threading.Thread(target=lambda: answer.append(svc.get("/slow?ms=1500")))
        slow.start()
        try:
            for _ in range(500):
                if svc.get("/inflight") == "1":
                    break
                threading.Event().wait(0.01)
            else:
                pytest.fail("the slow request never started")
            path = svc.signal_snapshot()
            # Still in flight: the snapshot was taken while the request waited.
            assert svc.get("/inflight") == "1"
        finally:
            slow.join(30)
        assert answer == ["slow 1500"]
        # The service's own SIGUSR2 handler, installed before tracer, ran too.
        assert svc.get("/previous") == "1"
    doc = load(path)
    assert doc["reason"] == "signal" and doc["process"]["pid"] == svc.pid


def test_signal_in_process_snapshots_and_calls_the_previous_handler(tmp_path: Any) -> None:
    calls: list[int] = []

    def previous(signum: int, frame: FrameType | None) -> None:
        calls.append(signum)

    old = signal.signal(signal.SIGUSR2, previous)
    try:
        folder = str(tmp_path / "snaps")
        tracer.install(
            app_name="sig", reporter=Discard(), memory_watch=False, heap_snapshot_dir=folder
        )
        ours = signal.getsignal(signal.SIGUSR2)
        assert ours is not previous
        os.kill(os.getpid(), signal.SIGUSR2)
        path = wait_for_file(folder, set())
        assert calls == [signal.SIGUSR2]
        assert load(path)["process"]["service"] == "sig"
        tracer.uninstall()
        assert signal.getsignal(signal.SIGUSR2) is previous
    finally:
        signal.signal(signal.SIGUSR2, old)


@pytest.mark.parametrize("before", [signal.SIG_DFL, signal.SIG_IGN])
def test_uninstall_restores_the_default_and_ignore_dispositions(before: Any) -> None:
    old = signal.signal(signal.SIGUSR2, before)
    try:
        tracer.install(reporter=Discard(), memory_watch=False)
        assert signal.getsignal(signal.SIGUSR2) is snapshot_module._on_signal
        tracer.uninstall()
        assert signal.getsignal(signal.SIGUSR2) is before
    finally:
        signal.signal(signal.SIGUSR2, old)


def test_a_handler_set_after_ours_is_left_in_place(tmp_path: Any) -> None:
    def theirs(signum: int, frame: FrameType | None) -> None:
        pass

    old = signal.getsignal(signal.SIGUSR2)
    try:
        tracer.install(reporter=Discard(), memory_watch=False)
        signal.signal(signal.SIGUSR2, theirs)
        tracer.uninstall()
        assert signal.getsignal(signal.SIGUSR2) is theirs
    finally:
        signal.signal(signal.SIGUSR2, old)


def test_no_signal_option_installs_nothing() -> None:
    before = signal.getsignal(signal.SIGUSR2)
    tracer.install(reporter=Discard(), memory_watch=False, heap_snapshot_signal=None)
    assert signal.getsignal(signal.SIGUSR2) is before


def test_with_the_default_action_sigusr2_no_longer_ends_the_process(tmp_path: Any) -> None:
    folder = str(tmp_path / "snaps")
    assert_child_prints_ok(
        f"""
import os, signal
import tracer
from tests.memory.heap_helpers import Discard, wait_for_file
assert signal.getsignal(signal.SIGUSR2) is signal.SIG_DFL
tracer.install(reporter=Discard(), memory_watch=False, heap_snapshot_dir={folder!r})
os.kill(os.getpid(), signal.SIGUSR2)
wait_for_file({folder!r}, set())
tracer.uninstall()
assert signal.getsignal(signal.SIGUSR2) is signal.SIG_DFL
print("ok")
"""
    )


def test_a_forked_child_takes_its_own_snapshots(tmp_path: Any) -> None:
    folder = str(tmp_path / "snaps")
    assert_child_prints_ok(
        f"""
import os, signal, warnings
import tracer
from tests.memory.heap_helpers import Discard, wait_for_file
warnings.simplefilter("ignore", DeprecationWarning)
tracer.install(reporter=Discard(), memory_watch=False, heap_snapshot_dir={folder!r})
pid = os.fork()
if pid == 0:
    status = 1
    try:
        os.kill(os.getpid(), signal.SIGUSR2)
        path = wait_for_file({folder!r}, set(), timeout=30)
        status = 0 if f"-{{os.getpid()}}-" in os.path.basename(path) else 3
    finally:
        os._exit(status)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
print("ok")
"""
    )


def test_uninstall_off_the_main_thread_stops_the_thread_and_chains_only() -> None:
    calls: list[int] = []
    old = signal.signal(signal.SIGUSR2, lambda signum, frame: calls.append(signum))
    try:
        tracer.install(reporter=Discard(), memory_watch=False)
        thread = snapshot_module._thread
        assert thread is not None and thread.is_alive()
        off_main = threading.Thread(target=tracer.uninstall)
        off_main.start()
        off_main.join(30)
        thread.join(30)
        assert not thread.is_alive()
        assert signal.getsignal(signal.SIGUSR2) is snapshot_module._on_signal
        os.kill(os.getpid(), signal.SIGUSR2)
        assert calls == [signal.SIGUSR2]
        # Installed again from the main thread, then put back for good.
        tracer.install(reporter=Discard(), memory_watch=False)
        assert snapshot_module._thread is not None and snapshot_module._thread.is_alive()
        tracer.uninstall()
        assert signal.getsignal(signal.SIGUSR2) is not snapshot_module._on_signal
    finally:
        signal.signal(signal.SIGUSR2, old)


@pytest.mark.parametrize("value", ["SIG_IGN", "SIG_DFL", "SIG_SETMASK", "SIGKILL", "SIGSEGV", 12])
def test_a_signal_a_snapshot_must_not_take_is_a_config_error(value: object) -> None:
    with pytest.raises(tracer.ConfigError, match="heap_snapshot_signal"):
        tracer.install(app_name="sig", heap_snapshot_signal=value)


def test_a_trace_must_end() -> None:
    with pytest.raises(ValueError, match="at most"):
        tracer.memory.trace(float("inf"))


def test_a_signal_storm_writes_one_snapshot_per_interval(tmp_path: Any) -> None:
    # The default interval: a storm of real signals, sent while the first census runs and
    # after it ended, gives one file; the rest are refused (and said so once).
    folder = str(tmp_path / "snaps")
    assert_child_prints_ok(
        f"""
import logging, os, signal, threading
import tracer
from tests.memory.heap_helpers import Discard, SNAPSHOT_NAME, wait_for_file

refused = threading.Event()
lines = []

class Watch(logging.Handler):
    def emit(self, record):
        message = record.getMessage()
        if "heap_snapshot_signal_interval" in message:
            lines.append(message)
            refused.set()

log = logging.getLogger("tracer")
log.addHandler(Watch())
log.setLevel(logging.INFO)
tracer.install(
    reporter=Discard(), memory_watch=False, heap_snapshot_dir={folder!r},
    heap_snapshot_max_files=1000,
)
for _ in range(300):
    os.kill(os.getpid(), signal.SIGUSR2)
wait_for_file({folder!r}, set())
for _ in range(300):
    os.kill(os.getpid(), signal.SIGUSR2)
files = lambda: sorted(n for n in os.listdir({folder!r}) if SNAPSHOT_NAME.match(n))
assert refused.wait(30), f"no signal was refused; {{len(files())}} snapshots"
tracer.uninstall()
assert len(files()) == 1, files()
assert len(lines) == 1, lines
print("ok")
"""
    )


def test_a_signal_after_the_interval_writes_the_next_snapshot(tmp_path: Any) -> None:
    folder = str(tmp_path / "snaps")
    assert_child_prints_ok(
        f"""
import os, signal, time
import tracer
from tests.memory.heap_helpers import Discard, SNAPSHOT_NAME

tracer.install(
    reporter=Discard(), memory_watch=False, heap_snapshot_dir={folder!r},
    heap_snapshot_max_files=1000, heap_snapshot_signal_interval=0.5,
)
def files():
    if not os.path.isdir({folder!r}):
        return []
    return sorted(n for n in os.listdir({folder!r}) if SNAPSHOT_NAME.match(n))
# One signal every 20 ms (bounded in count) until a second file is there.
for _ in range(1500):
    os.kill(os.getpid(), signal.SIGUSR2)
    if len(files()) >= 2:
        break
    time.sleep(0.02)
tracer.uninstall()
assert 2 <= len(files()) <= 3, files()
print("ok")
"""
    )


@pytest.mark.parametrize(
    "value", ["SIGCHLD", "SIGINT", "SIGTERM", "SIGPIPE", "SIGALRM", "SIGWINCH", "SIGHUP", "winch"]
)
def test_a_signal_that_fires_routinely_is_a_config_error(value: str) -> None:
    with pytest.raises(tracer.ConfigError, match=r"heap_snapshot_signal.*routinely"):
        tracer.install(app_name="sig", heap_snapshot_signal=value)


@pytest.mark.parametrize("value", [-1, "5", float("nan"), True])
def test_the_signal_interval_is_validated(value: object) -> None:
    with pytest.raises(tracer.ConfigError, match="heap_snapshot_signal_interval"):
        tracer.install(app_name="sig", heap_snapshot_signal_interval=value)


def test_the_signal_interval_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from tracer.config import load

    monkeypatch.setenv("TRACE_HEAP_SNAPSHOT_SIGNAL_INTERVAL", "2.5")
    assert load(env=dict(os.environ)).heap_snapshot_signal_interval == 2.5
    monkeypatch.setenv("TRACE_HEAP_SNAPSHOT_SIGNAL_INTERVAL", "soon")
    with pytest.raises(tracer.ConfigError, match="TRACE_HEAP_SNAPSHOT_SIGNAL_INTERVAL"):
        load(env=dict(os.environ))
