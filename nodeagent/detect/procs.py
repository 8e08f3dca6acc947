"""Processes that belong to the host under --root (psutil), for "is containerd running?".

psutil sees this process's PID namespace: the whole node when run on the host or in a
hostPID pod, only the pod otherwise. A process counts for the host only if its root
directory is the host root, so a containerd inside a container or a test namespace, or
any process when --root is a captured tree, is never mistaken for the node's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import psutil

from nodeagent.host import HostRoot


@dataclass
class HostProcess:
    pid: int
    name: str
    exe: str | None
    cmdline: list[str] = field(default_factory=list)

    def flag(self, *names: str) -> str | None:
        """Value of a command-line flag given as `--f v`, `--f=v`, `-f v`."""
        args = self.cmdline[1:]
        for i, arg in enumerate(args):
            for name in names:
                if arg == name and i + 1 < len(args):
                    return args[i + 1]
                if arg.startswith(name + "="):
                    return arg.split("=", 1)[1]
        return None


def _same_root(pid: int, host: HostRoot) -> bool:
    try:
        return os.path.samefile(f"/proc/{pid}/root", host.root)
    except PermissionError:
        # not root: we cannot look; trust only the live case
        return host.is_live
    except OSError:
        return False


def find(host: HostRoot, names: tuple[str, ...]) -> list[HostProcess]:
    """Host processes whose name (comm) is one of `names`, oldest first."""
    found = []
    for proc in psutil.process_iter(["pid", "name", "create_time"]):
        try:
            if proc.info["name"] not in names or not _same_root(proc.pid, host):
                continue
            try:
                exe = proc.exe() or None
            except (psutil.AccessDenied, psutil.ZombieProcess, OSError):
                exe = None
            found.append((proc.info["create_time"] or 0, HostProcess(proc.pid, proc.info["name"], exe, proc.cmdline())))
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return [p for _, p in sorted(found, key=lambda t: t[0])]
