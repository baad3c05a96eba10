"""A fresh virtualenv with a plain (not editable) install of this checkout, no extras."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.conftest import ROOT


class Venv:
    """A virtualenv and how to run its Python with nothing of this checkout on the path."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.python = str(path / "bin" / "python")

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("TRACE_", "PYTHON", "VIRTUAL_ENV"))
        }
        env.update(extra)
        return env

    def run(
        self, *args: str, cwd: str | Path, timeout: float = 120, **extra: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.python, *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env(**extra),
        )


@pytest.fixture(scope="session")
def plain_install(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """``pip install <checkout>`` into a new virtualenv: the wheel as users get it."""
    return install(tmp_path_factory, "plain")


@pytest.fixture(scope="session")
def no_compiler_install(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """The same install on a machine whose C compiler fails (``CC=false``): tracer installs
    without its accelerator."""
    return install(tmp_path_factory, "no-compiler", CC="false")


def install(tmp_path_factory: pytest.TempPathFactory, name: str, **extra: str) -> Venv:
    """A new virtualenv with ``pip install`` of a copy of this checkout, ``extra`` in pip's
    environment."""
    path = tmp_path_factory.mktemp(f"{name}-venv")
    venv.EnvBuilder(with_pip=True).create(path)
    env = Venv(path)
    # Built from a copy: pip builds a source tree in place (its build/ folder), and two test
    # workers building the checkout at once would collide there.
    source = tmp_path_factory.mktemp(f"{name}-source")
    for file in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(Path(ROOT) / file, source / file)
    for folder in ("tracer", "reporters"):
        shutil.copytree(
            Path(ROOT) / folder,
            source / folder,
            # The accelerator built in place for this checkout's own runs is left behind.
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.so"),
        )
    out = subprocess.run(
        [env.python, "-m", "pip", "install", "--quiet", "--no-input", str(source)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env.env(**extra),
        cwd=path,
    )
    if out.returncode != 0:
        pytest.fail(f"pip install of the checkout failed:\n{out.stdout}\n{out.stderr}")
    assert sys.executable != env.python
    return env
