"""Is containerd healthy for our purposes? It answers, its CRI plugin is ok, and it serves our handlers.

"The socket answers" is not enough: a config that breaks the CRI plugin (containerd#5837) leaves a
daemon that answers but runs no pods. The installer waits on this after a restart and rolls back
when it does not come true in time.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import structlog

from nodeagent.containerd.cri import CriStatus, cri_status
from nodeagent.errors import NodeagentError

log = structlog.get_logger(__name__)


class Unhealthy(NodeagentError):
    """containerd did not become healthy in time (the installer rolls back on this)."""

    default_hint = "see containerd's log (journalctl -u containerd); nodeagent restores the previous config on this"


@dataclass
class HealthReport:
    healthy: bool
    reason: str | None  # why not healthy (the last probe's), None when healthy
    elapsed: float  # seconds spent waiting
    attempts: int
    status: CriStatus
    missing_handlers: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "reason": self.reason,
            "elapsed": round(self.elapsed, 3),
            "attempts": self.attempts,
            "missing_handlers": self.missing_handlers,
            "cri": self.status.as_dict(),
        }


def judge(status: CriStatus, expected_handlers: Iterable[str]) -> tuple[bool, str | None, list[str]]:
    """(healthy, reason, missing handlers) for one CRI status."""
    if not status.ok:
        return False, status.reason or "containerd is not ready", []
    missing = sorted(set(expected_handlers) - status.handlers)
    if missing:
        served = ", ".join(sorted(status.handlers)) or "none"
        return False, f"CRI does not list handler(s) {', '.join(missing)} (it serves: {served})", missing
    return True, None, []


def wait_healthy(socket: str, expected_handlers: Iterable[str] = (), timeout: float = 60.0,
                 interval: float = 0.1) -> HealthReport:
    """Poll until healthy or `timeout` seconds pass; the report carries the last reason.

    The interval grows from `interval` to 1 s: a restart usually takes well under a second, a
    slow node should not be hammered.
    """
    expected = list(expected_handlers)
    start = time.monotonic()
    deadline = start + timeout
    attempts = 0
    delay = interval
    while True:
        attempts += 1
        remaining = max(0.5, min(5.0, deadline - time.monotonic()))
        status = cri_status(socket, timeout=remaining)
        healthy, reason, missing = judge(status, expected)
        elapsed = time.monotonic() - start
        if healthy or time.monotonic() + delay > deadline:
            report = HealthReport(healthy, reason, elapsed, attempts, status, missing)
            if not healthy:
                report.reason = f"not healthy after {elapsed:.1f}s: {reason}"
            log.debug("containerd health", healthy=healthy, attempts=attempts, elapsed=round(elapsed, 3), reason=reason)
            return report
        time.sleep(delay)
        delay = min(1.0, delay * 1.5)


def ensure_healthy(socket: str, expected_handlers: Iterable[str] = (), timeout: float = 60.0) -> HealthReport:
    """wait_healthy, raising Unhealthy (with the reason) when containerd does not get there."""
    report = wait_healthy(socket, expected_handlers, timeout)
    if not report.healthy:
        raise Unhealthy(f"containerd is not healthy: {report.reason}")
    return report
