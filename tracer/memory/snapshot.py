"""Heap snapshots: on a signal, on a leak, on demand.

A snapshot is one gzip-compressed JSON document (format ``tracer-heap-snapshot``, version 1;
see docs/memory-heap.md): the per-type census, the largest containers, RSS, the collector's
state, process information and, when tracemalloc traces or :func:`tracer.memory.trace` kept a
snapshot, the allocation sites by source line.

The signal handler only wakes a thread of tracer's own, which takes the census and writes the
file: a Python signal handler runs on the main thread between two bytecodes, so anything more
there would run in the middle of whatever the main thread was doing. The wake-up is a plain lock
released by the handler (releasing a lock never blocks, so the handler cannot deadlock against
the code it interrupted), and signals that arrive while a census runs make one more census, not
one each.
"""

from __future__ import annotations

import gc
import gzip
import json
import logging
import os
import platform
import re
import signal
import socket
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from types import FrameType
from typing import Any

from tracer import files, safety

log = logging.getLogger("tracer")

FORMAT = "tracer-heap-snapshot"
VERSION = 1
# The files tracer writes by itself: heap-<service>-<pid>-<UTC time>.json.gz.
_NAME = re.compile(r"^heap-(?P<service>.+)-(?P<pid>\d+)-\d{8}T\d{6}\.\d{6}Z\.json\.gz$")
_LARGEST = 20
_SITES = 50

_config: Any = None
_signum: int | None = None
_previous: Any = None
_wake: Any = None  # a threading.Lock, held while there is nothing to do
_stopping = False
_thread: threading.Thread | None = None
_leak_lock = threading.Lock()
_last_leak_snapshot: float | None = None
# Folders already refused with a warning: the warning is said once, the check made every time.
_refused: set[str] = set()


#: The snapshot folder is not this user's own and private.
UnsafeFolder = files.UnsafeFolder


# -- the document -------------------------------------------------------------------------------


def _rss() -> dict[str, int | None]:
    rss: int | None = None
    try:
        with open("/proc/self/statm", "rb") as statm:
            rss = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    peak: int | None = None
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        # Linux counts kilobytes, macOS bytes.
        peak = peak if sys.platform == "darwin" else peak * 1024
    except (ImportError, OSError):
        pass
    return {"rss_bytes": rss, "peak_rss_bytes": peak}


def _service() -> str:
    if _config is not None:
        return str(_config.app_name)
    from tracer import config

    return config.default_app_name()


def build(reason: str, leak: dict[str, Any] | None = None) -> dict[str, Any]:
    """The snapshot document: takes the census (a full collection first)."""
    from tracer.memory import alloc
    from tracer.memory.heapdiff import census, human, site_stats, tracemalloc_snapshot

    now = time.time()
    counted = census(largest=_LARGEST, holders=True)
    types: list[dict[str, Any]] = [
        {
            "what": name,
            "count": counted.counts[name],
            "size_bytes": size,
            "size": human(size),
        }
        for name, size in counted.sizes.items()
    ]
    types.sort(key=lambda t: (-t["size_bytes"], -t["count"], t["what"]))
    sites: dict[str, Any] | None = None
    tracing = tracemalloc_snapshot()
    if tracing is not None:
        import tracemalloc

        sites = {
            "source": "tracing",
            "started_at": None,
            "taken_at": now,
            "frames": tracemalloc.get_traceback_limit(),
            "sites": site_stats(tracing, limit=_SITES),
        }
    else:
        kept = alloc.last_snapshot()
        if kept is not None:
            sites = {
                "source": "trace",
                "started_at": kept.started_at,
                "taken_at": kept.taken_at,
                "frames": kept.frames,
                "sites": site_stats(kept.snapshot, limit=_SITES),
            }
    return {
        "format": FORMAT,
        "version": VERSION,
        "time": datetime.fromtimestamp(now, timezone.utc).isoformat().replace("+00:00", "Z"),
        "time_us": int(now * 1_000_000),
        "reason": reason,
        "leak": leak,
        "process": {
            "service": _service(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "platform": sys.platform,
            "threads": threading.active_count(),
        },
        "memory": {**_rss(), "allocated_blocks": sys.getallocatedblocks()},
        "gc": {
            "enabled": gc.isenabled(),
            "counts": list(gc.get_count()),
            "thresholds": list(gc.get_threshold()),
            "garbage": len(gc.garbage),
            "collected": counted.collected,
            "stats": gc.get_stats(),
        },
        "census": {
            "nodes": counted.nodes,
            "size_bytes": counted.size_bytes,
            "size": human(counted.size_bytes),
            "seconds": counted.seconds,
            "types": types,
        },
        "containers": counted.largest,
        "holders": counted.holders,
        "allocation_sites": sites,
    }


def write(doc: dict[str, Any], path: str) -> str:
    """Write ``doc`` to ``path`` (gzip when it ends in ``.gz``) through a temporary file in the
    same folder, so a reader never sees half a snapshot."""
    data = json.dumps(doc, separators=(",", ":"), default=str).encode()
    if path.endswith(".gz"):
        data = gzip.compress(data, compresslevel=6)
    # Named by pid and thread, not by tempfile: its random names would show in the next census.
    files.write_atomic(path, data, 0o600, tmp=f"{path}.{os.getpid()}.{threading.get_ident()}.tmp")
    return path


def default_dir() -> str:
    """``heap_snapshot_dir``, else ``tracer-heap`` in the system's temporary directory."""
    return _folder()[0]


def _folder() -> tuple[str, bool]:
    """The snapshot folder, and whether it is the default one."""
    configured = getattr(_config, "heap_snapshot_dir", None)
    if configured:
        return os.path.expanduser(str(configured)), False
    return os.path.join(tempfile.gettempdir(), "tracer-heap"), True


def _max_files() -> int:
    if _config is not None:
        return int(_config.heap_snapshot_max_files)
    return 5


def _file_name(service: str, now: float) -> str:
    stamp = datetime.fromtimestamp(now, timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"heap-{files.safe_name(service)}-{os.getpid()}-{stamp}.json.gz"


def _prune(folder: str, service: str, keep: int) -> None:
    """Keep the ``keep`` newest snapshot files tracer wrote in ``folder`` for ``service`` (all
    its processes); nothing else is touched."""
    safe = files.safe_name(service)
    found = []
    for name in os.listdir(folder):
        match = _NAME.match(name)
        if match and match["service"] == safe:
            path = os.path.join(folder, name)
            try:
                found.append((os.lstat(path).st_mtime, name, path))
            except OSError:
                continue
    found.sort()
    for _, _, path in found[: max(len(found) - keep, 0)]:
        try:
            os.unlink(path)
        except OSError:
            pass


def snapshot(path: str | None = None) -> str:
    """Write a heap snapshot file and return its path.

    Without ``path`` the file goes to ``heap_snapshot_dir`` (default: ``tracer-heap`` in the
    system's temporary directory, created private to the user), named
    ``heap-<service>-<pid>-<UTC time>.json.gz``, and only the newest
    ``heap_snapshot_max_files`` of those files are kept there. A ``path`` ending in ``.gz`` is
    compressed. The census pauses the process (see docs/memory-heap.md, "The pause"); an
    ``OSError`` is raised when the file cannot be written.
    """
    return _take("manual", None, path)


def _take(reason: str, leak: dict[str, Any] | None, path: str | None) -> str:
    doc = build(reason, leak)
    if path is not None:
        return write(doc, os.fspath(path))
    folder, default = _folder()
    files.own_folder(folder, default, "heap snapshot", "heap_snapshot_dir")
    service = doc["process"]["service"]
    target = write(doc, os.path.join(folder, _file_name(service, time.time())))
    _prune(folder, service, _max_files())
    return target


def _automatic(reason: str, leak: dict[str, Any] | None) -> str | None:
    """A snapshot nobody is waiting for: every failure is logged, never raised."""
    try:
        path = _take(reason, leak, None)
    except UnsafeFolder as exc:
        folder = default_dir()
        if folder not in _refused:
            _refused.add(folder)
            log.warning("tracer: %s", exc)
        return None
    except OSError as exc:
        log.warning("tracer: could not write a heap snapshot (%s): %s", reason, exc)
        return None
    except Exception as exc:
        safety.internal_error("memory.snapshot", exc)
        return None
    log.info("tracer: heap snapshot (%s) written to %s", reason, path)
    return path


# -- on a leak ----------------------------------------------------------------------------------


def on_leak(leak: dict[str, Any]) -> str | None:
    """A ``leak`` event: write a snapshot when ``heap_snapshot_on_leak`` and the rate limit allow;
    the file's path, or None."""
    global _last_leak_snapshot
    cfg = _config
    try:
        if cfg is None or not cfg.heap_snapshot_on_leak:
            return None
        now = time.monotonic()
        with _leak_lock:
            last = _last_leak_snapshot
            if last is not None and now - last < cfg.heap_snapshot_min_interval:
                return None
            _last_leak_snapshot = now
    except Exception as exc:
        safety.internal_error("memory.on_leak", exc)
        return None
    return _automatic("leak", leak)


# -- on a signal --------------------------------------------------------------------------------


def _on_signal(signum: int, frame: FrameType | None) -> None:
    # Runs on the main thread between two bytecodes: wake the snapshot thread, nothing more.
    wake = _wake
    if wake is not None and not _stopping:
        try:
            wake.release()
        except RuntimeError:
            pass  # already woken: the census about to run covers this signal too
    previous = _previous
    if callable(previous):
        previous(signum, frame)


def _loop(wake: Any) -> None:
    # A storm of signals (a script in a loop, a supervisor gone wrong) would otherwise be one
    # census after another, each a pause of the whole process: signals that come sooner than
    # heap_snapshot_signal_interval after the last snapshot ended are dropped, said once.
    last_end: float | None = None
    told = False
    while True:
        wake.acquire()
        if _stopping or wake is not _wake:
            return
        cfg = _config
        interval = float(getattr(cfg, "heap_snapshot_signal_interval", 30.0))
        since = None if last_end is None else time.monotonic() - last_end
        if since is not None and since < interval:
            if not told:
                told = True
                log.warning(
                    "tracer: %s ignored: the last heap snapshot on it ended %.1f s ago, and"
                    " heap_snapshot_signal_interval is %g s (signals sooner are dropped)",
                    getattr(cfg, "heap_snapshot_signal", "the signal"),
                    since,
                    interval,
                )
            continue
        told = False
        _automatic("signal", None)
        last_end = time.monotonic()


def _start_thread() -> None:
    global _wake, _thread
    wake = threading.Lock()
    wake.acquire()
    _wake = wake
    _thread = threading.Thread(target=_loop, args=(wake,), name="tracer-heap-snapshot", daemon=True)
    _thread.start()


def install(config: Any) -> None:
    """Install the snapshot signal handler (``heap_snapshot_signal``), from the main thread.

    The handler that was there still runs after ours. When there was none (``SIG_DFL``), the
    signal no longer does its default action: SIGUSR2 would have ended the process, and now
    writes a snapshot instead. An ignored signal (``SIG_IGN``) writes snapshots and does
    nothing else; a handler set outside Python is left in place, and no snapshot is taken.
    A signal that comes less than ``heap_snapshot_signal_interval`` seconds after the last
    signal snapshot ended is dropped (one warning until the next snapshot).
    """
    global _config, _signum, _previous, _stopping
    _config = config
    name = getattr(config, "heap_snapshot_signal", None)
    if name is None:
        return
    if _signum is not None:
        # Still ours from an uninstall() off the main thread, which could not put it back.
        if _thread is None:
            _stopping = False
            _start_thread()
        return
    if threading.current_thread() is not threading.main_thread():
        log.debug("tracer: not in the main thread; heap snapshot signal not installed")
        return
    signum = int(getattr(signal, name))
    previous = signal.getsignal(signum)
    if previous is None:
        log.debug("tracer: %s has a handler outside Python; heap snapshots not installed", name)
        return
    _previous = previous
    try:
        signal.signal(signum, _on_signal)
    except (OSError, ValueError) as exc:
        log.warning("tracer: cannot handle %s for heap snapshots: %s", name, exc)
        return
    _stopping = False
    _signum = signum
    _start_thread()


def uninstall() -> None:
    """Put back the signal handler that was there before :func:`install`."""
    global _config, _signum, _stopping, _thread, _wake, _last_leak_snapshot
    from tracer.memory import alloc

    alloc.reset()
    _config = None
    # The next install() is a configuration of its own: its own rate limit and warnings.
    with _leak_lock:
        _last_leak_snapshot = None
    _refused.clear()
    signum, thread, wake = _signum, _thread, _wake
    if signum is None:
        return
    # Only the main thread may set a handler; elsewhere ours stays and only calls the previous.
    if threading.current_thread() is threading.main_thread():
        if signal.getsignal(signum) is _on_signal:
            signal.signal(signum, _previous)
        # else: something replaced ours (and may call it): it keeps calling the previous one.
        _signum = None
    _stopping = True
    _wake = _thread = None
    if wake is not None:
        try:
            wake.release()
        except RuntimeError:
            pass
    if thread is not None:
        thread.join(5.0)


def after_fork_in_child() -> None:
    """A forked child has its own snapshot state: its own rate limit, and a snapshot thread of
    its own when the signal handler is installed (the parent's thread did not survive fork)."""
    global _leak_lock, _last_leak_snapshot
    _leak_lock = threading.Lock()
    _last_leak_snapshot = None
    if _signum is not None and not _stopping:
        _start_thread()
