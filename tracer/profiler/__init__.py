"""CPU profiles on demand, tied to the spans they were taken in.

``with tracer.profile(seconds=30) as p: ...`` (or ``p = tracer.profile(30)``, then ``p.wait()``
or ``p.stop()``) samples every thread that runs, about ``profile_rate`` times a second, from a
thread of tracer's own (:mod:`tracer.profiler.sampler`); each sample carries the trace id, span
id, local root span id and route of the request its thread (or, on an event loop, its task) was
serving. When the profile ends it is written to ``profile_dir`` as speedscope JSON, collapsed
stacks and pprof (:mod:`tracer.profiler.formats`), and sent to every reporter as a batch of kind
``"profile"``.

Other triggers: the signal ``profile_signal``, ``GET /debug/profile?seconds=N`` on the metrics
port, and ``profile_continuous`` (one window after another at ``profile_continuous_rate``). One
profile runs at a time; none lasts longer than ``profile_max_seconds``.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from tracer import files, safety
from tracer.profiler import formats
from tracer.profiler.sampler import CPU_BUDGET, MAX_DEPTH, Sampler, SpanMap

if TYPE_CHECKING:
    from tracer.runtime import Runtime

__all__ = ["Profile", "ProfileBusy", "UnsafeFolder", "current", "profile"]

log = logging.getLogger("tracer")

FORMAT = "tracer-profile"
VERSION = 1
DEFAULT_RATE = 100.0
DEFAULT_MAX_SECONDS = 300.0
# The files of one profile: profile-<service>-<pid>-<UTC time>.<ext>.
EXTENSIONS = ("speedscope.json", "collapsed.txt", "pb.gz")
_NAME = re.compile(
    r"^profile-(?P<service>.+)-(?P<pid>\d+)-(?P<stamp>\d{8}T\d{6}\.\d{6}Z)\."
    r"(?:speedscope\.json|collapsed\.txt|pb\.gz)$"
)
# The most stacks a profile batch carries to reporters (the hottest); the files have them all.
BATCH_STACKS = 2000
# The most traces a profile batch carries stacks of (those with the most samples), and the most
# stacks per trace: a flame graph per trace in a viewer, bounded.
BATCH_TRACES = 50
BATCH_TRACE_STACKS = 200

_lock = threading.RLock()
_runtime: Runtime | None = None
_config: Any = None
_current: Profile | None = None
# On-demand profiles waiting for a continuous window to end: no new window starts meanwhile.
_yielding = 0
_continuous: _Continuous | None = None
_signum: int | None = None
_previous: Any = None
_wake: Any = None
_signal_thread: threading.Thread | None = None
_refused: set[str] = set()


class ProfileBusy(RuntimeError):
    """Another profile is running: one runs at a time."""


#: The profile folder is not this user's own and private.
UnsafeFolder = files.UnsafeFolder


# -- the handle -----------------------------------------------------------------------------------


class Profile:
    """One profile: running from its creation until ``seconds`` pass or :meth:`stop`.

    :meth:`wait` blocks until it ended and its files are written, and returns :attr:`paths`
    (format -> file; empty when writing was off or failed). As a context manager it stops at the
    end of the block and waits.
    """

    def __init__(
        self,
        seconds: float,
        rate: float,
        reason: str,
        write: bool,
        report: bool,
        folder: str | None,
    ) -> None:
        self.seconds = seconds
        self.rate = rate
        self.reason = reason
        self._write = write
        self._report = report
        self._folder = folder
        self.pid = os.getpid()
        self.paths: dict[str, str] = {}
        self.summary: dict[str, Any] = {}
        self.error: BaseException | None = None
        self._finished = threading.Event()
        self._span_map: SpanMap | None = None
        self._runtime: Runtime | None = None
        self.sampler: Sampler | None = None

    # -- public ----------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True until the sampling ended and the outputs are written."""
        return not self._finished.is_set()

    def stop(self) -> None:
        """End the profile now (its outputs are still written; see :meth:`wait`)."""
        sampler = self.sampler
        if sampler is not None:
            sampler.stop()

    def wait(self, timeout: float | None = None) -> dict[str, str]:
        """Wait until the profile ended and was written (at most ``timeout`` seconds); the
        paths of its files by format (``speedscope``, ``collapsed``, ``pprof``)."""
        self._finished.wait(timeout)
        return dict(self.paths)

    def speedscope(self) -> dict[str, Any]:
        """The speedscope document (after the profile ended)."""
        return formats.speedscope(self._recording(), self._title(), _exporter())

    def collapsed(self) -> str:
        """The collapsed-stack text (after the profile ended)."""
        return formats.collapsed(self._recording())

    def pprof(self) -> bytes:
        """The gzipped pprof profile (after the profile ended)."""
        sampler = self._sampler()
        return formats.pprof(
            sampler.recording,
            int(1e9 / sampler.rate),
            sampler.started_ns,
            max(sampler.ended_ns - sampler.started_ns, 0),
            [self._title(), f"reason={self.reason}", f"lowest_rate={sampler.lowest_rate:.1f}"],
        )

    def __enter__(self) -> Profile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        self.wait()

    # -- inside ----------------------------------------------------------------------------------

    def _sampler(self) -> Sampler:
        sampler = self.sampler
        if sampler is None or sampler.ended_ns == 0:
            raise RuntimeError("the profile is still running")
        return sampler

    def _recording(self) -> Any:
        return self._sampler().recording

    def _title(self) -> str:
        return f"{_service()} pid {self.pid} ({self.reason})"

    def _start(self, runtime: Runtime | None) -> None:
        if runtime is not None:
            self._span_map = SpanMap()
            self._runtime = runtime
            # In the processor list only while the profile runs: no cost to requests otherwise.
            runtime.add_processor(self._span_map)
        self.sampler = Sampler(self.rate, self.seconds, self._span_map, self._sampled)
        self.sampler.start()

    def _sampled(self, sampler: Sampler) -> None:
        # On the sampler's thread, once sampling ended.
        try:
            if self._runtime is not None and self._span_map is not None:
                self._runtime.remove_processor(self._span_map)
            self._span_map = None
            sampler.recording.release()
            if os.getpid() == self.pid:
                self._finish(sampler)
        except Exception as exc:
            self.error = exc
            safety.internal_error("profiler.finish", exc)
        finally:
            _ended(self)
            self._finished.set()

    def _finish(self, sampler: Sampler) -> None:
        if sampler.error is not None:
            self.error = sampler.error
            safety.internal_error("profiler.sampler", sampler.error)
        recording = sampler.recording
        self.summary = {
            "format": FORMAT,
            "version": VERSION,
            "reason": self.reason,
            "service": _service(),
            "host": socket.gethostname(),
            "pid": self.pid,
            "started_at_us": sampler.started_ns // 1000,
            "duration_s": round(sampler.wall_s, 6),
            "rate_hz": self.rate,
            "lowest_rate_hz": round(sampler.lowest_rate, 3),
            "samples": recording.samples,
            "truncated": recording.truncated,
            "sampler_cpu_s": round(sampler.cpu_s, 6),
            "sampler_cpu_share": round(sampler.cpu_s / sampler.wall_s, 6) if sampler.wall_s else 0,
        }
        if self._write:
            try:
                self.paths = _write_files(self)
            except UnsafeFolder as exc:
                folder = self._folder or default_dir()
                if folder not in _refused:
                    _refused.add(folder)
                    log.warning("tracer: %s", exc)
            except OSError as exc:
                log.warning("tracer: could not write a profile (%s): %s", self.reason, exc)
        if self.paths:
            self.summary["files"] = dict(self.paths)
            log.info("tracer: profile (%s) written to %s", self.reason, self.paths["speedscope"])
        if self._report:
            _submit(self)


def _exporter() -> str:
    # Not tracer.__version__: the package's __init__ is above this layer.
    from importlib import metadata

    try:
        return f"tracer {metadata.version('dapper-tracer')}"
    except metadata.PackageNotFoundError:
        return "tracer"


def _service() -> str:
    if _config is not None:
        return str(_config.app_name)
    from tracer import config

    return config.default_app_name()


def _ended(done: Profile) -> None:
    global _current
    with _lock:
        if _current is done:
            _current = None


# -- starting one ---------------------------------------------------------------------------------


def _option(name: str, default: Any) -> Any:
    value = getattr(_config, name, None)
    return default if value is None else value


def max_seconds() -> float:
    """The longest a profile may run (``profile_max_seconds``)."""
    return float(_option("profile_max_seconds", DEFAULT_MAX_SECONDS))


def profile(
    seconds: float = 30.0,
    *,
    rate: float | None = None,
    write: bool = True,
    report: bool = True,
    folder: str | os.PathLike[str] | None = None,
) -> Profile:
    """Start a CPU profile of this process for ``seconds`` and return its :class:`Profile`.

    ``rate``: samples per second (default ``profile_rate``), lowered by the sampler while its
    own CPU would pass 1% of a core. ``write``: write the three files to ``folder`` (default
    ``profile_dir``); ``report``: send a ``profile`` batch to the reporters (while tracer is
    installed). Raises :class:`ProfileBusy` while another profile runs (a continuous window
    gives way: it ends and is written first), ValueError for ``seconds`` not above 0 or over
    ``profile_max_seconds``.
    """
    return _begin(seconds, rate, "manual", write, report, folder)


def _begin(
    seconds: float,
    rate: float | None,
    reason: str,
    write: bool,
    report: bool,
    folder: str | os.PathLike[str] | None,
) -> Profile:
    global _current, _yielding
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"seconds must be a number, got {type(seconds).__name__}")
    limit = max_seconds()
    if not 0 < seconds <= limit:
        raise ValueError(f"seconds must be above 0 and at most {limit:g} (profile_max_seconds)")
    chosen = float(rate if rate is not None else _option("profile_rate", DEFAULT_RATE))
    if not 0 < chosen <= 1000:
        raise ValueError("rate must be above 0 and at most 1000 samples per second")
    with _lock:
        running = _current
        tries = 0
        while (
            running is not None
            and running.reason == "continuous"
            and reason != "continuous"
            and tries < 5
        ):
            # A continuous window gives way; the window thread may start the next one while
            # this waits, which is stopped the same way.
            tries += 1
            running.stop()
            _yielding += 1
            _lock.release()
            try:
                running.wait(10.0)
            finally:
                _lock.acquire()
                _yielding -= 1
            running = _current
        if reason == "continuous" and _yielding:
            raise ProfileBusy("an on-demand profile is about to start")
        if running is not None:
            raise ProfileBusy(f"a profile ({running.reason}) is running; one runs at a time")
        where = os.fspath(folder) if folder is not None else None
        handle = Profile(float(seconds), chosen, reason, write, report, where)
        _current = handle
    try:
        handle._start(_runtime)
    except BaseException:
        _ended(handle)
        raise
    return handle


def current() -> Profile | None:
    """The profile running now, or None."""
    return _current


# -- outputs --------------------------------------------------------------------------------------


def default_dir() -> str:
    """``profile_dir``, else ``tracer-profile`` in the system's temporary directory."""
    return _folder(None)[0]


def _folder(given: str | None) -> tuple[str, bool]:
    if given:
        return os.path.expanduser(given), False
    configured = getattr(_config, "profile_dir", None)
    if configured:
        return os.path.expanduser(str(configured)), False
    return os.path.join(tempfile.gettempdir(), "tracer-profile"), True


def _write_files(handle: Profile) -> dict[str, str]:
    folder, default = _folder(handle._folder)
    files.own_folder(folder, default, "profile", "profile_dir")
    service = files.safe_name(_service())
    started = handle.sampler.started_ns if handle.sampler is not None else time.time_ns()
    stamp = datetime.fromtimestamp(started / 1e9, timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    stem = os.path.join(folder, f"profile-{service}-{handle.pid}-{stamp}")
    import json

    outputs = {
        "speedscope": json.dumps(handle.speedscope(), separators=(",", ":")).encode(),
        "collapsed": handle.collapsed().encode(),
        "pprof": handle.pprof(),
    }
    paths: dict[str, str] = {}
    for (what, data), ext in zip(outputs.items(), EXTENSIONS, strict=True):
        path = f"{stem}.{ext}"
        files.write_atomic(path, data, 0o600)
        paths[what] = path
    _prune(folder, service, int(_option("profile_max_files", 10)))
    return paths


def _prune(folder: str, service: str, keep: int) -> None:
    """Keep the files of the ``keep`` newest profiles tracer wrote in ``folder`` for
    ``service`` (all its processes); nothing else is touched."""
    found: dict[tuple[str, str], list[str]] = {}
    for name in os.listdir(folder):
        match = _NAME.match(name)
        if match and match["service"] == service:
            found.setdefault((match["stamp"], match["pid"]), []).append(name)
    for key in sorted(found)[: max(len(found) - keep, 0)]:
        for name in found[key]:
            try:
                os.unlink(os.path.join(folder, name))
            except OSError:
                pass


def _submit(handle: Profile) -> None:
    rt = _runtime
    if rt is None or handle.sampler is None:
        return
    recording = handle.sampler.recording
    lines = handle.collapsed().splitlines()
    lines.sort(key=lambda line: -int(line.rpartition(" ")[2]))
    body = {
        **handle.summary,
        "top": formats.top(formats.read_collapsed("\n".join(lines)), limit=20)["functions"],
        "routes": sorted({s[3] for s in recording.spans if s is not None}),
        "collapsed": "\n".join(lines[:BATCH_STACKS]),
        "stacks_left_out": max(len(lines) - BATCH_STACKS, 0),
        "traces": formats.collapsed_by_trace(recording, BATCH_TRACES, BATCH_TRACE_STACKS),
        "traces_sampled": len({s[0] for s in recording.spans if s is not None}),
    }
    rt.pipeline.submit_report("profile", body)


# -- continuous -----------------------------------------------------------------------------------


class _Continuous:
    """One window after another at a low rate, each written and reported like any profile; an
    on-demand profile ends the current window early, and the windows resume after it."""

    def __init__(self, window: float, rate: float) -> None:
        self.window = window
        self.rate = rate
        self.stopping = threading.Event()
        self.thread = threading.Thread(
            target=self._run, name="tracer-profiler-continuous", daemon=True
        )

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping.is_set():
            running = _current
            if running is not None:
                running.wait(1.0)
                continue
            try:
                handle = _begin(self.window, self.rate, "continuous", True, True, None)
            except ProfileBusy:
                self.stopping.wait(0.05)
                continue
            except Exception as exc:
                safety.internal_error("profiler.continuous", exc)
                self.stopping.wait(self.window)
                continue
            while handle.running and not self.stopping.is_set():
                handle.wait(1.0)

    def stop(self) -> None:
        self.stopping.set()
        running = _current
        if running is not None and running.reason == "continuous":
            running.stop()
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(5.0)


# -- the signal -----------------------------------------------------------------------------------


def _on_signal(signum: int, frame: FrameType | None) -> None:
    # On the main thread between two bytecodes: wake the profiler's signal thread, nothing more.
    wake = _wake
    if wake is not None:
        try:
            wake.release()
        except RuntimeError:
            pass  # already woken
    previous = _previous
    if callable(previous):
        previous(signum, frame)


def _signal_loop(wake: Any) -> None:
    while True:
        wake.acquire()
        if wake is not _wake:
            return
        seconds = min(float(_option("profile_signal_seconds", 30.0)), max_seconds())
        try:
            _begin(seconds, None, "signal", True, True, None)
        except ProfileBusy:
            log.warning("tracer: profile signal ignored: a profile is running")
        except Exception as exc:
            safety.internal_error("profiler.signal", exc)


def _start_signal_thread() -> None:
    global _wake, _signal_thread
    wake = threading.Lock()
    wake.acquire()
    _wake = wake
    _signal_thread = threading.Thread(
        target=_signal_loop, args=(wake,), name="tracer-profiler-signal", daemon=True
    )
    _signal_thread.start()


def _install_signal(name: str | None) -> None:
    global _signum, _previous
    if name is None:
        return
    if _signum is not None:
        if _signal_thread is None:
            _start_signal_thread()
        return
    if threading.current_thread() is not threading.main_thread():
        log.debug("tracer: not in the main thread; profile signal not installed")
        return
    signum = int(getattr(signal, name))
    previous = signal.getsignal(signum)
    if previous is None:
        log.debug("tracer: %s has a handler outside Python; profile signal not installed", name)
        return
    _previous = previous
    try:
        signal.signal(signum, _on_signal)
    except (OSError, ValueError) as exc:
        log.warning("tracer: cannot handle %s for profiles: %s", name, exc)
        return
    _signum = signum
    _start_signal_thread()


def _uninstall_signal() -> None:
    global _signum, _wake, _signal_thread
    signum, thread, wake = _signum, _signal_thread, _wake
    if signum is not None and threading.current_thread() is threading.main_thread():
        if signal.getsignal(signum) is _on_signal:
            signal.signal(signum, _previous)
        _signum = None
    _wake = _signal_thread = None
    if wake is not None:
        try:
            wake.release()
        except RuntimeError:
            pass
    if thread is not None and thread is not threading.current_thread():
        thread.join(5.0)


# -- the metrics port -----------------------------------------------------------------------------


def debug_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """``GET /debug/profile?seconds=N`` (a WSGI app, served on the metrics port): starts a
    profile and answers ``202`` with JSON naming the files it will write; ``409`` while one
    runs, ``400`` for a bad ``seconds``. It does not wait for the profile: the metrics port ends
    every connection after a few seconds."""
    import json

    def answer(status: str, body: dict[str, Any]) -> Iterable[bytes]:
        data = json.dumps(body).encode()
        start_response(
            status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
        )
        return [data]

    if environ.get("REQUEST_METHOD") not in ("GET", "POST"):
        return answer("405 Method Not Allowed", {"error": "GET /debug/profile?seconds=N"})
    query = parse_qs(environ.get("QUERY_STRING", ""))
    try:
        seconds = float(query.get("seconds", ["30"])[0])
        if seconds != seconds:
            raise ValueError("nan")
    except ValueError:
        return answer("400 Bad Request", {"error": "seconds must be a number"})
    try:
        handle = _begin(seconds, None, "http", True, True, None)
    except ProfileBusy as exc:
        return answer("409 Conflict", {"error": str(exc)})
    except ValueError as exc:
        return answer("400 Bad Request", {"error": str(exc)})
    folder = handle._folder or default_dir()
    return answer(
        "202 Accepted",
        {"seconds": handle.seconds, "rate_hz": handle.rate, "folder": folder, "pid": handle.pid},
    )


def _add_route() -> None:
    from tracer.metrics import exposition

    add = getattr(exposition, "add_route", None)
    if add is not None:
        add("/debug/profile", debug_app)


def _remove_route() -> None:
    from tracer.metrics import exposition

    remove = getattr(exposition, "remove_route", None)
    if remove is not None:
        remove("/debug/profile")


# -- install, uninstall, fork ---------------------------------------------------------------------


def install(runtime: Runtime) -> None:
    """Set up the triggers for the installed ``runtime`` (called by ``tracer.install()``)."""
    global _runtime, _config, _continuous
    with _lock:
        if _runtime is not None:
            return
        _runtime = runtime
        _config = runtime.config
    cfg = runtime.config
    try:
        _install_signal(getattr(cfg, "profile_signal", None))
    except Exception as exc:
        safety.internal_error("profiler.signal.install", exc)
    if (
        getattr(cfg, "profile_debug_endpoint", True)
        and getattr(cfg, "metrics_port", None) is not None
    ):
        _add_route()
    if getattr(cfg, "profile_continuous", False):
        _continuous = _Continuous(
            min(float(_option("profile_continuous_window", 60.0)), max_seconds()),
            float(_option("profile_continuous_rate", 10.0)),
        )
        _continuous.start()


def uninstall() -> None:
    """Stop everything :func:`install` and the profiles started since: the continuous windows,
    the running profile (written first), the signal handler and the debug route."""
    global _runtime, _config, _continuous
    with _lock:
        if _runtime is None:
            return
        continuous, _continuous = _continuous, None
    if continuous is not None:
        continuous.stop()
    running = _current
    if running is not None:
        running.stop()
        running.wait(10.0)
    _remove_route()
    _uninstall_signal()
    _refused.clear()
    with _lock:
        _runtime = None
        _config = None


def after_fork_in_child() -> None:
    """A forked child: the parent's sampler did not survive fork, and its profile is the
    parent's (never written here). The child restarts its own continuous windows and signal
    thread when those are configured; an on-demand profile is not carried over."""
    global _lock, _current, _continuous, _signal_thread, _wake, _yielding
    _lock = threading.RLock()
    _yielding = 0
    inherited = _current
    _current = None
    if inherited is not None:
        # Its sampler thread is gone; its span map is in this process's runtime too.
        if inherited._runtime is not None and inherited._span_map is not None:
            inherited._runtime.remove_processor(inherited._span_map)
        inherited._span_map = None
        inherited._finished.set()
    old, _continuous = _continuous, None
    if old is not None and _runtime is not None:
        _continuous = _Continuous(old.window, old.rate)
        _continuous.start()
    if _signum is not None:
        _signal_thread = _wake = None
        _start_signal_thread()


# Kept for the documentation's figures: what the sampler is bounded by.
LIMITS = {"max_depth": MAX_DEPTH, "cpu_budget": CPU_BUDGET}
