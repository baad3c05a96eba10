"""``python -m tracer.options --write``: regenerate the files made from the option table
(``--check``: say which are not current, exit 1)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from tracer.options import _GENERATED, ROOT, generated_files


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tracer.options --write`` regenerates the files made from the table;
    ``--check`` exits 1 naming those that are not current."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args not in (["--write"], ["--check"]):
        print("usage: python -m tracer.options --write | --check", file=sys.stderr)
        return 2
    stale = []
    for path, text in generated_files().items():
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(path)
        if args == ["--write"]:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
    if args == ["--check"] and stale:
        for path in stale:
            print(f"{path.relative_to(ROOT)} is not what the option table makes", file=sys.stderr)
        print(f"run `{_GENERATED}`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
