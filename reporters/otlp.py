"""``reporters.otlp`` is :mod:`tracer.reporters.otlp`, the same module object."""

import sys

from tracer.reporters import otlp as _module
from tracer.reporters.otlp import *  # noqa: F403

sys.modules[__name__] = _module
