"""The sampler against the garbage collector: a collection that starts while the sampler reads
every thread's frames must not hang the process (CPython 3.11 frees a ``threading.local`` there
under the lock the frames are read with)."""

from __future__ import annotations

import subprocess
import sys

from tests.support.children import subprocess_env
from tests.support.waiting import DEADLINE

# Twenty idle threads give the sampler many frames to read; a collection at every allocation
# (threshold 1) makes one start inside that read; the cycles hold a threading.local for it to
# free. Bounded in count and time.
CHILD = """
import gc, threading, time, tracer

class Node:
    pass

stop = threading.Event()
for _ in range(20):
    threading.Thread(target=stop.wait, daemon=True).start()
handle = tracer.profile(seconds=2, write=False, report=False)
gc.set_threshold(1)
end = time.monotonic() + 2
n = 0
while time.monotonic() < end and n < 50_000:
    gc.disable()
    node = Node()
    node.local = threading.local()
    node.self = node
    del node
    gc.enable()
    time.sleep(0.0005)
    n += 1
gc.set_threshold(700)
handle.stop()
handle.wait(30)
assert gc.isenabled()
print("ok", bool(handle.collapsed().strip()))
"""


def test_a_collection_during_a_sample_does_not_hang_the_process() -> None:
    try:
        out = subprocess.run(
            [sys.executable, "-c", CHILD],
            capture_output=True,
            text=True,
            timeout=DEADLINE,
            env=subprocess_env(),
        )
    except subprocess.TimeoutExpired:
        raise AssertionError("the profiled process hung while the collector ran") from None
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ok", "True"]


def test_the_sampler_leaves_a_disabled_collector_disabled() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import gc, tracer\n"
            "gc.disable()\n"
            "tracer.profile(seconds=0.3, write=False, report=False).wait(30)\n"
            "print(gc.isenabled())",
        ],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        env=subprocess_env(),
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
