"""tracer.profile() in this process: the handle, the span map (threads, executors, asyncio
tasks), the triggers and their refusals, the folder, fork, uninstall, and the file formats."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import signal
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import reporters
import tracer
import tracer.profiler
from reporters.memory import MemoryReporter
from tests.conftest import assert_child_prints_ok
from tests.profiler.pprof_proto import profile_class
from tests.support.children import wait_child
from tests.support.waiting import eventually
from tracer import installer
from tracer.cli import main as cli_main
from tracer.config import ConfigError
from tracer.metrics import exposition
from tracer.profiler import formats
from tracer.profiler.sampler import SpanMap
from tracer.span import INTERNAL, LocalTrace, Span


def burn(seconds: float) -> int:
    end = time.thread_time() + seconds
    n = 0
    while time.thread_time() < end:
        n += sum(range(200))
    return n


def burn_alpha(seconds: float) -> int:
    return burn(seconds)


def burn_beta(seconds: float) -> int:
    return burn(seconds)


def install(tmp_path: Path, **options: Any) -> MemoryReporter:
    reporter = reporters.create("memory")
    settings: dict[str, Any] = {
        "app_name": "profiled",
        "reporter": reporter,
        "flush_interval": 0.02,
        "metrics": False,
        "memory_watch": False,
        "heap_snapshot_signal": None,
        "profile_dir": str(tmp_path / "profiles"),
        **options,
    }
    tracer.install(**settings)
    assert isinstance(reporter, MemoryReporter)
    return reporter


def labelled(handle: tracer.profiler.Profile) -> list[tuple[list[str], dict[str, str], int]]:
    """The samples of ``handle``'s pprof output: function names leaf first, labels, count."""
    message = profile_class()()
    message.ParseFromString(gzip.decompress(handle.pprof()))
    strings = list(message.string_table)
    functions = {f.id: strings[f.name] for f in message.function}
    locations = {
        loc.id: [functions[line.function_id] for line in loc.line] for loc in message.location
    }
    out = []
    for sample in message.sample:
        names = [name for loc in sample.location_id for name in locations[loc]]
        labels = {strings[label.key]: strings[label.str] for label in sample.label}
        out.append((names, labels, int(sample.value[0])))
    return out


def span_maps() -> list[Any]:
    rt = installer.runtime
    assert rt is not None
    return [p for p in rt.processors if isinstance(p, SpanMap)]


# -- the handle -----------------------------------------------------------------------------------


def test_a_profile_writes_three_private_files_and_reports_a_batch(tmp_path: Path) -> None:
    reporter = install(tmp_path)
    with tracer.profile(10) as handle:
        with tracer.span("alpha") as alpha:
            burn_alpha(0.3)
    assert not handle.running
    paths = handle.wait()
    assert set(paths) == {"speedscope", "collapsed", "pprof"}
    folder = tmp_path / "profiles"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for path in paths.values():
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        kind, rows = formats.read(Path(path).read_bytes())
        table = formats.top(rows, "alpha", 3)
        assert "burn" in table["functions"][0]["function"], (kind, table)
    assert tracer.flush(10)
    (batch,) = [b["profile"] for b in reporter.batches if "profile" in b]
    assert batch["format"] == "tracer-profile" and batch["reason"] == "manual"
    assert batch["routes"] == ["alpha"]
    assert batch["files"] == paths
    assert batch["samples"] == handle.summary["samples"] > 0
    # The stacks of each sampled trace, for a flame graph per trace.
    (traced,) = batch["traces"]
    assert batch["traces_sampled"] == 1
    assert alpha is not None
    assert traced["trace_id"] == alpha.trace_id and traced["route"] == "alpha"
    assert 0 < traced["samples"] <= batch["samples"]
    assert "burn_alpha" in traced["collapsed"]
    assert not traced["collapsed"].startswith("route ")


def test_one_profile_at_a_time_and_a_hard_cap(tmp_path: Path) -> None:
    install(tmp_path, profile_max_seconds=5)
    with pytest.raises(ValueError, match="profile_max_seconds"):
        tracer.profile(6)
    with pytest.raises(ValueError):
        tracer.profile(0)
    with pytest.raises(TypeError):
        tracer.profile("1")  # type: ignore[arg-type]
    handle = tracer.profile(5, write=False)
    with pytest.raises(tracer.profiler.ProfileBusy):
        tracer.profile(1)
    handle.stop()
    assert handle.wait(10) == {}
    assert tracer.profiler.current() is None
    tracer.profile(0.05, write=False).wait(10)


def test_requests_pay_for_the_span_map_only_while_a_profile_runs(tmp_path: Path) -> None:
    install(tmp_path)
    rt = installer.runtime
    assert rt is not None
    before = rt.processors
    assert span_maps() == []
    handle = tracer.profile(10, write=False, report=False)
    assert len(span_maps()) == 1
    handle.stop()
    handle.wait(10)
    assert span_maps() == []
    assert rt.processors == before


# -- what each sample is tied to ------------------------------------------------------------------


def test_threads_and_executor_workers_are_tied_to_their_own_spans(tmp_path: Path) -> None:
    install(tmp_path)
    seen: dict[str, Any] = {}

    def work(name: str, fn: Any) -> None:
        with tracer.span(name) as span:
            seen[name] = span
            fn(0.4)

    with tracer.profile(20, write=False) as handle:
        thread = threading.Thread(target=work, args=("alpha", burn_alpha))
        thread.start()
        with ThreadPoolExecutor(1) as pool:
            pool.submit(work, "beta", burn_beta).result()
        thread.join()
    samples = labelled(handle)
    for name, fn in (("alpha", "burn_alpha"), ("beta", "burn_beta")):
        mine = [(labels, n) for names, labels, n in samples if fn in names]
        assert mine, name
        span = seen[name]
        right = sum(n for labels, n in mine if labels.get("span_id") == span.span_id)
        assert right >= 0.9 * sum(n for _, n in mine), name
        assert all(labels.get("trace_id") == span.trace_id for labels, _ in mine if labels)


def test_samples_of_an_event_loop_go_to_the_running_tasks_span(tmp_path: Path) -> None:
    install(tmp_path)
    spans: dict[str, Any] = {}

    async def task(name: str, fn: Any) -> None:
        with tracer.span(name) as span:
            spans[name] = span
            for _ in range(12):
                fn(0.03)  # longer than the switch interval: the sampler gets in meanwhile
                await asyncio.sleep(0)

    async def main() -> None:
        await asyncio.gather(task("alpha", burn_alpha), task("beta", burn_beta))

    with tracer.profile(30, write=False) as handle:
        asyncio.run(main())
    samples = labelled(handle)
    for name, fn in (("alpha", "burn_alpha"), ("beta", "burn_beta")):
        mine = [(labels, n) for names, labels, n in samples if fn in names]
        assert mine, name
        right = sum(n for labels, n in mine if labels.get("span_id") == spans[name].span_id)
        assert right >= 0.9 * sum(n for _, n in mine), (name, mine)


# -- triggers -------------------------------------------------------------------------------------


def test_the_signal_starts_a_profile_and_uninstall_puts_the_handler_back(tmp_path: Path) -> None:
    original = signal.getsignal(signal.SIGUSR1)
    install(tmp_path, profile_signal="SIGUSR1", profile_signal_seconds=0.2)
    assert signal.getsignal(signal.SIGUSR1) is not original
    os.kill(os.getpid(), signal.SIGUSR1)
    folder = tmp_path / "profiles"
    eventually(lambda: folder.exists() and len(list(folder.glob("*.pb.gz"))) == 1, what="file")
    eventually(lambda: tracer.profiler.current() is None, what="the end of the profile")
    tracer.uninstall()
    assert signal.getsignal(signal.SIGUSR1) is original


def test_routine_signals_are_refused_for_profiles(tmp_path: Path) -> None:
    for name in ("SIGINT", "SIGCHLD", "SIGKILL"):
        with pytest.raises(ConfigError, match="profile_signal"):
            install(tmp_path, profile_signal=name)


def test_an_on_demand_profile_ends_the_continuous_window_which_then_resumes(
    tmp_path: Path,
) -> None:
    install(tmp_path, profile_continuous=True, profile_continuous_window=30)
    eventually(lambda: (p := tracer.profiler.current()) is not None and p.reason == "continuous")
    window = tracer.profiler.current()
    assert window is not None
    handle = tracer.profile(0.2)
    assert not window.running and window.paths  # written when it gave way
    handle.wait(10)
    eventually(
        lambda: (
            (p := tracer.profiler.current()) is not None
            and p.reason == "continuous"
            and p is not window
        ),
        what="the next continuous window",
    )


def test_uninstall_stops_everything(tmp_path: Path) -> None:
    original = signal.getsignal(signal.SIGUSR1)
    install(
        tmp_path,
        profile_continuous=True,
        profile_signal="SIGUSR1",
        metrics=True,
        metrics_port=0,
        metrics_interval=None,
    )
    assert "/debug/profile" in exposition._routes
    eventually(lambda: tracer.profiler.current() is not None, what="the continuous window")
    tracer.uninstall()
    names = [t.name for t in threading.enumerate()]
    assert not [n for n in names if n.startswith("tracer-profiler")], names
    assert tracer.profiler.current() is None
    assert signal.getsignal(signal.SIGUSR1) is original
    assert "/debug/profile" not in exposition._routes


def test_an_unsafe_folder_is_refused_and_the_newest_profiles_are_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    open_folder = tmp_path / "open"
    open_folder.mkdir()
    open_folder.chmod(0o777)
    install(tmp_path, profile_max_files=2)
    assert tracer.profile(0.05, folder=open_folder).wait(10) == {}
    assert list(open_folder.iterdir()) == []
    assert "profiles are not written there" in caplog.text
    written = [tracer.profile(0.05).wait(10) for _ in range(3)]
    left = sorted(p.name for p in (tmp_path / "profiles").iterdir())
    assert len(left) == 6
    assert all(os.path.exists(p) for w in written[1:] for p in w.values())
    assert not any(os.path.exists(p) for p in written[0].values())


# -- fork -----------------------------------------------------------------------------------------


def test_a_forked_child_never_writes_its_parents_profile(tmp_path: Path) -> None:
    install(tmp_path)
    handle = tracer.profile(30)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            ok = tracer.profiler.current() is None and not handle.running and span_maps() == []
            burn(0.3)
            code = 0 if ok else 3
        finally:
            os._exit(code)
    assert wait_child(pid) == 0
    handle.stop()
    paths = handle.wait(10)
    files = sorted((tmp_path / "profiles").iterdir())
    assert sorted(map(str, files)) == sorted(paths.values())
    assert all(f"-{os.getpid()}-" in f.name for f in files)


def test_a_forked_child_runs_its_own_continuous_windows(tmp_path: Path) -> None:
    install(tmp_path, profile_continuous=True, profile_continuous_window=1)
    eventually(lambda: tracer.profiler.current() is not None, what="the parent's window")
    folder = tmp_path / "profiles"
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            mine = f"-{os.getpid()}-"
            # One whole profile of its own: three files named with its pid.
            found = eventually(
                lambda: folder.exists() and len([f for f in os.listdir(folder) if mine in f]) >= 3,
                timeout=30,
            )
            code = 0 if found else 4
        except BaseException:
            code = 5
        finally:
            os._exit(code)
    assert wait_child(pid) == 0
    assert [f for f in os.listdir(folder) if f"-{pid}-" in f]


# -- safety under threaded load -------------------------------------------------------------------

CHURN = """
import asyncio, sys, threading, time
import tracer, tracer.profiler, reporters
from tracer.profiler import sampler
sampler.CPU_BUDGET = 1.0  # no backoff: sample as fast as asked, to stress the stack walk
tracer.install(app_name="churn", reporter=reporters.create("memory"), metrics=False,
               memory_watch=False, heap_snapshot_signal=None)
stop = time.monotonic() + 2.0

def gen(n):
    for i in range(n):
        yield i

def deep(n):
    if n:
        return deep(n - 1)
    return sum(gen(50))

def short_lived():
    with tracer.span("short"):
        deep(40)
        try:
            raise ValueError("x")
        except ValueError:
            pass

async def tasks():
    async def one(i):
        with tracer.span("task"):
            await asyncio.sleep(0)
            deep(20)
    await asyncio.gather(*(one(i) for i in range(20)))

def loops():
    while time.monotonic() < stop:
        asyncio.run(tasks())

def spawner():
    while time.monotonic() < stop:
        threads = [threading.Thread(target=short_lived) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

workers = [threading.Thread(target=spawner) for _ in range(3)]
workers += [threading.Thread(target=loops) for _ in range(2)]
with tracer.profile(2.5, rate=1000, write=False) as p:
    for w in workers:
        w.start()
    for w in workers:
        w.join()
assert p.summary["samples"] > 0, p.summary
assert p.error is None, p.error
tracer.uninstall()
print("ok")
"""


def test_sampling_threads_that_come_and_go_never_crashes() -> None:
    assert_child_prints_ok(CHURN)


# -- the command and the formats ------------------------------------------------------------------


def test_profile_show_reads_each_of_the_three_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    install(tmp_path)
    with tracer.profile(10) as handle:
        with tracer.span("alpha"):
            burn_alpha(0.2)
        with tracer.span("beta"):
            burn_beta(0.2)
    capsys.readouterr()
    for path in handle.wait().values():
        assert cli_main(["profile", "show", path, "--route", "beta", "--top", "100", "--json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["route"] == "beta"
        assert set(doc["routes"]) == {"beta"}
        assert any("burn_beta" in row["function"] for row in doc["functions"])
        assert not any("burn_alpha" in row["function"] for row in doc["functions"])
        assert cli_main(["profile", "show", path, "--top", "100"]) == 0
        text = capsys.readouterr().out
        assert "burn_alpha" in text and "burn_beta" in text
    broken = tmp_path / "broken.pb.gz"
    broken.write_bytes(gzip.compress(b"\xff\xff\xff"))
    assert cli_main(["profile", "show", str(broken)]) == 2
    assert "not a profile" in capsys.readouterr().err


def test_names_with_separators_survive_collapsed_stacks() -> None:
    from tracer.profiler.sampler import Recording

    recording = Recording()
    recording.functions = [("a;b", "x y.py", 1), ("c\nd", "z.py", 2)]
    recording.stacks = [(0, 1)]
    recording.threads = ["main"]
    recording.spans = [None, ("t" * 32, "s" * 16, "r" * 16, "/x;y")]
    recording.counts = {(0, 0, 1): [3, 30]}
    rows = formats.read_collapsed(formats.collapsed(recording))
    assert rows == [(("a,b (x y.py:1)", "c d (z.py:2)"), "/x,y", 3)]
    decoded = formats.read_pprof(formats.pprof(recording, 10, 0, 0, []))
    assert decoded == [(("a;b (x y.py:1)", "c\nd (z.py:2)"), "/x;y", 3)]


def test_a_profile_without_tracer_installed_still_samples_and_writes(tmp_path: Path) -> None:
    with tracer.profile(10, folder=tmp_path) as handle:
        burn_alpha(0.2)
    paths = handle.wait()
    assert len(paths) == 3
    _, rows = formats.read(Path(paths["collapsed"]).read_bytes())
    assert any("burn_alpha" in frame for row in rows for frame in row[0])
    assert all(route is None for _, route, _ in rows)  # no span map without a runtime


def test_the_debug_route_is_served_only_with_a_metrics_port(tmp_path: Path) -> None:
    install(tmp_path, metrics=True, metrics_interval=None)
    assert "/debug/profile" not in exposition._routes


def _span(name: str) -> Span:

    tid = "a" * 32
    return Span(INTERNAL, name, tid, tid, None, LocalTrace(True), True)


def test_the_span_map_skips_ended_spans_and_prunes_ended_threads() -> None:
    from tracer.profiler.sampler import _open_span

    table = SpanMap()
    me = threading.get_ident()
    root = _span("root")
    root.local.root = root
    table.on_start(root)
    child = Span(INTERNAL, "child", root.trace_id, root.trace_id, root.span_id, root.local, False)
    table.on_start(child)
    assert _open_span(table.thread_span(me)) is child
    child.finish()
    assert _open_span(table.thread_span(me)) is root  # the request goes on after its call ended
    root.finish()
    assert _open_span(table.thread_span(me)) is None
    again = _span("again")
    table.on_start(again)
    assert table.thread_span(me) is again

    # Another thread's span is its own, and its entry goes once the thread ended.
    theirs: list[Any] = []

    def other() -> None:
        span = _span("other thread")
        table.on_start(span)
        theirs.append((threading.get_ident(), span))

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    ident, span = theirs[0]
    assert table.thread_span(ident) is span and table.thread_span(me) is again
    assert table.prune() == 1
    assert table.thread_span(ident) is None and table.thread_span(me) is again


def test_a_task_s_span_is_read_from_its_own_context() -> None:
    from tracer.context import current
    from tracer.profiler.sampler import task_span

    async def main() -> None:
        waiting = asyncio.Event()
        entered = asyncio.Event()

        async def request(name: str) -> None:
            current.set(_span(name))
            entered.set()
            await waiting.wait()

        tasks = [asyncio.ensure_future(request(f"task {i}")) for i in range(3)]
        while not all(task_span(t) is not None for t in tasks):
            await asyncio.sleep(0)
        # Each task has its own span, read from outside the task.
        assert [task_span(t).name for t in tasks] == ["task 0", "task 1", "task 2"]  # type: ignore[union-attr]
        assert task_span(asyncio.current_task()) is None
        waiting.set()
        await asyncio.gather(*tasks)

    asyncio.run(main())
