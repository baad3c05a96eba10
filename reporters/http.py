"""``reporters.http`` is :mod:`tracer.reporters.http`, the same module object."""

import sys

from tracer.reporters import http as _module
from tracer.reporters.http import *  # noqa: F403

sys.modules[__name__] = _module
