"""``reporters.base`` is :mod:`tracer.reporters.base`, the same module object."""

import sys

from tracer.reporters import base as _module
from tracer.reporters.base import *  # noqa: F403

sys.modules[__name__] = _module
