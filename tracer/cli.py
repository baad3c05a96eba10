"""The ``tracer`` command (also ``python -m tracer``): ``run``, ``demo``, ``serve``, ``init``,
``heap`` and ``profile``.

``tracer run app.py [args...]`` and ``tracer run -m package [args...]`` run a program as
``__main__`` with tracing installed, as ``python app.py`` / ``python -m package`` would;
``tracer run command [args...]`` (``tracer run uvicorn app:app``) runs a command found on
``PATH`` in place of ``tracer``. In all three, every Python process started from the program
(a server's workers, spawned or forked) installs tracer too, with the same configuration (see
:func:`bootstrap_children`);
``tracer demo`` starts traced services on 127.0.0.1 and prints their traces; ``tracer serve``
receives traces and shows them in a browser (:mod:`tracer.serve`); ``tracer init``
writes a commented ``trace.config.py``; ``tracer heap show|diff`` reads heap snapshots;
``tracer profile show`` reads CPU profiles.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import os
import runpy
import shutil
import sys
import types
from collections.abc import Callable, MutableMapping
from importlib.machinery import ModuleSpec
from pathlib import Path

from tracer import config

#: The folder whose ``sitecustomize`` installs tracer in a Python process at start-up.
BOOTSTRAP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bootstrap")


def bootstrap_children(env: MutableMapping[str, str] = os.environ) -> None:
    """Have every Python process started with ``env`` install tracer at start-up.

    :data:`BOOTSTRAP` goes first on ``PYTHONPATH`` and ``TRACER_BOOTSTRAP=1`` is set; the config
    file this process found, if any, is named in ``TRACE_CONFIG_PATH``, so that a child whose
    working directory or entry point differs (a spawned worker runs multiprocessing's) reads
    the same one. Only a process started afterwards is affected: this one is not.
    """
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if BOOTSTRAP not in parts:
        env["PYTHONPATH"] = os.pathsep.join([BOOTSTRAP, *parts])
    env["TRACER_BOOTSTRAP"] = "1"
    if not env.get("TRACE_CONFIG_PATH"):
        found = config.find_file(None, env)
        if found is not None:
            env["TRACE_CONFIG_PATH"] = str(Path(found).resolve())


def _install(entry: config.EntryPoint) -> bool:
    """Install tracer for ``entry``; False (the error printed) for a configuration mistake."""
    import tracer
    from tracer import installer

    config.set_entry_point(entry)
    try:
        tracer.install()
    except config.ConfigError as exc:
        # The message names the file or variable, the key and the fix: a traceback through
        # tracer's own frames would only bury it.
        print(f"tracer: configuration error: {exc}", file=sys.stderr)
        return False
    bootstrap_children()
    rt = installer.runtime
    if rt is not None and rt.config.source != "defaults":
        print(
            f"tracer: tracing {entry.what} as service {rt.service!r};"
            f" configuration: {rt.config.source}",
            file=sys.stderr,
        )
    return True


def _run_script(target: list[str]) -> int:
    script = target[0]
    if not os.path.isfile(script):
        print(f"tracer run: no such script: {script}", file=sys.stderr)
        return 2
    if not _install(config.script_entry_point(script)):
        return 2
    sys.argv = list(target)
    # As `python app.py` would: the script's folder comes first on the import path.
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    runpy.run_path(script, run_name="__main__")
    return 0


def _which(name: str) -> str | None:
    """The command ``name`` on ``PATH``, else beside this Python (a virtualenv's scripts,
    when ``tracer`` runs as ``python -m tracer`` with the virtualenv not on ``PATH``)."""
    return shutil.which(name) or shutil.which(name, path=os.path.dirname(sys.executable))


def _run_command(target: list[str], found: str) -> int:
    """Run the command ``found`` (``target[0]`` on ``PATH``) in place of this process, with
    tracer installed in it, if it is a Python program, and in every Python process it starts."""
    try:
        # A mistake in the configuration is shown here, once, not by each process.
        config.load()
    except config.ConfigError as exc:
        print(f"tracer: configuration error: {exc}", file=sys.stderr)
        return 2
    bootstrap_children()
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(found, target)
    except OSError as exc:
        print(f"tracer run: cannot run {target[0]}: {exc.strerror or exc}", file=sys.stderr)
        return 126
    return 0  # not reached: execv() returns only by raising


def _find_module(name: str) -> ModuleSpec | str:
    """The spec of what ``python -m name`` runs (a package's ``__main__``), or why there is
    none, in Python's words."""
    try:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations is not None:
            package, name = name, f"{name}.__main__"
            spec = importlib.util.find_spec(name)
            if spec is None:
                return f"No module named {name}; {package!r} is a package and cannot be run"
    except (ImportError, ValueError) as exc:
        return f"Error while finding module specification for {name!r} ({exc})"
    if spec is None or spec.loader is None:
        return f"No module named {name}"
    return spec


def _run_module(target: list[str]) -> int:
    # As `python -m` would: the working directory comes first on the import path (the
    # `tracer` console script starts with its own folder there instead).
    if os.getcwd() not in sys.path[:1]:
        sys.path.insert(0, os.getcwd())
    found = _find_module(target[0])
    if isinstance(found, str):
        print(f"tracer run: {found}", file=sys.stderr)
        return 1
    if not _install(config.module_entry_point(found.name, found.origin)):
        return 2
    sys.argv = list(target)
    from tracer import installer

    source = None
    if installer.instruments(found.name):
        get_source = getattr(found.loader, "get_source", None)
        source = get_source(found.name) if callable(get_source) else None
    if source is None:
        runpy.run_module(target[0], run_name="__main__", alter_sys=True)
    else:
        _run_instrumented_module(found, source)
    return 0


def _main_guard(node: ast.stmt) -> bool:
    """Whether ``node`` is ``if __name__ == "__main__":`` (either way round)."""
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
        return False
    test = node.test
    if len(test.ops) != 1 or not isinstance(test.ops[0], ast.Eq):
        return False
    sides = [test.left, test.comparators[0]]
    names = [s for s in sides if isinstance(s, ast.Name) and s.id == "__name__"]
    mains = [s for s in sides if isinstance(s, ast.Constant) and s.value == "__main__"]
    return len(names) == 1 and len(mains) == 1


def _run_instrumented_module(spec: ModuleSpec, source: str) -> None:
    """Run a module that tracer instruments (``-m http.server``) as ``__main__``, traced.

    runpy would run the module's source again as a new module, ``__main__``, whose classes
    are copies of the library's, not the patched ones: ``python -m http.server`` under
    ``tracer run`` recorded nothing. So the module runs in two steps, in one namespace set up
    as runpy sets it up: everything before its first top-level ``if __name__ == "__main__":``
    (the definitions), then the instrumentations of that module are applied to this namespace
    as well (``installer.instrument_main``, undone by ``uninstall()`` like every other patch, so
    uninstall stays exact), then the rest, which starts the server. Only modules that tracer
    instruments run this way; every other ``-m`` module goes through runpy unchanged.
    """
    origin = spec.origin or spec.name
    tree = ast.parse(source, filename=origin)
    split = next((i for i, node in enumerate(tree.body) if _main_guard(node)), len(tree.body))
    # A `from __future__` statement of the head applies to the tail too: repeated there.
    futures = [
        node
        for node in tree.body[:split]
        if isinstance(node, ast.ImportFrom) and node.module == "__future__"
    ]
    head = ast.Module(body=tree.body[:split], type_ignores=[])
    tail = ast.Module(body=futures + tree.body[split:], type_ignores=[])
    head_code = compile(head, origin, "exec", dont_inherit=True)
    tail_code = compile(tail, origin, "exec", dont_inherit=True)
    module = types.ModuleType("__main__")
    module.__dict__.update(
        __file__=origin,
        __cached__=spec.cached,
        __loader__=spec.loader,
        __package__=spec.parent,
        __spec__=spec,
    )
    saved_main, saved_argv0 = sys.modules["__main__"], sys.argv[0]
    sys.modules["__main__"], sys.argv[0] = module, origin
    try:
        exec(head_code, module.__dict__)
        from tracer import installer

        installer.instrument_main(spec.name)
        exec(tail_code, module.__dict__)
    finally:
        sys.modules["__main__"], sys.argv[0] = saved_main, saved_argv0


def _init(target: str) -> int:
    path = Path(target)
    if path.is_dir():
        path = path / config.FILE_NAME
    shown = path.absolute()
    try:
        # "x": never replaces a file, not even one created a moment ago by someone else.
        with open(path, "x", encoding="utf-8") as out:
            out.write(config.template())
    except FileExistsError:
        print(
            f"tracer init: {shown} already exists; left unchanged. Edit it, or remove it and run"
            " `tracer init` again.",
            file=sys.stderr,
        )
        return 1
    except OSError as exc:
        print(f"tracer init: cannot write {shown}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    found = "" if path.name == config.FILE_NAME else " (name it in TRACE_CONFIG_PATH)"
    print(f"tracer init: wrote {shown}{found}; every option is documented in it, with its default.")
    return 0


def _whole_number(what: str, least: int) -> Callable[[str], int]:
    """An argparse ``type=`` for a whole number of at least ``least``. Its refusal is the whole
    message: argparse would otherwise name the function (``invalid _count value``)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = least - 1
        if value < least:
            raise argparse.ArgumentTypeError(
                f"invalid {what}: {text!r} (a whole number, {least} or more)"
            )
        return value

    return parse


_count = _whole_number("count", 0)
_lines = _whole_number("number of lines", 1)


def _port(text: str) -> int:
    """An argparse ``type=`` for a TCP port, 0 (a free one) to 65535."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(
            f"invalid port: {text!r} (a whole number from 0, a free one, to 65535)"
        )
    return value


def _size(text: str) -> int:
    """An argparse ``type=`` for ``--max-size``: 1GB, 500MB, 2G or a number of bytes."""
    from tracer.serve.server import parse_size

    try:
        value = parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value < 1 << 20:
        raise argparse.ArgumentTypeError(f"invalid size: {text!r} (at least 1MB)")
    return value


def _token(text: str) -> str:
    """An argparse ``type=`` for ``--token``: 8 to 256 URL-safe characters."""
    import re

    if not re.fullmatch(r"[A-Za-z0-9._~-]{8,256}", text):
        raise argparse.ArgumentTypeError(
            "invalid token: 8 to 256 characters of A-Z, a-z, 0-9 and . _ ~ -"
        )
    return text


#: tracer.serve.server's DEFAULT_PORT and DEFAULT_OTLP_PORT, repeated so that building the
#: parser imports no server code for the other commands.
_SERVE_PORT, _OTLP_PORT = 8686, 4318


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser(
        "serve",
        help="a local trace viewer: receive OTLP, Zipkin and tracer's batches, browse them",
        description="Receive traces and metrics (OTLP/HTTP, Zipkin v2, tracer's own batches),"
        " store them in one SQLite file and show them in a browser. The first line printed is"
        " the viewer's URL. Ctrl-C or SIGTERM stops it.",
    )
    serve.add_argument(
        "--db",
        metavar="PATH",
        default=None,
        help="the SQLite file (default: $XDG_DATA_HOME/tracer/serve.db, else"
        " ~/.local/share/tracer/serve.db)",
    )
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="the address to listen on (default: 127.0.0.1); any other than a loopback one"
        " requires a token",
    )
    serve.add_argument(
        "--port",
        type=_port,
        default=_SERVE_PORT,
        metavar="P",
        help=f"the viewer's port, 0 for a free one (default: {_SERVE_PORT})",
    )
    serve.add_argument(
        "--otlp-port",
        type=_port,
        default=_OTLP_PORT,
        metavar="P",
        help=f"the receiver's port, 0 for a free one (default: {_OTLP_PORT});"
        " the viewer's port receives too",
    )
    serve.add_argument(
        "--max-size",
        type=_size,
        default=1 << 30,
        metavar="SIZE",
        help="the database's size limit, e.g. 1GB, 500MB, 2G or bytes; past it the oldest"
        " traces are deleted, whole (default: 1GB)",
    )
    serve.add_argument(
        "--token",
        type=_token,
        default=None,
        metavar="T",
        help="require this token of every request (default: none on 127.0.0.1; on any other"
        " address one is generated and printed in the URL)",
    )


def main(argv: list[str] | None = None, prog: str = "tracer") -> int:
    """Entry point of the ``tracer`` command and of ``python -m tracer`` (which passes its own
    ``prog``, so that usage lines show the command that was typed); returns the exit status."""
    parser = argparse.ArgumentParser(
        prog=prog, description="Distributed tracing for Python HTTP services."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run",
        help="run a script, -m module or command with tracing installed",
        description="Run a script, or a module with -m, as __main__ with tracing installed; or a"
        " command on PATH (tracer run uvicorn app:app). Every Python process they start"
        " installs tracer too.",
    )
    run.add_argument("-m", dest="module", action="store_true", help="run a module, like python -m")
    run.add_argument(
        "target", nargs=argparse.REMAINDER, help="script.py [args...], or command [args...]"
    )
    demo = sub.add_parser(
        "demo",
        help="start traced services on 127.0.0.1 and print their traces",
        description="Start traced services on 127.0.0.1, send requests through them and print"
        " each trace as a tree.",
    )
    demo.add_argument(
        "--requests", type=_count, default=3, metavar="N", help="checkout requests to send (3)"
    )
    demo.add_argument(
        "--serve",
        action="store_true",
        help="send the traces to a viewer (tracer serve) started in the demo, and keep it open"
        " until Ctrl-C",
    )
    demo.add_argument(
        "--port",
        type=_port,
        default=None,
        metavar="P",
        help="with --serve: the viewer's port (8686, or a free one when it is taken)",
    )
    demo.add_argument(
        "--otlp-port",
        type=_port,
        default=None,
        metavar="P",
        help="with --serve: the receiver's port (4318, or a free one when it is taken)",
    )
    _add_serve(sub)
    init = sub.add_parser(
        "init",
        help=f"write a commented {config.FILE_NAME} (every option, with its default)",
        description=f"Write a commented {config.FILE_NAME} documenting every option; an existing"
        " file is never replaced.",
    )
    init.add_argument(
        "path",
        nargs="?",
        default=config.FILE_NAME,
        help=f"where to write it (./{config.FILE_NAME})",
    )
    heap = sub.add_parser(
        "heap",
        help="read heap snapshots: show one, or diff two",
        description="Read heap snapshots written by tracer.memory.snapshot() or on a signal.",
    )
    heap_sub = heap.add_subparsers(dest="heap_command", required=True)
    heap_show = heap_sub.add_parser(
        "show",
        help="top types by size and by count, largest containers, top allocation sites",
        description="Print a heap snapshot: top types by size and by count, the largest"
        " containers and the top allocation sites.",
    )
    heap_show.add_argument("files", nargs=1, metavar="FILE", help="a heap snapshot file")
    heap_diff = heap_sub.add_parser(
        "diff",
        help="the types and source lines that grew between two snapshots, largest first",
        description="Print what grew from OLD to NEW, largest first: types, then allocation sites.",
    )
    # Two arguments, not nargs=2 with a tuple metavar: argparse's "required" error cannot
    # name a tuple metavar on some Python versions and raised TypeError instead.
    heap_diff.add_argument("old", metavar="OLD", help="the older heap snapshot")
    heap_diff.add_argument("new", metavar="NEW", help="the newer heap snapshot")
    for heap_parser in (heap_show, heap_diff):
        heap_parser.add_argument("--json", action="store_true", help="one JSON document")
        heap_parser.add_argument(
            "--top", type=_lines, default=20, metavar="N", help="lines per table (20)"
        )
    profile = sub.add_parser(
        "profile",
        help="read CPU profiles: the hottest functions of one",
        description="Read CPU profiles written by tracer.profile() or its other triggers.",
    )
    profile_sub = profile.add_subparsers(dest="profile_command", required=True)
    profile_show = profile_sub.add_parser(
        "show",
        help="the hottest functions, self and total, for the profile or one route",
        description="Print a profile's hottest functions, self and total, for the whole profile"
        " or one route. FILE is any of its three files: speedscope JSON, collapsed stacks or"
        " pprof.",
    )
    profile_show.add_argument("file", metavar="FILE", help="a profile file")
    profile_show.add_argument("--route", metavar="R", help="only the samples of route R")
    profile_show.add_argument(
        "--top", type=_lines, default=20, metavar="N", help="functions listed (20)"
    )
    profile_show.add_argument("--json", action="store_true", help="one JSON document")
    args = parser.parse_args(argv)
    if args.command == "profile":
        from tracer.profiler import cli as profile_cli

        return profile_cli.main(args.file, args.route, args.top, args.json)
    if args.command == "heap":
        from tracer.memory import cli as heap_cli

        files = args.files if args.heap_command == "show" else [args.old, args.new]
        return heap_cli.main(args.heap_command, files, args.json, args.top)
    if args.command == "run":
        if not args.target:
            run.error("name a script to run")
        if args.module:
            return _run_module(args.target)
        command = None if os.path.isfile(args.target[0]) else _which(args.target[0])
        if command is not None:
            return _run_command(args.target, command)
        return _run_script(args.target)
    if args.command == "init":
        return _init(args.path)
    if args.command == "serve":
        from tracer.serve import server

        return server.run(args.db, args.host, args.port, args.otlp_port, args.max_size, args.token)
    from tracer import demo as demo_module

    if not args.serve and (args.port is not None or args.otlp_port is not None):
        demo.error("--port and --otlp-port go with --serve")
    try:
        if args.serve:
            return demo_module.main_serve(args.requests, args.port, args.otlp_port)
        return demo_module.main(args.requests)
    except config.ConfigError as exc:
        print(f"tracer: configuration error: {exc}", file=sys.stderr)
        return 2
