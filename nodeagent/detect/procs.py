"""The host's processes under --root, for "is containerd running?" and "does a shim still run?".

Two procfs views are read: our own /proc, and, when the root is not ours, <root>/proc — the
node's procfs as a DaemonSet without hostPID sees it (its own /proc shows only the pod). A
process counts only if its root directory is the host root, so a containerd inside a
container or a test namespace, or anything when --root is a captured tree, is never taken
for the node's. A process seen in both views (hostPID, or a child PID namespace of ours) is
reported once, through our own /proc (its pid is then one we can signal or nsenter).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

from nodeagent.host import HostRoot

@dataclass
class HostProcess:
    pid: int  # in the PID namespace of proc_dir's procfs
    name: str
    exe: str | None
    cmdline: list[str] = field(default_factory=list)
    proc_dir: str = ""  # where to read this process's /proc entry from here
    start_ticks: int = 0

    def environ(self) -> dict[str, str]:
        raw = _read(f"{self.proc_dir}/environ")
        if raw is None:
            return {}
        pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
        return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}

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


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return None


def _entry(proc_dir: str, pid: int) -> HostProcess | None:
    stat = _read(f"{proc_dir}/stat")
    if stat is None:
        return None
    # comm may hold spaces and parentheses: fields after the last ')' are fixed
    name = stat[stat.index(b"(") + 1:stat.rindex(b")")].decode(errors="replace")
    fields = stat[stat.rindex(b")") + 2:].split()
    try:
        exe = os.readlink(f"{proc_dir}/exe")
    except OSError:
        exe = None
    cmdline = [a.decode(errors="replace") for a in (_read(f"{proc_dir}/cmdline") or b"").split(b"\0") if a]
    if len(name) >= 15 and cmdline:  # the kernel truncates comm to 15 characters
        full = os.path.basename(cmdline[0])
        name = full if full.startswith(name) else name
    return HostProcess(pid, name, exe, cmdline, proc_dir, int(fields[19]) if len(fields) > 19 else 0)


def sees_root_processes(host: HostRoot) -> bool:
    """Whether the processes we list are the root's own: the live root, or a root with a procfs
    of its own (a DaemonSet's /host). For a captured or baked tree, our /proc shows this
    machine's processes, whose host-absolute paths name this machine's files, not the tree's."""
    return host.is_live or len(_procfs_views(host)) > 1


def _procfs_views(host: HostRoot) -> list[str]:
    views = ["/proc"]
    if not host.is_live:
        theirs = str(host.path("/proc"))
        try:
            if os.path.isdir(theirs) and not os.path.samefile(theirs, "/proc"):
                views.append(theirs)
        except OSError:
            pass
    return views


def _is_host_process(proc_dir: str, host: HostRoot) -> bool:
    try:
        return os.path.samefile(f"{proc_dir}/root", host.root)
    except PermissionError:
        return host.is_live  # not root: we cannot look; trust only the live case
    except OSError:
        return False


def iter_processes(host: HostRoot, *, any_root: bool = False) -> Iterator[HostProcess]:
    """Every process running in the host root, each once (see the module docstring).

    any_root: also processes that changed their root (gVisor's sandbox pivots into an empty
    one), for "does anything still run from this binary?"."""
    seen: set[tuple[str, int]] = set()
    for view in _procfs_views(host):
        try:
            pids = [int(n) for n in os.listdir(view) if n.isdigit()]
        except OSError:
            continue
        for pid in pids:
            proc_dir = f"{view}/{pid}"
            if not any_root and not _is_host_process(proc_dir, host):
                continue
            entry = _entry(proc_dir, pid)
            if entry is None or (entry.name, entry.start_ticks) in seen:
                continue
            seen.add((entry.name, entry.start_ticks))
            yield entry


def find(host: HostRoot, names: tuple[str, ...]) -> list[HostProcess]:
    """Host processes whose name (comm) is one of `names`, oldest first."""
    found = [p for p in iter_processes(host) if p.name in names]
    return sorted(found, key=lambda p: p.start_ticks)
