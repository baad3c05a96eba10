"""The optional C accelerator: built when a compiler is there, left out (with a warning) when
not, so that tracer always installs. Everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("tracer._speedups", ["tracer/_speedups.c"], optional=True),
    ],
)
