"""Which processes still run binaries from an installed version (shims, sandboxes, VMMs).

An old version is pruned only when nothing runs from it, so an upgrade never pulls the
rug from under a running sandbox (kata-containers#12761). The kernel reports a process's
executable with symlinks resolved; seen from a DaemonSet (`--root /host`) the path may be
host-absolute or prefixed with the root, so both spellings are compared. The host-absolute one
only when the processes listed are the root's own (detect.procs.sees_root_processes): for a
captured or baked tree, a process of this machine (or of another mount namespace on it) running
/opt/nodeagent/... names this machine's file, and must not keep the tree's version "in use".
Processes come from detect.procs, which also reads the node's procfs when we are in a pod
without hostPID.
"""

from __future__ import annotations

import os

from nodeagent.detect.procs import iter_processes, sees_root_processes
from nodeagent.host import HostRoot


def pids_using(host: HostRoot, host_dir: str) -> list[int]:
    """PIDs whose executable lies under `host_dir` (a host path such as /opt/nodeagent/gvisor/X)."""
    prefixes = {str(host.path(host_dir)).rstrip("/") + "/"}
    if sees_root_processes(host):
        prefixes.add(host_dir.rstrip("/") + "/")
    try:
        prefixes.add(os.path.realpath(host.path(host_dir)).rstrip("/") + "/")
    except OSError:
        pass
    pids = []
    for proc in iter_processes(host, any_root=True):
        exe = proc.exe or ""
        if exe.endswith(" (deleted)"):
            exe = exe[: -len(" (deleted)")]
        if exe and any(exe.startswith(p) for p in prefixes):
            pids.append(proc.pid)
    return sorted(pids)
