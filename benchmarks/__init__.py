"""Side-by-side overhead of tracer against no tracing and against OpenTelemetry.

Run ``python -m benchmarks`` (``--quick`` for a check that everything works, ``--only ROW`` for one
row). See :mod:`benchmarks.run` for how the figures are made.
"""
