"""Delivery: finished spans to reporters, with nothing lost and nothing blocking the application.

One room per concern: :mod:`~tracer.delivery.pipeline` (the shell: submit, flush, exit, fork),
:mod:`~tracer.delivery.batcher` (queue -> batches),
:mod:`~tracer.delivery.batches` (a batch and its kind: spans, metrics, memory),
:mod:`~tracer.delivery.sender` (the batches waiting, the memory cap, retry, backoff, what happens
when a send fails, flush requests), :mod:`~tracer.delivery.clock` (the time it waits by),
:mod:`~tracer.delivery.caller` (the reporter's threads, the cap on abandoned ones),
:mod:`~tracer.delivery.spooler` and :mod:`~tracer.delivery.spool` (the disk spool and replay),
:mod:`~tracer.delivery.ledger` (every count and the one invariant).
"""

from tracer.delivery.pipeline import Pipeline

__all__ = ["Pipeline"]
