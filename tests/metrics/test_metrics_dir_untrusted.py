"""What others may leave in ``metrics_dir``: files that do not validate, files of another bucket
layout, FIFOs, devices, symlinks and oversized files, planted temporary files, and directories
that other users can write to. Metrics keep being served, and nothing outside is read or written.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest

import reporters
import tracer
import tracer.metrics
from tests.conftest import ROOT, subprocess_env
from tests.metrics.helpers import HttpServer, scrape, settled, total
from tracer.config import Config
from tracer.metrics import multiprocess

COUNT = "http_server_request_duration_seconds_count"
INVALID = "tracer_metrics_files_invalid_total"
LIVE = os.getppid()  # another process that is alive for the whole test
# A pid that is neither LIVE nor this process's own (whose file tracer never reads): under
# pytest-xdist a worker's pid is often its parent's plus one.
OTHER = next(pid for pid in range(LIVE + 1, LIVE + 4) if pid != os.getpid())


def good_state(
    pid: int,
    requests: int,
    buckets: tuple[float, ...] = Config.metrics_buckets,
    route: str = "/from-file",
) -> Any:
    """A file's state as another process of the same deployment writes it."""
    series = [0] * (len(buckets) + 2)
    series[0] = requests
    series[-1] = requests * 1000
    return {
        "pid": pid,
        "exited": False,
        "buckets": list(buckets),
        "series": {
            "http_server_request_duration_seconds": [[["GET", route, "200", "http"], series]],
            "http_server_active_requests": [[[], [0]]],
        },
        "samples": [
            {
                "name": "tracer_spans_created",
                "type": "counter",
                "doc": "Spans that entered the delivery pipeline.",
                "unit": "",
                "samples": [["tracer_spans_created_total", {}, 9.0]],
            },
        ],
    }


def write(directory: Path, pid: int, state: Any) -> Path:
    path = directory / f"tracer-metrics-{pid}.json"
    path.write_text(json.dumps(state))
    return path


def broken(change: str) -> Any:
    """A state that does not validate, in the way ``change`` names."""
    state = good_state(LIVE, 3, route="/from-bad")
    rows = state["series"]["http_server_request_duration_seconds"]
    if change == "list":
        return [state]
    if change == "row_not_pair":
        rows[0] = [rows[0][0]]
    elif change == "row_of_three":
        rows[0].append([1])
    elif change == "string_values":
        rows[0][1] = [str(v) for v in rows[0][1]]
    elif change == "negative_count":
        rows[0][1][0] = -5
    elif change == "bool_count":
        rows[0][1][0] = True
    elif change == "wrong_width":
        rows[0][1] = rows[0][1][:-3]
    elif change == "wrong_label_count":
        rows[0][0] = ["GET"]
    elif change == "unknown_family":
        state["series"]["evil_total"] = rows
    elif change == "sample_without_name":
        del state["samples"][0]["name"]
    elif change == "sample_string_value":
        state["samples"][0]["samples"][0][2] = "9"
    elif change == "sample_nan":
        state["samples"][0]["samples"][0][2] = float("nan")
    elif change == "sample_name_injected":
        state["samples"][0]["samples"][0][0] = "tracer_spans_created_total 1e9\nevil"
    elif change == "sample_label_name_injected":
        state["samples"][0]["samples"][0][1] = {'a="1"} 5\nevil{b': "x"}
    elif change == "sample_unknown_family":
        state["samples"][0]["name"] = "evil"
        state["samples"][0]["samples"][0][0] = "evil_total"
    elif change == "series_a_list":
        state["series"] = list(state["series"].items())
    elif change == "pid_mismatch":
        state["pid"] = OTHER
    elif change == "no_buckets":
        del state["buckets"]
    elif change == "exited_a_string":
        state["exited"] = "no"
    else:
        raise AssertionError(change)
    return state


BROKEN = [
    "list",
    "row_not_pair",
    "row_of_three",
    "string_values",
    "negative_count",
    "bool_count",
    "wrong_width",
    "wrong_label_count",
    "unknown_family",
    "sample_without_name",
    "sample_string_value",
    "sample_nan",
    "sample_name_injected",
    "sample_label_name_injected",
    "sample_unknown_family",
    "series_a_list",
    "pid_mismatch",
    "no_buckets",
    "exited_a_string",
]


def install(directory: Path, **options: Any) -> None:
    tracer.install(
        reporter=reporters.create("memory"),
        memory_watch=False,
        metrics_interval=None,
        metrics_dir=str(directory),
        metrics_port=0,
        **options,
    )


def port_text() -> str:
    port = tracer.metrics.metrics_port()
    assert port is not None, "no /metrics endpoint was started"
    return scrape(f"http://127.0.0.1:{port}/metrics")


def wsgi_text() -> str:
    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = make_server("127.0.0.1", 0, tracer.metrics.wsgi_app(), handler_class=Quiet)
    import threading

    thread = threading.Thread(target=server.handle_request, daemon=True)
    thread.start()
    try:
        return scrape(f"http://127.0.0.1:{server.server_address[1]}/metrics")
    finally:
        thread.join(10)
        server.server_close()


@pytest.fixture
def shared(tmp_path: Path) -> Path:
    directory = tmp_path / "shared"
    directory.mkdir(mode=0o755)
    return directory


@pytest.fixture
def app() -> Iterator[HttpServer]:
    srv = HttpServer()
    yield srv
    srv.close()


@pytest.mark.parametrize("change", BROKEN)
def test_a_file_that_does_not_validate_is_skipped_and_counted(
    shared: Path, app: HttpServer, change: str
) -> None:
    write(shared, LIVE, broken(change))
    other = exited_pid()
    write(shared, other, good_state(other, 4))
    install(shared)
    for text in (port_text(), scrape(f"{app.url}/metrics"), wsgi_text()):
        # The good file still counts; the bad one adds nothing and is counted once, however
        # many scrapes read it.
        assert total(text, COUNT, http_route="/from-file") == 4
        assert total(text, COUNT, http_route="/from-bad") == 0
        assert total(text, INVALID) == 1
        assert total(text, INVALID, reason="malformed") == 1
        assert "evil" not in text


def test_a_bad_file_that_appears_after_install_changes_no_answer(
    shared: Path, app: HttpServer
) -> None:
    install(shared)
    assert total(port_text(), INVALID) == 0
    write(shared, LIVE, broken("row_not_pair"))
    write(shared, OTHER, broken("string_values"))  # and the pid of another name
    for text in (port_text(), scrape(f"{app.url}/metrics"), wsgi_text()):
        assert total(text, INVALID, reason="malformed") == 2
    # serve_http inside the application's own handler, many times over: never an exception.
    for _ in range(3):
        assert total(scrape(f"{app.url}/metrics"), INVALID) == 2


def test_a_file_with_other_buckets_is_left_out_with_one_warning(
    shared: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # An earlier run with the default buckets left this; this run has other buckets.
    write(shared, LIVE, good_state(LIVE, 7))
    ours = (0.1, 1.0)
    other = exited_pid()
    write(shared, other, good_state(other, 2, buckets=ours))
    with caplog.at_level(logging.WARNING, logger="tracer"):
        install(shared, metrics_buckets=list(ours))
        texts = [port_text() for _ in range(3)]
    for text in texts:
        assert total(text, COUNT, http_route="/from-file") == 2
        assert total(text, INVALID, reason="buckets") == 1
    warnings = [r.getMessage() for r in caplog.records if "metrics_buckets" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert f"tracer-metrics-{LIVE}.json" in warnings[0]


def exited_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(30)
    return child.pid


# -- what is read: regular files only, bounded ---------------------------------------------------

CHILD = textwrap.dedent(
    """
    import resource, sys, urllib.request
    # Reading without a bound would hit this long before the machine's memory.
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
    import reporters, tracer, tracer.metrics
    tracer.install(reporter=reporters.create("memory"), memory_watch=False,
                   metrics_interval=None, metrics_dir=sys.argv[1], metrics_port=0)
    port = tracer.metrics.metrics_port()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        sys.stdout.write(response.read().decode())
    tracer.uninstall()
    """
)


def child_scrape(directory: Path) -> str:
    """A fresh process installs tracer on ``directory`` and prints one scrape of its port."""
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=subprocess_env(),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "internal error" not in out.stderr, out.stderr[-3000:]
    return out.stdout


def test_a_fifo_in_the_directory_is_not_read(shared: Path) -> None:
    os.mkfifo(shared / f"tracer-metrics-{LIVE}.json")
    text = child_scrape(shared)
    assert total(text, INVALID, reason="not_regular") == 1


def test_a_link_to_dev_zero_is_not_followed(shared: Path) -> None:
    os.symlink("/dev/zero", shared / f"tracer-metrics-{LIVE}.json")
    text = child_scrape(shared)
    assert total(text, INVALID, reason="not_regular") == 1


def test_a_link_to_a_valid_file_elsewhere_is_not_followed(shared: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = write(elsewhere, LIVE, good_state(LIVE, 5))
    os.symlink(target, shared / f"tracer-metrics-{LIVE}.json")
    install(shared)
    text = port_text()
    assert total(text, COUNT) == 0
    assert total(text, INVALID, reason="not_regular") == 1


def test_a_file_over_the_size_cap_is_not_read(shared: Path) -> None:
    with open(shared / f"tracer-metrics-{LIVE}.json", "wb") as f:
        f.truncate(multiprocess.MAX_FILE_BYTES + 1)  # sparse: no disk is used
    install(shared)
    assert total(port_text(), INVALID, reason="too_large") == 1


# -- what is written: never through a planted link -----------------------------------------------


def test_a_planted_tmp_symlink_is_not_written_through(shared: Path, tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.write_text("keep me")
    mine = shared / f"tracer-metrics-{os.getpid()}.json"
    os.symlink(precious, f"{mine}.tmp")
    install(shared)
    tracer.uninstall()  # the last write, marked exited
    assert precious.read_text() == "keep me"
    state = json.loads(mine.read_text())
    assert state["pid"] == os.getpid() and state["exited"] is True
    assert not mine.is_symlink()


def test_a_planted_symlink_in_place_of_the_file_is_replaced_not_followed(
    shared: Path, tmp_path: Path
) -> None:
    precious = tmp_path / "precious"
    precious.write_text("keep me")
    mine = shared / f"tracer-metrics-{os.getpid()}.json"
    os.symlink(precious, mine)
    install(shared)
    tracer.uninstall()
    assert precious.read_text() == "keep me"
    assert not mine.is_symlink() and json.loads(mine.read_text())["exited"] is True


# -- whose directory -----------------------------------------------------------------------------


def refused(
    directory: Path, caplog: pytest.LogCaptureFixture, app: HttpServer, reason: str
) -> None:
    """tracer warns once, serves this process's metrics only, and touches nothing there."""
    write(directory, LIVE, good_state(LIVE, 6))
    before = sorted(os.listdir(directory))
    with caplog.at_level(logging.WARNING, logger="tracer"):
        install(directory)
        assert scrape(f"{app.url}/x") == "ok"
        text = settled(COUNT, 1, read=port_text)
        tracer.uninstall()
    assert total(text, COUNT) == 1  # ours only, not the file's 6
    assert sorted(os.listdir(directory)) == before
    warnings = [r.getMessage() for r in caplog.records if str(directory) in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert reason in warnings[0] and "this process" in warnings[0]


def test_a_directory_owned_by_another_user_is_refused(
    shared: Path, caplog: pytest.LogCaptureFixture, app: HttpServer
) -> None:
    os.chown(shared, 65534, 65534)
    refused(shared, caplog, app, "owned by uid 65534")


def test_a_world_writable_directory_without_the_sticky_bit_is_refused(
    shared: Path, caplog: pytest.LogCaptureFixture, app: HttpServer
) -> None:
    os.chmod(shared, 0o777)
    refused(shared, caplog, app, "writable by every user")


def test_a_world_writable_directory_with_the_sticky_bit_is_used(
    shared: Path, app: HttpServer
) -> None:
    os.chmod(shared, 0o1777)
    write(shared, LIVE, good_state(LIVE, 6))
    install(shared)
    assert scrape(f"{app.url}/x") == "ok"
    assert total(settled(COUNT, 7, read=port_text), COUNT) == 7
    tracer.uninstall()
    assert (shared / f"tracer-metrics-{os.getpid()}.json").exists()
