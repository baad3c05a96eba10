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
    path = tmp_path_factory.mktemp("plain-venv")
    venv.EnvBuilder(with_pip=True).create(path)
    env = Venv(path)
    # Built from a copy: pip builds a source tree in place (its build/ folder), and two test
    # workers building the checkout at once would collide there.
    source = tmp_path_factory.mktemp("plain-source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(Path(ROOT) / name, source / name)
    for name in ("tracer", "reporters"):
        shutil.copytree(
            Path(ROOT) / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
    out = subprocess.run(
        [env.python, "-m", "pip", "install", "--quiet", "--no-input", str(source)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env.env(),
        cwd=path,
    )
    if out.returncode != 0:
        pytest.fail(f"pip install of the checkout failed:\n{out.stdout}\n{out.stderr}")
    assert sys.executable != env.python
    return env
