"""``python -m tracer run app.py [args...]`` and ``python -m tracer demo``."""

from __future__ import annotations

import argparse
import os
import runpy
import sys


def _run(target: list[str], module: bool) -> int:
    import tracer

    tracer.install()
    if module:
        sys.argv = list(target)
        runpy.run_module(target[0], run_name="__main__", alter_sys=True)
    else:
        script = target[0]
        if not os.path.isfile(script):
            print(f"tracer run: no such script: {script}", file=sys.stderr)
            return 2
        sys.argv = list(target)
        # As `python app.py` would: the script's folder comes first on the import path.
        sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
        runpy.run_path(script, run_name="__main__")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m tracer`` and the ``tracer`` command."""
    parser = argparse.ArgumentParser(
        prog="python -m tracer", description="Distributed tracing for Python HTTP services."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run", help="run a script (or -m module) as __main__ with tracing installed"
    )
    run.add_argument("-m", dest="module", action="store_true", help="run a module, like python -m")
    run.add_argument("target", nargs=argparse.REMAINDER, help="script.py [args...]")
    demo = sub.add_parser("demo", help="start traced services on 127.0.0.1 and print their traces")
    demo.add_argument("--requests", type=int, default=3, help="checkout requests to send")
    args = parser.parse_args(argv)
    if args.command == "run":
        if not args.target:
            run.error("name a script to run")
        return _run(args.target, args.module)
    from tracer import demo as demo_module

    return demo_module.main(args.requests)
