"""The MainPID systemd gives a unit, asked over its private D-Bus socket (read-only).

The strongest word on which containerd is the node's: the process systemd started for
containerd.service (or k3s.service, rke2-server.service, ...). `<root>/run/systemd/private`
answers root peer to peer, from the host and from a DaemonSet pod alike (see nodeagent.sdbus).
Best effort: no systemd, a socket we may not use, or a systemd that cannot see us (it drops
such peers) just means no answer, and discovery falls back to the unit's cgroup.
"""

from __future__ import annotations

from nodeagent.detect import trust
from nodeagent.detect.procs import HostProcess
from nodeagent.host import HostRoot
from nodeagent.sdbus import DbusError, SystemdBus

_PRIVATE = "/run/systemd/private"
_SERVICE = "org.freedesktop.systemd1.Service"


def main_pids(host: HostRoot, units: tuple[str, ...], timeout: float = 2.0) -> set[int]:
    """MainPIDs (in systemd's PID namespace) of the running units among `units`."""
    private = host.path(_PRIVATE)
    if not units or not private.is_socket() or not trust.socket_verdict(host, _PRIVATE).trusted:
        return set()
    pids: set[int] = set()
    try:
        with SystemdBus(private, timeout=timeout) as bus:
            for unit in units:
                try:
                    pid = int(bus.get(bus.unit_path(unit), _SERVICE, "MainPID"))
                except DbusError:
                    continue
                if pid > 0:
                    pids.add(pid)
    except (DbusError, OSError, ValueError):
        return pids
    return pids


def innermost_pid(proc: HostProcess) -> int | None:
    """The process's PID in the innermost PID namespace its procfs shows (NSpid's last entry):
    systemd's own numbering when systemd runs in the namespace the process was started in."""
    try:
        with open(f"{proc.proc_dir}/status", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("NSpid:"):
                    return int(line.split()[-1])
    except (OSError, ValueError, IndexError):
        return None
    return proc.pid
