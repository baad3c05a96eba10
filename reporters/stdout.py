"""``reporters.stdout`` is :mod:`tracer.reporters.stdout`, the same module object."""

import sys

from tracer.reporters import stdout as _module
from tracer.reporters.stdout import *  # noqa: F403

sys.modules[__name__] = _module
