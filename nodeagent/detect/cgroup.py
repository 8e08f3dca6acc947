"""cgroup version of the host: unified (v2 only), hybrid (v1 controllers + a cgroup2 mount) or legacy."""

from __future__ import annotations

from typing import Any

from nodeagent.host import HostRoot

_V1_CONTROLLERS = ("memory", "cpu", "cpuset", "pids", "devices", "blkio", "freezer")


def probe(host: HostRoot) -> dict[str, Any]:
    """Version 2 only when the root of /sys/fs/cgroup is cgroup2 (it has cgroup.controllers)."""
    if host.exists("/sys/fs/cgroup/cgroup.controllers"):
        return {"version": 2, "mode": "unified"}
    v1 = any(host.exists(f"/sys/fs/cgroup/{c}") for c in _V1_CONTROLLERS)
    if v1:
        # runc and runsc put controllers in the v1 hierarchies; the cgroup2 mount (if any) holds none
        mode = "hybrid" if host.exists("/sys/fs/cgroup/unified/cgroup.controllers") or host.exists("/sys/fs/cgroup/unified") else "legacy"
        return {"version": 1, "mode": mode}
    return {"version": None, "mode": None}
