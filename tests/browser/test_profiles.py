"""The profiles page: a real process's CPU profile, listed and drawn as a flame graph."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from tests.browser.conftest import Viewer, find_all, open_page, wait_for
from tests.support.children import subprocess_env
from tests.support.waiting import eventually

#: A process that profiles itself while it spins in ``spin_in_checkout`` inside a span, and
#: reports the profile to the viewer (argv[1]: its batches URL).
PROFILED = """
import sys, time
import reporters, tracer

tracer.install(
    app_name="profiled", reporter=reporters.create("http", url=sys.argv[1]), flush_interval=0.05,
    sample_rate=1.0, metrics=False, memory_watch=False,
)

def spin_in_checkout():
    end = time.monotonic() + 0.6
    while time.monotonic() < end:
        sum(range(500))

with tracer.profile(seconds=5, write=False):
    with tracer.span("checkout"):
        spin_in_checkout()
tracer.uninstall()
"""


def test_a_profile_is_listed_and_its_flame_graph_names_the_hot_function(
    driver: Any, viewer: Viewer
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROFILED, viewer.url + "api/v1/batches"],
        capture_output=True,
        text=True,
        timeout=60,
        env=subprocess_env(),
    )
    assert done.returncode == 0, done.stderr
    (profile,) = eventually(
        lambda: viewer.get_json("/api/profiles?service=profiled")["profiles"], what="the profile"
    )
    open_page(driver, viewer.url + "profiles", f'tr.profile-row[data-profile-id="{profile["id"]}"]')
    open_page(driver, f"{viewer.url}profiles/{profile['id']}", "svg#flame rect")
    wait_for(
        driver,
        lambda d: (
            "spin_in_checkout"
            in d.find_element("css selector", "svg#flame").get_attribute("textContent")
        ),
        "the hot function in the flame graph",
    )
    assert find_all(driver, "select#route")
