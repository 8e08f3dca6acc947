"""A barrier for race tests: catch a process while it holds an flock, and freeze it there.

Why: starting two nodeagents "at once" and accepting whatever happens proves nothing when the
first one finishes before the second starts (the two never overlap, and the test passes anyway).
The barrier makes the overlap certain: the kernel's own lock table (/proc/locks) shows when the
first process holds the lock, SIGSTOP freezes it right there (the flock stays held while it is
stopped), the second run happens against the held lock, and SIGCONT lets the first one finish.
If the first process never takes the lock (e.g. the lock was removed), the barrier fails loudly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import psutil


class NoOverlap(AssertionError):
    """The process was never seen holding the lock: the race could not be staged."""


def flock_holders(path: str | os.PathLike) -> set[int]:
    """PIDs holding an flock on `path` now (from /proc/locks; waiters, marked `->`, excluded)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return set()
    ident = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    holders = set()
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" in fields or len(fields) < 6 or fields[1] != "FLOCK":
            continue
        if fields[5] == ident:
            holders.add(int(fields[4]))
    return holders


def _stopped(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] in ("T", "t")


def _holder(proc: subprocess.Popen, lock: str | os.PathLike) -> int | None:
    """`proc`, or the descendant of it (an agent's per-round child), that holds the flock now."""
    holders = flock_holders(lock)
    if not holders:
        return None
    if proc.pid in holders:
        return proc.pid
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        return None
    return next((c.pid for c in children if c.pid in holders), None)


@contextmanager
def paused_while_holding(proc: subprocess.Popen, lock: str | os.PathLike, timeout: float = 120) -> Iterator[None]:
    """Wait until `proc` (or a child of it) holds the flock on `lock`, SIGSTOP the holder there;
    resume it on exit.

    Raises NoOverlap when `proc` exits, or `timeout` passes, without being seen holding the lock,
    or when it released the lock before the stop took hold (then the caller's race did not happen).
    """
    deadline = time.monotonic() + timeout
    while (pid := _holder(proc, lock)) is None:
        if proc.poll() is not None:
            raise NoOverlap(f"pid {proc.pid} exited {proc.returncode} without ever being seen holding {lock}")
        if time.monotonic() > deadline:
            raise NoOverlap(f"pid {proc.pid} did not take {lock} within {timeout}s")
        time.sleep(0.002)
    os.kill(pid, signal.SIGSTOP)
    try:
        while not _stopped(pid):  # kill() returns before the target has stopped
            if proc.poll() is not None or not Path(f"/proc/{pid}").exists():
                raise NoOverlap(f"pid {pid} exited before it could be paused holding {lock}")
            time.sleep(0.001)
        if pid not in flock_holders(lock):
            raise NoOverlap(f"pid {pid} released {lock} before it could be paused")
        yield
    finally:
        os.kill(pid, signal.SIGCONT)
