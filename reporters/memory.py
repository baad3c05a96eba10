"""``reporters.memory`` is :mod:`tracer.reporters.memory`, the same module object."""

import sys

from tracer.reporters import memory as _module
from tracer.reporters.memory import *  # noqa: F403

sys.modules[__name__] = _module
