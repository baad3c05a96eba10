"""One module per instrumented library; each defines an :class:`Instrumentation` subclass."""
