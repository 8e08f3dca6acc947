"""error_handler: signals held through a critical section and delivered after it; clean-ups run
newest first when the block fails, and not at all when it succeeds. (Held signals with another
thread alive, and the journal's rollback as the clean-up, are in test_journal.py.)"""

from __future__ import annotations

import os
import signal

import pytest

from nodeagent import error_handler


def test_signals_are_held_while_files_switch_and_delivered_after():
    received = []
    old = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        with error_handler.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            assert received == []  # held: the files are never half switched
        assert received == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, old)


def test_clean_ups_run_newest_first_on_failure_and_a_failing_one_does_not_stop_the_rest():
    ran = []

    def broken():
        ran.append("broken")
        raise RuntimeError("clean-up failed")

    with pytest.raises(ValueError):
        with error_handler.ErrorHandler(lambda: ran.append("first"), broken, lambda: ran.append("last")):
            raise ValueError("the run failed")
    assert ran == ["last", "broken", "first"]


def test_no_clean_up_when_the_block_succeeds():
    ran = []
    with error_handler.ErrorHandler(lambda: ran.append("cleanup")):
        pass
    assert ran == []
