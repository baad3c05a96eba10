"""Regression tests for delivery faults: long outages, spool replay, reporters that raise
BaseExceptions or call back with odd values, oversized batches, a second SIGINT at exit, hung
reporters, a locked or corrupt spool, small API edges.

Most cases run tracer in a child process (tests/delivery/faults_child.py) against real
listeners on 127.0.0.1, real sqlite files and real signals; the parent reads what the child
prints. Every wait is bounded and every child is killed if it outlives its test.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import math
import os
import queue
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

import tracer
from reporters.memory import MemoryReporter
from tests.conftest import refused_port, subprocess_env
from tests.support.servers import HttpServer, QuietHandler
from tests.support.waiting import DEADLINE
from tracer.delivery.spool import Spool

from .faults_child import LOG_MARKER
from .helpers import LineServer, strict_loads

# -- helpers --------------------------------------------------------------------------------------


def assert_ledger(stats: dict[str, Any]) -> None:
    """Every span created is delivered, dropped, spooled or still pending: none unaccounted."""
    accounted = stats["delivered"] + stats["dropped"] + stats["spooled"] + stats["pending"]
    assert stats["created"] == accounted, f"ledger broken: {stats}"


def spool_spans(result: dict[str, Any]) -> int:
    """The spans in the spool as the child read it (it reports why when it could not)."""
    pending = result["spool"]
    assert isinstance(pending, list), f"the child could not read the spool: {pending}"
    return int(pending[1])


class Child:
    """A child Python running one scenario of faults_child; its stdout read as JSON lines."""

    def __init__(self, scenario: str, **args: Any) -> None:
        self.scenario = scenario
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.delivery.faults_child", scenario, json.dumps(args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=subprocess_env(),
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._err: list[str] = []
        self._readers = [
            threading.Thread(target=self._read_out, daemon=True),
            threading.Thread(target=self._read_err, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._err.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self._err)

    def read(self, timeout: float) -> dict[str, Any]:
        """The next JSON line the child printed, waiting at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self._lines.get(timeout=max(left, 0.001))
            except queue.Empty:
                raise AssertionError(
                    f"{self.scenario}: nothing printed within {timeout} s; stderr:\n"
                    f"{self.stderr[-4000:]}"
                ) from None
            if line is None:
                self._lines.put(None)
                self.proc.wait(5)
                raise AssertionError(
                    f"{self.scenario}: exited ({self.proc.returncode}) before printing; "
                    f"stderr:\n{self.stderr[-4000:]}"
                )
            if line.startswith("{"):
                parsed: dict[str, Any] = json.loads(line)
                return parsed

    def tell(self, command: str = "go") -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def wait(self, timeout: float) -> int | None:
        """The exit code; None (and the child killed) when it did not exit within ``timeout``."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None
        for reader in self._readers:
            reader.join(5)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for reader in self._readers:
            reader.join(5)

    def __enter__(self) -> Child:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def read_span_ids(listener: LineServer, want: set[str], limit: float) -> list[str]:
    """Span ids of the lines the listener got, until all of ``want`` came or ``limit`` passed."""
    got: list[str] = []
    deadline = time.monotonic() + limit
    while not want <= set(got) and time.monotonic() < deadline:
        try:
            got.append(strict_loads(listener.lines.get(timeout=0.1))["span_id"])
        except queue.Empty:
            pass
    return got


def warnings_naming(stderr: str, path: Path) -> list[str]:
    """The log records of level WARNING or above in a child's stderr that mention ``path``."""
    records = stderr.split(LOG_MARKER)[1:]
    levels = ("WARNING", "ERROR", "CRITICAL")
    return [r for r in records if (r.split() or [""])[0] in levels and str(path) in r]


class OutageSink:
    """An http.server receiver that answers 503 for ``outage`` seconds from its first request,
    then 200; it keeps the span ids of the batches it accepted."""

    def __init__(self, outage: float) -> None:
        self.outage = outage
        self.first: float | None = None
        self.refused = 0
        self.accepted: list[str] = []
        self._lock = threading.Lock()
        sink = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                now = time.monotonic()
                with sink._lock:
                    if sink.first is None:
                        sink.first = now
                    down = now - sink.first < sink.outage
                    if down:
                        sink.refused += 1
                    else:
                        if self.headers.get("Content-Encoding") == "gzip":
                            raw = gzip.decompress(raw)
                        body = strict_loads(raw)
                        sink.accepted.extend(s["span_id"] for s in body["spans"])
                status, reply = (503, b"down for maintenance") if down else (200, b'{"ok":true}')
                self.reply(status, body=reply)

        self.http = HttpServer(Handler)
        self.url = f"{self.http.url}/ingest"

    def close(self) -> None:
        self.http.close()


# -- 1. flush rides out an outage -----------------------------------------------------------------


def _ride_out(outage: float, tmp_path: Path) -> None:
    sink = OutageSink(outage)
    try:
        with Child(
            "http_outage",
            url=sink.url,
            spool_path=str(tmp_path / "outage.sqlite"),
            n=1000,
            seconds=2.0,
            flush_timeout=40.0,
        ) as child:
            result = child.read(timeout=70)
            child.wait(30)
    finally:
        sink.close()
    stats = result["stats"]
    assert result["ok"] is True, stats
    assert stats["delivered"] == 1000, stats
    assert stats["spooled"] == 0, stats
    assert_ledger(stats)
    assert sink.refused > 0  # the outage was real
    assert len(set(sink.accepted)) == 1000
    assert set(sink.accepted) == set(result["ids"])


def test_flush_rides_out_a_5s_outage(tmp_path: Path) -> None:
    """flush(40) keeps retrying through a 5 s run of 503s instead of spooling after max_retries,
    in real time (outages of minutes are played on a simulated clock in test_schedule.py)."""
    _ride_out(5.0, tmp_path)


# -- 2. the spool is replayed without new traffic -------------------------------------------------


def test_spool_replayed_after_outage_without_new_spans(tmp_path: Path) -> None:
    """After an outage the spool drains on its own, no new span needed, and long before 20
    batches at one per flush_interval (30 s) would take."""
    listener = LineServer()
    listener.pause()
    try:
        with Child(
            "replay",
            port=listener.port,
            spool_path=str(tmp_path / "replay.sqlite"),
            n=1000,
            replay_timeout=30.0,
        ) as child:
            down = child.read(timeout=60)
            assert down["phase"] == "down"
            assert_ledger(down["stats"])
            assert down["stats"]["spooled"] > 0, down["stats"]
            listener.resume()
            child.tell("resumed")
            after = child.read(timeout=60)
            child.wait(30)
        made = set(down["ids"])
        got = read_span_ids(listener, made, limit=15)
    finally:
        listener.close()
    stats = after["stats"]
    assert stats["delivered"] == 1000, stats
    assert set(got) == made, f"{len(made - set(got))} of 1000 spans never reached Logstash"
    assert stats["spooled"] == 0, stats
    assert_ledger(stats)
    assert down["ok"] is False  # flush(3) while Logstash refused cannot have delivered


# -- 3. reporters that raise BaseExceptions -------------------------------------------------------


def _flaky(tmp_path: Path, kind: str, **overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "kind": kind,
        "fail_calls": 1,
        "n": 20,
        "batch_size": 10,
        "send_timeout": 1.0,
        "max_retries": 5,
        "flush_timeout": 20.0,
        "spool_path": str(tmp_path / "flaky.sqlite"),
    }
    args.update(overrides)
    with Child("flaky", **args) as child:
        result = child.read(timeout=60)
        child.wait(30)
    return result


def _assert_all_delivered(result: dict[str, Any]) -> None:
    stats = result["stats"]
    assert stats["delivered"] == stats["created"] == len(result["ids"]), stats
    assert set(result["ids"]) <= set(result["delivered_ids"])
    assert stats["spooled"] == 0 and stats["pending"] == 0, stats
    assert_ledger(stats)
    assert result["ok"] is True


def test_reporter_raising_system_exit_does_not_stop_delivery(tmp_path: Path) -> None:
    result = _flaky(tmp_path, "system_exit")
    assert result["calls"] > 1, "send was never called again after it raised SystemExit"
    _assert_all_delivered(result)


def test_reporter_raising_keyboard_interrupt_does_not_stop_delivery(tmp_path: Path) -> None:
    result = _flaky(tmp_path, "keyboard_interrupt")
    assert result["calls"] > 1, "send was never called again after it raised KeyboardInterrupt"
    _assert_all_delivered(result)


# -- 4. the ledger never loses a batch ------------------------------------------------------------


def test_error_whose_str_raises_loses_no_batch(tmp_path: Path) -> None:
    """callback(err) where str(err) raises, on the first two sends (three batches)."""
    result = _flaky(tmp_path, "unprintable", fail_calls=2, n=30, send_timeout=2.0)
    assert_ledger(result["stats"])
    _assert_all_delivered(result)


def test_error_whose_retry_after_raises_loses_no_batch(tmp_path: Path) -> None:
    """callback(err) where reading err.retry_after raises, on the first two sends."""
    result = _flaky(tmp_path, "retry_after_raises", fail_calls=2, n=30, send_timeout=2.0)
    assert_ledger(result["stats"])
    _assert_all_delivered(result)


@pytest.mark.parametrize("kind", ["string", "number", "twice"])
def test_odd_callback_values_lose_no_batch(tmp_path: Path, kind: str) -> None:
    """callback("failed"), callback(42), or callback(error) then callback(None), on the first
    three sends of a single batch (more than max_retries=1 allows), then normal deliveries."""
    result = _flaky(tmp_path, kind, fail_calls=3, n=10, max_retries=1, send_timeout=2.0)
    _assert_all_delivered(result)
    assert result["calls"] > 3


def test_batch_larger_than_the_spool_is_dropped_counted_not_spooled(tmp_path: Path) -> None:
    """Batches (~12 KB compressed) that cannot fit in a 4 KB spool, a reporter that never
    delivers: they are dropped, counted by a reason, and not also counted as spooled."""
    with Child(
        "oversize", spool_path=str(tmp_path / "small.sqlite"), n=6, batch_size=2, max_retries=0
    ) as child:
        result = child.read(timeout=60)
        child.wait(30)
    stats = result["stats"]
    assert spool_spans(result) == 0
    assert stats["spooled"] == 0, f"counted as spooled while the spool holds nothing: {stats}"
    assert stats["created"] == 6
    assert stats["dropped"] == stats["created"], stats
    assert sum(stats["dropped_by_reason"].values()) == stats["dropped"], stats
    assert_ledger(stats)


@contextlib.contextmanager
def unanswered_port() -> Iterator[int]:
    """A 127.0.0.1 port where connecting hangs until the client's timeout.

    A listener that never accepts, its accept queue filled: the kernel drops further SYNs, so
    every connection attempt fails only once the reporter's timeout runs out, however fast the
    machine (a refused port fails at once).
    """
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = int(listener.getsockname()[1])
        fillers: list[socket.socket] = []
        try:
            for _ in range(8):
                probe = socket.socket()
                probe.settimeout(0.5)
                try:
                    probe.connect(("127.0.0.1", port))
                except TimeoutError:
                    probe.close()
                    break
                fillers.append(probe)
            else:
                pytest.skip("this kernel completes every connection to a full listener")
            yield port
        finally:
            for filler in fillers:
                filler.close()


def test_second_sigint_during_exit_flush_loses_nothing(tmp_path: Path) -> None:
    """SIGINT ends the main thread and the exit flush starts (Logstash never answers: each
    attempt takes the reporter's 0.5 s timeout); a second SIGINT while that flush waits. Every
    span still ends up in the spool."""
    spool_path = tmp_path / "sigint.sqlite"
    with unanswered_port() as port:
        with Child("double_sigint", port=port, spool_path=str(spool_path), n=2000) as child:
            ready = child.read(timeout=DEADLINE)
            assert ready["event"] == "ready"
            child.proc.send_signal(signal.SIGINT)
            assert child.read(timeout=DEADLINE)["event"] == "exiting"
            # The child says when its main thread waits in the exit flush: no guess at when.
            assert child.read(timeout=DEADLINE)["event"] == "flushing"
            child.proc.send_signal(signal.SIGINT)
            code = child.wait(DEADLINE)
        assert code is not None, f"the child hung at exit; stderr:\n{child.stderr[-4000:]}"
    created = ready["stats"]["created"]
    assert created == 2000
    with Spool(spool_path) as spool:
        spooled = spool.pending()[1]
    # The process is gone: its ledger is what the spool holds (nothing could be delivered).
    assert_ledger(
        {"created": created, "delivered": 0, "dropped": 0, "spooled": spooled, "pending": 0}
    )


def test_sigint_while_joining_the_sender_stores_each_batch_once(tmp_path: Path) -> None:
    """A KeyboardInterrupt inside Thread.join() (or is_alive()) of the running sender thread
    makes Python 3.11 and older take that thread for ended: exit must still wait for the
    sender's own spool write and not write the same batches from the exit's thread too."""
    spool_path = tmp_path / "join.sqlite"
    with unanswered_port() as port:
        with Child("interrupted_join", port=port, spool_path=str(spool_path), n=2000) as child:
            ready = child.read(timeout=DEADLINE)
            assert ready["event"] == "ready"
            assert child.read(timeout=DEADLINE)["event"] == "joining"
            child.proc.send_signal(signal.SIGINT)
            code = child.wait(DEADLINE)
        assert code is not None, f"the child hung at exit; stderr:\n{child.stderr[-4000:]}"
    with Spool(spool_path) as spool:
        spooled = spool.pending()[1]
    assert spooled == ready["stats"]["created"] == 2000, child.stderr[-4000:]


# -- 5. a hung reporter ---------------------------------------------------------------------------


def test_hung_reporter_leaks_no_threads_and_recovers(tmp_path: Path) -> None:
    """send() blocks forever (send_timeout=0.2): tracer keeps a handful of abandoned threads at
    most; once the sends return, everything is delivered and the spool drains."""
    with Child(
        "hung", spool_path=str(tmp_path / "hung.sqlite"), seconds=5.0, recover_timeout=30.0
    ) as child:
        hung = child.read(timeout=30)
        assert hung["phase"] == "hung"
        assert hung["peak"] <= hung["before"] + 8, (
            f"{hung['peak']} live threads with the reporter hung, {hung['before']} before install"
        )
        released = child.read(timeout=60)
        child.wait(30)
    stats = released["stats"]
    assert stats["delivered"] == stats["created"] > 0, stats
    assert stats["spooled"] == 0 and stats["pending"] == 0, stats
    assert_ledger(stats)


# -- 6. the spool never blocks the application ----------------------------------------------------


def test_install_does_not_wait_for_a_locked_spool(tmp_path: Path) -> None:
    spool_path = tmp_path / "locked.sqlite"
    Spool(spool_path).close()
    with Child("hold_lock", spool_path=str(spool_path)) as lock:
        assert lock.read(timeout=15)["locked"] is True
        with Child("locked_install", spool_path=str(spool_path)) as child:
            # install() returned while the other process still holds the spool's lock: it
            # would otherwise wait for a release that comes only after this line.
            started = child.read(timeout=30)
            assert "install_seconds" in started, started
            lock.tell("release")
            assert lock.read(timeout=15)["locked"] is False
            lock.wait(10)
            child.tell("go")
            result = child.read(timeout=60)
            child.wait(30)
    stats = result["stats"]
    assert stats["spooled"] > 0, stats
    assert spool_spans(result) == stats["spooled"], result
    assert_ledger(stats)


def test_exit_is_bounded_when_the_spool_is_locked(tmp_path: Path) -> None:
    spool_path = tmp_path / "locked-exit.sqlite"
    exit_timeout = 2.0
    with refused_port() as port:
        with Child(
            "locked_exit",
            port=port,
            spool_path=str(spool_path),
            n=3000,
            exit_timeout=exit_timeout,
        ) as child:
            first = child.read(timeout=40)
            assert first["phase"] == "quiet"
            assert_ledger(first["stats"])
            assert child.read(timeout=30)["phase"] == "ready"
            with Child("hold_lock", spool_path=str(spool_path)) as lock:
                assert lock.read(timeout=15)["locked"] is True
                child.tell("exit")
                assert child.read(timeout=15)["phase"] == "exiting"
                t0 = time.monotonic()
                code = child.wait(exit_timeout + 15)
                took = time.monotonic() - t0
                lock.tell("release")
                lock.wait(10)
    assert code is not None, "the child never exited; killed"
    assert took <= exit_timeout + 3, f"exit took {took:.1f} s with exit_timeout={exit_timeout}"


def _truncated_spool(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with Spool(path) as spool:
        for _ in range(40):
            spool.put(os.urandom(2000), 10)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)


def _garbage_spool(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(random.Random(3).randbytes(16384))


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_spool_is_moved_aside_and_a_fresh_one_used(tmp_path: Path, damage: str) -> None:
    spool_path = tmp_path / "spool-dir" / "corrupt.sqlite"
    (_garbage_spool if damage == "garbage" else _truncated_spool)(spool_path)
    original = spool_path.read_bytes()
    with Child("corrupt", spool_path=str(spool_path)) as child:
        result = child.read(timeout=60)
        child.wait(30)
    aside = [
        p
        for p in spool_path.parent.iterdir()
        if p.name.startswith(spool_path.name) and ".corrupt" in p.name
    ]
    listing = sorted(p.name for p in spool_path.parent.iterdir())
    assert any(p.read_bytes() == original for p in aside), f"not set aside: {listing}"
    stats = result["stats"]
    assert stats["spooled"] > 0, stats
    assert spool_spans(result) == stats["spooled"], result
    assert_ledger(stats)
    warned = warnings_naming(child.stderr, spool_path)
    assert len(warned) == 1, warned or child.stderr[-4000:]


def test_garbage_wal_loses_no_spooled_span(tmp_path: Path) -> None:
    """A spools 100 spans and exits normally; garbage lands in the spool's -wal file; B replays.

    Today A exits with the spool connection still open, so its batches live only in the -wal
    file (the main file holds not even the schema), and garbage there silently loses them all.
    """
    spool_path = tmp_path / "wal.sqlite"
    with Child("spool_and_exit", spool_path=str(spool_path), n=100) as first:
        spooled = first.read(timeout=60)
        assert first.wait(30) == 0, first.stderr[-4000:]
    stats = spooled["stats"]
    assert_ledger(stats)
    # The 100 spans made once the spool was in use, and the probes before them that got in.
    in_spool = stats["spooled"]
    assert in_spool >= 100 and stats["pending"] == 0, stats
    Path(f"{spool_path}-wal").write_bytes(random.Random(5).randbytes(65536))
    listener = LineServer()
    try:
        with Child(
            "replay_only", port=listener.port, spool_path=str(spool_path), n=in_spool, timeout=20.0
        ) as second:
            replayed = second.read(timeout=60)
            second.wait(30)
        made = set(spooled["ids"])
        got = read_span_ids(listener, made, limit=10)
    finally:
        listener.close()
    assert made <= set(got), f"{len(made - set(got))} of 100 spooled spans never arrived"
    assert replayed["stats"]["replayed"] == in_spool, replayed["stats"]
    assert_ledger(replayed["stats"])
    aside = [p for p in tmp_path.iterdir() if "wal" in p.name and "corrupt" in p.name]
    if aside:
        warned = warnings_naming(second.stderr, spool_path)
        assert len(warned) == 1, warned or second.stderr[-4000:]


# -- 8. small API edges ---------------------------------------------------------------------------


def test_flush_takes_none_and_refuses_a_string(memory: MemoryReporter) -> None:
    with tracer.span("x"):
        pass
    ok = tracer.flush(None)  # type: ignore[arg-type]
    assert ok is True
    with pytest.raises(TypeError, match="timeout"):
        tracer.flush("1")  # type: ignore[arg-type]
    assert tracer.flush(10)
    assert_ledger(tracer.stats())


def test_span_entered_twice_restores_the_current_span(memory: MemoryReporter) -> None:
    s = tracer.span("x")
    with s:
        with s:
            pass
    assert tracer.current_span() is None
    assert tracer.flush(10)
    assert [r["name"] for r in memory.spans] == ["x", "x"]
    assert_ledger(tracer.stats())


class _DownAtFirst:
    """Fails every send for its first ``down`` seconds, then delivers and keeps the records."""

    def __init__(self, down: float) -> None:
        self.until = time.monotonic() + down
        self.calls = 0
        self.records: list[dict[str, Any]] = []

    def send(self, data: dict[str, Any], callback: Any) -> None:
        self.calls += 1
        if time.monotonic() < self.until:
            callback(OSError("not yet"))
            return
        # Over the wire and back, as a receiver would see it.
        self.records.extend(strict_loads(json.dumps(data, allow_nan=False))["spans"])
        callback(None)


def test_nan_and_banana_tags_survive_a_held_batch() -> None:
    reporter = _DownAtFirst(2.0)
    tracer.install(
        app_name="nan",
        reporter=reporter,
        flush_interval=0.05,
        max_retries=100,
        max_backoff=0.2,
    )
    with tracer.span("warm-up"):
        pass
    deadline = time.monotonic() + 10
    while reporter.calls == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert reporter.calls > 0
    # The reporter is failing now, so this span's batch waits held (serialised, compressed).
    with tracer.span("odd", b="BaNaNa", x=math.nan) as s:
        assert s is not None
        odd_id = s.span_id
    deadline = time.monotonic() + 20
    while tracer.stats()["delivered"] < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert tracer.flush(10)
    stats = tracer.stats()
    assert_ledger(stats)
    assert stats["delivered"] == 2, stats
    (odd,) = [r for r in reporter.records if r["span_id"] == odd_id]
    assert odd["tags"]["b"] == "BaNaNa"
    # The record builder turns a NaN tag into the string "nan" before any batch exists
    # (docs/propagation.md: "NaN and infinities become strings").
    assert odd["tags"]["x"] == "nan"
