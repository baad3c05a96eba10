"""The reporter's own threads: ``reporter.send`` runs there, so a reporter that blocks cannot stall
the pipeline, and one that hangs costs a bounded number of threads.

When a send has not called back within ``send_timeout`` and has not returned either, its thread is
abandoned (it ends whenever that send returns) and the next send runs on a fresh thread. At most
``MAX_ABANDONED`` abandoned threads are kept: past that the reporter counts as hung, no send is
made, and :meth:`Callers.hung` stays True until one of those threads comes back.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

from tracer import context

# Abandoned reporter threads tolerated before the reporter counts as hung; each costs a thread
# the application could have used.
MAX_ABANDONED = 4


class Delivery:
    """One batch's callback: the first call wins, later ones are ignored.

    Whatever the reporter passes is kept as it is (None means delivered; anything else, an
    exception or not, is a failure that :mod:`tracer.delivery.outcome` reads defensively).
    """

    __slots__ = ("_lock", "cut", "done", "error")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: object = None
        # Set when tracer closed it before the reporter answered (see cut_short).
        self.cut = False
        # The reporter's callback, the send timeout and exit may all close it, concurrently.
        self._lock = threading.Lock()

    def __call__(self, error: object = None, *_: object) -> None:
        with self._lock:
            if self.done.is_set():
                return
            self.error = error
            self.done.set()

    def cut_short(self, error: object) -> None:
        """Close it with ``error`` before the reporter answered: the send still under way is
        given up on as if its timeout had passed, and its thread abandoned."""
        with self._lock:
            if self.done.is_set():
                return
            self.error = error
            self.cut = True
            self.done.set()


class HungReporter(Exception):
    """No send was made: the reporter still holds ``MAX_ABANDONED`` threads in ``send``."""


class Caller:
    """One thread that runs ``reporter.send`` for the jobs it is given."""

    def __init__(self, reporter: Any) -> None:
        self.reporter = reporter
        self.stuck = False
        self.inside = False
        self._jobs: queue.SimpleQueue[tuple[dict[str, Any], Delivery] | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="tracer-reporter", daemon=True)
        self.thread.start()

    def call(self, data: dict[str, Any], delivery: Delivery) -> None:
        self._jobs.put((data, delivery))

    def abandon(self) -> None:
        self.stuck = True
        self._jobs.put(None)

    def _run(self) -> None:
        context.suppress.set(True)
        while True:
            job = self._jobs.get()
            if job is None or self.stuck:
                return
            data, delivery = job
            del job
            self.inside = True
            try:
                self.reporter.send(data, delivery)
            except BaseException as exc:
                # SystemExit or KeyboardInterrupt from a reporter would end this thread quietly
                # and leave every later batch waiting for it: it is one failed send, no more.
                delivery(exc)
            finally:
                self.inside = False
                del data, delivery


class Callers:
    """The current reporter thread and the abandoned ones, capped."""

    def _send_here(self, data: dict[str, Any], delivery: Delivery) -> None:
        try:
            self.reporter.send(data, delivery)
        except BaseException as exc:
            delivery(exc)

    def __init__(self, reporter: Any) -> None:
        self.reporter = reporter
        self._current: Caller | None = None
        self._abandoned: list[Caller] = []

    def hung(self) -> bool:
        """True while ``MAX_ABANDONED`` abandoned threads are still inside ``send``."""
        self._abandoned = [c for c in self._abandoned if c.thread.is_alive()]
        return len(self._abandoned) >= MAX_ABANDONED

    def abandoned(self) -> int:
        return len(self._abandoned)

    def prepare(self) -> None:
        """Start the first reporter thread now, while threads can start: at interpreter
        shutdown Python 3.12 and newer start none, and a short program's first send is often
        the one its exit makes."""
        if self._current is None:
            try:
                self._current = Caller(self.reporter)
            except RuntimeError:
                pass

    def close(self) -> None:
        """End the current reporter thread once its send (if any) returns."""
        caller, self._current = self._current, None
        if caller is not None:
            caller.abandon()

    def send(
        self, data: dict[str, Any], delivery: Delivery, timeout: float, inline: bool = True
    ) -> None:
        """Hand ``data`` to the reporter and wait up to ``timeout`` for ``delivery`` to close;
        close it with an error when the reporter did not call back in time."""
        caller = self._current
        if caller is None or caller.stuck or not caller.thread.is_alive():
            try:
                caller = self._current = Caller(self.reporter)
            except RuntimeError:
                # No thread to be had (the process is out of threads, or it is shutting down:
                # Python 3.12 and newer start none then). While running, send from this thread;
                # on the way out, a send here could hang the exit's spool write behind it, so
                # the batch fails and goes to the spool instead.
                if inline:
                    self._send_here(data, delivery)
                else:
                    delivery(RuntimeError("no thread for the reporter while exiting"))
                return
        caller.call(data, delivery)
        if not delivery.done.wait(timeout) or delivery.cut:
            # A cut send is given up on even before its thread took it: abandoned, the thread
            # skips it, so a batch tracer has spooled is not sent from memory as well.
            if caller.inside or delivery.cut:
                caller.abandon()
                self._abandoned.append(caller)
                self._current = None
            # Closed here, so that a late callback is ignored.
            delivery(TimeoutError(f"reporter did not call back within {timeout} s"))
