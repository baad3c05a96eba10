"""The child processes of test_faults.py: ``python -m tests.delivery.faults_child SCENARIO JSON``.

Each scenario installs tracer in a fresh interpreter (this checkout's, through PYTHONPATH), does
one thing to it and prints what it saw as JSON lines on stdout, one object per line, so that the
parent can read them as they come. Where the parent must act in the middle (resume a listener,
take or release a lock, send a signal) the child prints a line and, where it must wait for the
parent, reads one line from stdin. Every wait here is bounded; the parent bounds the rest.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import random
import signal
import sqlite3
import string
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import reporters
import tracer
from tests.support.waiting import wait_until
from tracer.delivery.spool import Spool

# One marker per log record, so that the parent can count records (a record's traceback, if it
# carries one, stays inside its own chunk).
LOG_MARKER = "@@LOG@@"
LOG_FORMAT = LOG_MARKER + " %(levelname)s %(name)s %(message)s"


def emit(**fields: Any) -> None:
    print(json.dumps(fields, default=str), flush=True)


def quiet(timeout: float, extra: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, Any]:
    """tracer.stats() once nothing is pending (and ``extra`` holds), or after ``timeout``."""

    def done() -> bool:
        stats = tracer.stats()
        return stats["pending"] == 0 and (extra is None or extra(stats))

    wait_until(done, timeout)
    return tracer.stats()


def make_spans(n: int, prefix: str = "s", pause: float = 0.0, **tags: Any) -> list[str]:
    ids: list[str] = []
    for i in range(n):
        with tracer.span(f"{prefix}{i}", **tags) as span:
            assert span is not None
            ids.append(span.span_id)
        if pause:
            time.sleep(pause)
    return ids


def spans_until_spooled(timeout: float, prefix: str = "s") -> list[str]:
    """Spans, ten at a time, until some of them are in the spool (or ``timeout`` passed).

    tracer may open its spool in the background; spans finished before it is open may be
    dropped (counted) or kept in memory, either is allowed. This makes sure the spool is in use.
    """
    ids: list[str] = []
    deadline = time.monotonic() + timeout
    while tracer.stats()["spooled"] == 0 and time.monotonic() < deadline:
        ids += make_spans(10, prefix=f"{prefix}{len(ids)}-")
        time.sleep(0.1)
    return ids


def spool_pending(path: str) -> tuple[int, int] | str:
    """``(batches, spans)`` in the spool file, or why it cannot be read."""
    try:
        spool = Spool(path)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    try:
        return spool.pending()
    finally:
        spool.close()


def read_command() -> str:
    """One line from the parent; an empty string when the parent is gone."""
    return sys.stdin.readline().strip()


class Fails:
    """A reporter that never delivers."""

    def __init__(self) -> None:
        self.calls = 0

    def send(self, data: dict[str, Any], callback: Callable[[Any], None]) -> None:
        self.calls += 1
        callback(OSError("receiver down"))


class UnprintableError(Exception):
    """An error whose message cannot be made: ``str()`` (and so any f-string of it) raises."""

    def __str__(self) -> str:
        raise RuntimeError("no message for you")


class RetryAfterRaises(Exception):
    """An error whose ``retry_after`` raises when it is read."""

    @property
    def retry_after(self) -> float:
        raise RuntimeError("no retry_after for you")


class Flaky:
    """Misbehaves (``kind``) on its first ``fail_calls`` sends, then delivers and keeps the ids."""

    def __init__(self, kind: str, fail_calls: int) -> None:
        self.kind = kind
        self.fail_calls = fail_calls
        self.calls = 0
        self.delivered: list[str] = []
        self._lock = threading.Lock()

    def send(self, data: dict[str, Any], callback: Callable[[Any], None]) -> None:
        with self._lock:
            self.calls += 1
            failing = self.calls <= self.fail_calls
        if failing:
            self._misbehave(callback)
            return
        with self._lock:
            self.delivered.extend(span["span_id"] for span in data["spans"])
        callback(None)
        if self.kind == "twice":
            callback(None)

    def _misbehave(self, callback: Callable[[Any], None]) -> None:
        if self.kind == "system_exit":
            raise SystemExit(3)
        if self.kind == "keyboard_interrupt":
            raise KeyboardInterrupt
        if self.kind == "unprintable":
            callback(UnprintableError())
        elif self.kind == "retry_after_raises":
            callback(RetryAfterRaises("busy"))
        elif self.kind == "string":
            callback("failed")
        elif self.kind == "number":
            callback(42)
        elif self.kind == "twice":
            callback(OSError("first: failed"))
            callback(None)
        else:
            raise ValueError(f"unknown kind {self.kind!r}")


class Hangs:
    """Blocks in send() until ``release`` is set, then calls back with success."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def send(self, data: dict[str, Any], callback: Callable[[Any], None]) -> None:
        self.calls += 1
        self.release.wait(120)
        callback(None)


def logstash(port: int, timeout: float = 2.0) -> Any:
    return reporters.logstash.create(type="tcp", host="127.0.0.1", port=port, timeout=timeout)


# -- scenarios ------------------------------------------------------------------------------------


def http_outage(a: dict[str, Any]) -> None:
    """Spans over a few seconds to an HTTP receiver that is failing, then one long flush."""
    tracer.install(
        app_name="faults", reporter=reporters.http.create(url=a["url"]), spool_path=a["spool_path"]
    )
    ids = make_spans(a["n"], pause=a["seconds"] / a["n"])
    ok = tracer.flush(a["flush_timeout"])
    emit(ok=ok, stats=tracer.stats(), ids=ids)


def replay(a: dict[str, Any]) -> None:
    """Spans while Logstash is down; then, with no new spans, wait for the spool to drain."""
    tracer.install(
        app_name="faults",
        reporter=logstash(a["port"]),
        flush_interval=30.0,
        batch_size=50,
        max_retries=1,
        max_backoff=1.0,
        spool_path=a["spool_path"],
    )
    ids = make_spans(a["n"])
    ok = tracer.flush(3)
    # Nothing is pending once every batch is in the spool.
    stats = quiet(30, lambda s: s["spooled"] > 0)
    emit(phase="down", ok=ok, stats=stats, ids=ids)
    read_command()  # the listener is back
    wait_until(lambda: tracer.stats()["delivered"] >= a["n"], a["replay_timeout"])
    emit(phase="after", stats=quiet(5))


def flaky(a: dict[str, Any]) -> None:
    """A reporter that misbehaves on its first sends, then one flush."""
    reporter = Flaky(a["kind"], a["fail_calls"])
    tracer.install(
        app_name="faults",
        reporter=reporter,
        batch_size=a["batch_size"],
        flush_interval=0.05,
        send_timeout=a["send_timeout"],
        max_retries=a["max_retries"],
        max_backoff=0.2,
        spool_path=a["spool_path"],
    )
    ids = make_spans(a["n"])
    ok = tracer.flush(a["flush_timeout"])
    with reporter._lock:
        delivered = list(reporter.delivered)
    emit(ok=ok, stats=quiet(5), calls=reporter.calls, ids=ids, delivered_ids=delivered)


def oversize(a: dict[str, Any]) -> None:
    """Batches larger than the whole spool, and a reporter that never delivers."""
    tracer.install(
        app_name="faults",
        reporter=Fails(),
        batch_size=a["batch_size"],
        flush_interval=0.05,
        max_retries=a["max_retries"],
        max_backoff=0.05,
        spool_path=a["spool_path"],
        spool_max_bytes=4096,
        exit_timeout=1.0,
    )
    rng = random.Random(7)
    alphabet = string.ascii_letters + string.digits
    for i in range(a["n"]):
        # About 8 KB of tags that compress to about 6 KB: one span is more than the spool holds.
        tags = {f"t{k}": "".join(rng.choices(alphabet, k=1000)) for k in range(8)}
        with tracer.span(f"big{i}", **tags):
            pass
    stats = quiet(20)
    emit(stats=stats, spool=spool_pending(a["spool_path"]))


def exit_flush_waiting() -> bool:
    """Whether the main thread is waiting inside tracer's exit (``Pipeline.stop``): the flush
    that exit makes waits on a condition, and nothing else in stop() waits that way."""
    main = threading.main_thread().ident
    frame = sys._current_frames().get(main) if main is not None else None
    innermost = frame
    in_stop = False
    while frame is not None:
        code = frame.f_code
        if code.co_name == "stop" and code.co_filename.endswith(
            os.path.join("delivery", "pipeline.py")
        ):
            in_stop = True
        frame = frame.f_back
    return (
        in_stop
        and innermost is not None
        and innermost.f_code.co_name == "wait"
        and innermost.f_code.co_filename == threading.__file__
    )


def double_sigint(a: dict[str, Any]) -> None:
    """Spans to a Logstash that never answers; the parent interrupts twice, the second time in
    the middle of the exit flush (``flushing`` says when that is)."""
    # As in a terminal: a parent started with SIGINT ignored (a background job of a
    # non-interactive shell, some CI runners) would hand that on, and Ctrl-C would do nothing.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    tracer.install(
        app_name="faults",
        reporter=logstash(a["port"], timeout=0.5),
        exit_timeout=a.get("exit_timeout", 10.0),
        batch_size=100,
        spool_path=a["spool_path"],
    )

    at_exit = threading.Event()

    def watch() -> None:
        if at_exit.wait(120) and wait_until(exit_flush_waiting, 120, step=0.01):
            emit(event="flushing")

    # Started now: Python 3.12 and newer start no thread once the interpreter is shutting down.
    threading.Thread(target=watch, name="flush-watch", daemon=True).start()

    def exiting() -> None:
        emit(event="exiting")
        at_exit.set()

    # Registered after tracer's own handler, so it runs before it (atexit runs last-in first).
    atexit.register(exiting)
    ids = make_spans(a["n"])
    emit(event="ready", stats=tracer.stats(), ids=ids)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.05)


def interrupted_join(a: dict[str, Any]) -> None:
    """As double_sigint, but the one SIGINT comes while the main thread joins tracer's sender
    thread: on Python 3.11 and older that marks the running thread as ended (bpo-45274), as a
    second Ctrl-C inside tracer's exit would."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    tracer.install(
        app_name="faults",
        reporter=logstash(a["port"], timeout=0.5),
        exit_timeout=10.0,
        batch_size=100,
        spool_path=a["spool_path"],
    )
    ids = make_spans(a["n"])
    sender = next(t for t in threading.enumerate() if t.name == "tracer-sender")
    main = threading.main_thread().ident

    def joining() -> bool:
        frame = sys._current_frames().get(main) if main is not None else None
        # Python 3.12 and older wait in _wait_for_tstate_lock; 3.13 waits in join() itself.
        return frame is not None and frame.f_code.co_name in ("_wait_for_tstate_lock", "join")

    def watch() -> None:
        if wait_until(joining, 120, step=0.01):
            emit(event="joining")

    emit(event="ready", stats=tracer.stats(), ids=ids)
    threading.Thread(target=watch, name="join-watch", daemon=True).start()
    sender.join(120)


def hung(a: dict[str, Any]) -> None:
    """A reporter whose send never returns (until released) while spans keep coming."""
    before = threading.active_count()
    reporter = Hangs()
    tracer.install(
        app_name="faults",
        reporter=reporter,
        batch_size=10,
        flush_interval=0.05,
        send_timeout=0.2,
        max_backoff=1.0,
        spool_path=a["spool_path"],
        # Only the delivery threads are counted here: metrics and memory have threads of their own.
        metrics=False,
        memory_watch=False,
        heap_snapshot_signal=None,
    )
    peak = threading.active_count()
    end = time.monotonic() + a["seconds"]
    while time.monotonic() < end:
        make_spans(5)
        time.sleep(0.05)
        peak = max(peak, threading.active_count())
    emit(
        phase="hung",
        before=before,
        peak=peak,
        now=threading.active_count(),
        calls=reporter.calls,
        stats=tracer.stats(),
    )
    reporter.release.set()

    def caught_up() -> bool:
        s = tracer.stats()
        return s["delivered"] == s["created"] and s["pending"] == 0 and s["spooled"] == 0

    wait_until(caught_up, a["recover_timeout"])
    emit(phase="released", stats=tracer.stats(), threads=threading.active_count())


def hold_lock(a: dict[str, Any]) -> None:
    """Hold the spool file's write lock (another process's long transaction) until told."""
    conn = sqlite3.connect(a["spool_path"], isolation_level=None, timeout=10)
    conn.execute("BEGIN EXCLUSIVE")
    emit(locked=True)
    read_command()
    conn.execute("COMMIT")
    conn.close()
    emit(locked=False)


def locked_install(a: dict[str, Any]) -> None:
    """install() while another process holds the spool's lock; spans once it is released."""
    t0 = time.monotonic()
    tracer.install(
        app_name="faults",
        reporter=Fails(),
        batch_size=10,
        flush_interval=0.05,
        max_retries=0,
        max_backoff=0.05,
        spool_path=a["spool_path"],
        exit_timeout=1.0,
    )
    emit(install_seconds=time.monotonic() - t0)
    read_command()  # the lock is released
    spans_until_spooled(30)
    stats = quiet(30, lambda s: s["spooled"] > 0)
    emit(stats=stats, spool=spool_pending(a["spool_path"]))


def locked_exit(a: dict[str, Any]) -> None:
    """Many batches for a Logstash that refuses; the spool is locked by another process at exit."""
    tracer.install(
        app_name="faults",
        reporter=logstash(a["port"]),
        batch_size=50,
        flush_interval=0.05,
        exit_timeout=a["exit_timeout"],
        spool_path=a["spool_path"],
    )
    make_spans(50, prefix="early")
    emit(phase="quiet", stats=quiet(30, lambda s: s["spooled"] > 0))
    make_spans(a["n"])
    emit(phase="ready", stats=tracer.stats())
    read_command()  # the spool is locked now
    emit(phase="exiting")


def corrupt(a: dict[str, Any]) -> None:
    """install() on a damaged spool file, with a reporter that never delivers."""
    logging.basicConfig(format=LOG_FORMAT, level=logging.WARNING)
    tracer.install(
        app_name="faults",
        reporter=Fails(),
        batch_size=10,
        flush_interval=0.05,
        max_retries=0,
        max_backoff=0.05,
        spool_path=a["spool_path"],
        exit_timeout=1.0,
    )
    spans_until_spooled(10)
    stats = quiet(15, lambda s: s["spooled"] > 0)
    emit(stats=stats, spool=spool_pending(a["spool_path"]))


def spool_and_exit(a: dict[str, Any]) -> None:
    """Spool every span (the reporter never delivers), then exit normally."""
    tracer.install(
        app_name="faults",
        reporter=Fails(),
        batch_size=10,
        flush_interval=0.05,
        max_retries=0,
        max_backoff=0.05,
        spool_path=a["spool_path"],
        exit_timeout=1.0,
    )
    # Until the spool is in use, spans may be dropped instead of spooled: start after that.
    probes = spans_until_spooled(30, prefix="probe")
    ids = make_spans(a["n"])
    emit(stats=quiet(30), ids=ids, probes=probes)


def replay_only(a: dict[str, Any]) -> None:
    """A later process of the service, with a working reporter: it replays the spool."""
    logging.basicConfig(format=LOG_FORMAT, level=logging.WARNING)
    tracer.install(
        app_name="faults",
        reporter=logstash(a["port"]),
        flush_interval=0.05,
        spool_path=a["spool_path"],
    )
    wait_until(lambda: tracer.stats()["replayed"] >= a["n"], a["timeout"])
    emit(stats=quiet(5))


SCENARIOS: dict[str, Callable[[dict[str, Any]], None]] = {
    f.__name__: f
    for f in (
        http_outage,
        replay,
        flaky,
        oversize,
        double_sigint,
        interrupted_join,
        hung,
        hold_lock,
        locked_install,
        locked_exit,
        corrupt,
        spool_and_exit,
        replay_only,
    )
}


if __name__ == "__main__":
    SCENARIOS[sys.argv[1]](json.loads(sys.argv[2]))
