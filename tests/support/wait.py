"""Poll until something becomes true (processes, units, HTTP endpoints): one helper for the suite."""

from __future__ import annotations

import time
from typing import Any, Callable


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, *, interval: float = 0.05,
             detail: Callable[[], str] | None = None) -> Any:
    """Return the predicate's first truthy value; AssertionError naming `what` after `timeout` s
    (with `detail()` appended, e.g. a unit's status, to say why)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f"\n{detail()}" if detail else ""))
