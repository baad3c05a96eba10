"""``tracer run -m`` traces a module run as ``__main__``, the standard library's servers too:
``python -m tracer run -m http.server`` records its requests."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

from tests.cli.conftest import Child, spans_in, tracer_cmd
from tests.conftest import assert_child_prints_ok


def test_python_m_http_server_is_traced(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "hello.txt").write_text("hello\n")
    # Port 0: the kernel picks a free port, and http.server prints the one it got.
    child = Child(
        "run",
        "-m",
        "http.server",
        "0",
        "--bind",
        "127.0.0.1",
        "--directory",
        str(site),
        cwd=tmp_path,
    )
    try:
        line = child.wait_for("Serving HTTP on")
        port = int(re.search(r" port (\d+)", line).group(1))  # type: ignore[union-attr]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/hello.txt", timeout=10) as answer:
            assert answer.read() == b"hello\n"
        child.wait_for('"kind":"server"')
    finally:
        status = child.stop()
    assert status == 0, "".join(child.stderr)
    (span,) = spans_in("".join(child.stdout))
    assert span["kind"] == "server" and span["name"] == "GET /hello.txt"
    assert span["http"]["status_code"] == 200
    # Named after the module, as `python -m http.server` is.
    assert span["service"] == "http.server"


def test_the_main_module_copy_is_uninstalled_exactly() -> None:
    # http.server's main block parses --help and exits before serving: by then the copy of
    # the module running as __main__ is patched, and uninstall() must put back its originals.
    assert_child_prints_ok(
        """
import contextlib, io
import tracer
from tracer import cli, installer, patching

with contextlib.redirect_stdout(io.StringIO()):
    try:
        cli.main(["run", "-m", "http.server", "--help"])
    except SystemExit:
        pass
copies = [i for i in installer._instrumentations if i.module == "__main__"]
assert [c.name for c in copies] == ["http.server"], copies
owner = copies[0]._targets[0][0]
assert owner.__name__ == "BaseHTTPRequestHandler" and owner.__module__ == "__main__"
attributes = [attribute for _, attribute in copies[0]._targets]
originals = {a: patching._originals[(owner, a)] for a in attributes}
assert all(patching.is_ours(owner.__dict__[a]) for a in attributes)
tracer.uninstall()
assert all(owner.__dict__[a] is originals[a] for a in attributes)
assert not installer._instrumentations
print("ok")
"""
    )


def test_a_module_tracer_does_not_instrument_runs_as_before(tmp_path: Path) -> None:
    package = tmp_path / "tool"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(
        "import json, sys\nprint(json.dumps([__name__, __package__, sys.argv[1:]]))\n"
    )
    out = tracer_cmd("run", "-m", "tool", "a", "--b", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[0]) == ["__main__", "tool", ["a", "--b"]]
