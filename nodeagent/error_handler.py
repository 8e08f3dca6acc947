"""Signals and clean-up in one place (in the manner of certbot's ErrorHandler).

Who reacts to SIGTERM/SIGINT, and how, is decided here and nowhere else:
- the CLI turns SIGTERM into KeyboardInterrupt (`interrupt_on_sigterm`), so clean-ups run;
- the agent loop stops gracefully (`call_on_stop_signals`);
- the agent's converge child ignores both: its parent decides when a round ends.

`ErrorHandler` guards a block: any exception, KeyboardInterrupt from a signal included, runs
its clean-ups newest first (an undo journal's rollback) and is re-raised. `deferred()` holds
SIGTERM/SIGINT while files are switched and containerd restarted, so an interrupted run leaves
the node in the old or the new state, never in between; they are delivered when it ends.
SIGKILL cannot be held back: a re-run converges (see tests/faults).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Callable, Iterator

import structlog

log = structlog.get_logger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def interrupt_on_sigterm() -> None:
    """SIGTERM behaves like Ctrl-C: `finally:` blocks and clean-ups (rollback, lock release) run."""
    signal.signal(signal.SIGTERM, _raise_interrupt)


def call_on_stop_signals(callback: Callable[[int, object], None]) -> None:
    """SIGTERM/SIGINT call `callback(signum, frame)` (only the main thread may set handlers)."""
    if threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            signal.signal(signum, callback)


def ignore_stop_signals() -> None:
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGTERM/SIGINT until the block ends; they are delivered right after.

    A signal mask alone is not enough: it holds the signal for this thread only, and the kernel
    then hands a process-directed SIGTERM to any other thread (grpc's, an HTTP server's), after
    which Python runs the handler in the main thread at once. So, in the main thread, the
    handlers themselves are swapped for one that only records the signal (certbot's
    ErrorHandler does the same), and the recorded signals are raised again at the end."""
    if threading.current_thread() is not threading.main_thread():  # only it may set handlers
        old = signal.pthread_sigmask(signal.SIG_BLOCK, set(STOP_SIGNALS))
        try:
            yield
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        return
    held: list[int] = []
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    swapped = [s for s, h in previous.items() if h is not None and h != signal.SIG_IGN]
    for signum in swapped:
        signal.signal(signum, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        for signum in swapped:
            signal.signal(signum, previous[signum])
        for signum in dict.fromkeys(held):
            signal.raise_signal(signum)  # to the handler in force again (e.g. KeyboardInterrupt)


class ErrorHandler:
    """`with ErrorHandler(journal.rollback) as guard:` runs the clean-ups, newest first, when the
    block fails; `with guard.deferred():` inside it holds signals for a critical section."""

    def __init__(self, *cleanups: Callable[[], None]) -> None:
        self._cleanups: list[Callable[[], None]] = list(cleanups)

    def __enter__(self) -> "ErrorHandler":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.cleanup()

    @staticmethod
    def deferred() -> contextlib.AbstractContextManager[None]:
        return deferred()

    def cleanup(self) -> None:
        """Run the clean-ups newest first, with signals held so a second SIGTERM cannot cut them short."""
        with deferred():
            while self._cleanups:
                fn = self._cleanups.pop()
                try:
                    fn()
                except Exception as exc:  # the original error is what the operator must see
                    log.error("clean-up failed", error=str(exc))
