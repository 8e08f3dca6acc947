"""A one-line download progress display, on a terminal only (never in logs or pipes)."""

from __future__ import annotations

import sys
import time
from typing import Callable, Optional

ProgressFn = Callable[[int, Optional[int]], None]


def tty_progress(label: str, stream=None) -> ProgressFn | None:
    """A progress callback for `label` if stderr is a terminal, else None."""
    stream = stream or sys.stderr
    if not stream.isatty():
        return None
    last = [0.0]

    def show(done: int, total: int | None) -> None:
        now = time.monotonic()
        finished = total is not None and done >= total
        if not finished and now - last[0] < 0.1:
            return
        last[0] = now
        mib = done / (1 << 20)
        if total:
            text = f"\r{label}: {mib:7.1f} / {total / (1 << 20):.1f} MiB {100 * done // total:3d}%"
        else:
            text = f"\r{label}: {mib:7.1f} MiB"
        stream.write(text + ("\n" if finished else ""))
        stream.flush()

    return show
