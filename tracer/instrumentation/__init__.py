"""One module per instrumented library; each defines an :class:`~tracer.instrumentation.base.
Instrumentation` subclass, which the installer finds by itself (see :mod:`.base`). A module
that defines none (``requests_headers``, a helper of ``requests``) is imported and skipped."""
