"""The progress line appears on a terminal only; pipes and logs get nothing."""

from __future__ import annotations

import io
import os
import select

from nodeagent.artifacts.progress import tty_progress


def test_no_progress_without_a_terminal():
    assert tty_progress("runsc", io.StringIO()) is None


def test_progress_on_a_terminal_ends_with_a_newline():
    master, slave = os.openpty()
    try:
        with os.fdopen(slave, "w", closefd=False) as tty:
            show = tty_progress("gvisor runsc", tty)
            assert show is not None
            show(1 << 20, 4 << 20)
            show(4 << 20, 4 << 20)
        out = ""
        while select.select([master], [], [], 0.5)[0]:  # a pty may hand the text over in pieces
            out += os.read(master, 4096).decode()
            if out.endswith("\n"):
                break
    finally:
        os.close(master)
        os.close(slave)
    assert "gvisor runsc:" in out and "100%" in out and out.endswith("\n")
