"""No module of tracer/ imports from a module above it (docs/design.md, "Layers").

Every module is parsed with ``ast``; each import it makes, at module level or inside a function,
is resolved to the tracer module it names and compared by layer. Imports under
``if TYPE_CHECKING:`` are left out: they never run, they only name types.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "tracer"
DESIGN = ROOT / "docs" / "design.md"

# Lowest first. A name covers the module and, for a package, every module in it (but "tracer",
# the package itself, covers only its __init__). Modules of one layer may import each other; a
# module may import from its own layer and those below it only.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("tracer._accel",),
    ("tracer.safety", "tracer.ids", "tracer.redaction", "tracer.patching", "tracer.gchook",
     "tracer.context", "tracer.encoding", "tracer.files", "tracer.freethreading"),
    ("tracer.span",),
    ("tracer.propagation", "tracer.sampling"),
    ("tracer.reporters",),
    ("tracer.options", "tracer.config"),
    ("tracer.delivery",),
    ("tracer.runtime",),
    ("tracer.instrumentation",),
    ("tracer.metrics",),
    ("tracer.memory", "tracer.profiler"),
    ("tracer.serve",),
    ("tracer.installer",),
    ("tracer", "tracer.outgoing"),
    ("tracer.demo", "tracer.cli", "tracer.__main__", "tracer.bootstrap"),
)  # fmt: skip


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int | None:
    """The layer of ``module``: that of the longest name in LAYERS it is, or is inside of."""
    best: tuple[int, int] | None = None
    for index, names in enumerate(LAYERS):
        for name in names:
            if module == name or (name != "tracer" and module.startswith(name + ".")):
                if best is None or len(name) > best[1]:
                    best = (index, len(name))
    return None if best is None else best[0]


def _type_checking_only(tree: ast.Module) -> set[int]:
    """ids of the import nodes inside ``if TYPE_CHECKING:`` blocks."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
            if name == "TYPE_CHECKING":
                for inner in node.body:
                    skipped.update(id(n) for n in ast.walk(inner))
    return skipped


def imports(module: str, path: Path) -> list[tuple[int, str]]:
    """(line, tracer module) for every import ``module`` makes that can run."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    skipped = _type_checking_only(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            for alias in node.names:
                # ``from tracer import ids`` imports the module tracer.ids; ``from tracer import
                # install`` a name of the package tracer.
                sub = f"{source}.{alias.name}"
                found.append((node.lineno, sub if sub in MODULES else source))
    return [(line, name) for line, name in found if name == "tracer" or name.startswith("tracer.")]


def upward_imports() -> list[str]:
    problems = []
    for module, path in MODULES.items():
        own = layer_of(module)
        assert own is not None
        for line, target in imports(module, path):
            theirs = layer_of(target)
            if theirs is not None and theirs > own:
                problems.append(f"{path.relative_to(ROOT)}:{line}: {module} imports {target}")
    return problems


def test_every_module_has_a_layer() -> None:
    missing = [m for m in MODULES if layer_of(m) is None]
    assert not missing, f"add these modules to LAYERS (and docs/design.md): {missing}"


def test_no_module_imports_from_a_module_above_it() -> None:
    problems = upward_imports()
    assert not problems, "upward imports (docs/design.md, Layers):\n" + "\n".join(problems)


@pytest.mark.parametrize(
    ("source", "module", "expected"),
    [
        ("from tracer import installer", "tracer.memory.snapshot", ["tracer.installer"]),
        ("def f():\n    from tracer import installer\n", "tracer.span", ["tracer.installer"]),
        ("def f():\n    import tracer.runtime\n", "tracer.span", ["tracer.runtime"]),
        ("from ..installer import runtime", "tracer.metrics.recording", ["tracer.installer"]),
        ("from . import installer", "tracer.span", ["tracer.installer"]),
        ("import tracer", "tracer.span", ["tracer"]),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import tracer.runtime\n",
         "tracer.span", []),
    ],
)  # fmt: skip
def test_the_check_sees_an_upward_import(
    tmp_path: Path, source: str, module: str, expected: list[str]
) -> None:
    # An upward import written in each of the ways Python allows, in a module of a low layer.
    path = tmp_path / "mod.py"
    path.write_text(source, encoding="utf-8")
    found = [name for _, name in imports(module, path)]
    assert found == expected
    assert all(layer_of(name) > layer_of(module) for name in found)  # type: ignore[operator]


def test_the_design_notes_list_the_same_layers() -> None:
    text = DESIGN.read_text(encoding="utf-8")
    block = re.search(r"<!-- layers -->\n```\n(.*?)```", text, re.DOTALL)
    assert block is not None, "docs/design.md lost its layer list"
    written = [
        tuple(name.strip() for name in line.split(":", 1)[1].split(","))
        for line in block.group(1).strip().splitlines()
    ]
    # The notes list the layers top first, as they read.
    assert tuple(reversed(written)) == LAYERS
