"""``reporters.zipkin`` is :mod:`tracer.reporters.zipkin`, the same module object."""

import sys

from tracer.reporters import zipkin as _module
from tracer.reporters.zipkin import *  # noqa: F403

sys.modules[__name__] = _module
