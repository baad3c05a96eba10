"""``reporters.logstash`` is :mod:`tracer.reporters.logstash`, the same module object."""

import sys

from tracer.reporters import logstash as _module
from tracer.reporters.logstash import *  # noqa: F403

sys.modules[__name__] = _module
