"""What nodeagent may believe about local processes, binaries and sockets (issue 11 §1).

nodeagent runs as root. Anything it learns from a process — the binary to run for `--version`
or `config dump`, the config file to edit, the CRI socket to trust, the PATH to search for
shims — is only as good as whoever started that process. Any local user can start a process
named `containerd` with `--config <the real config>` and `--address <their socket>`. So:

- a process counts only when it runs as uid 0 (real and effective: a setuid binary started by
  a user has euid 0 but keeps the user's real uid) and its executable, and every directory
  above it, are root-owned and not writable by group or others;
- a binary is run only from a path whose every component (links followed) is root-owned and
  not writable by group or others, never through /proc/<pid>/exe;
- a socket is believed only when the socket file, and every directory above it, is root-owned
  (a sticky directory such as /tmp is fine above it: others cannot replace root's entries).
"""

from __future__ import annotations

import os
import posixpath
import stat
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from nodeagent.detect.procs import HostProcess
from nodeagent.errors import HostError
from nodeagent.host import HostRoot



@dataclass(frozen=True)
class Verdict:
    trusted: bool
    reason: str | None = None  # why not, in words an operator can act on


TRUSTED = Verdict(True)


def _mode(st: os.stat_result) -> str:
    return oct(stat.S_IMODE(st.st_mode))


def _component_verdict(shown: str, st: os.stat_result, *, last: bool, allow_sticky: bool, socket: bool) -> Verdict:
    if st.st_uid != 0:
        return Verdict(False, f"{shown} is owned by uid {st.st_uid}, not root")
    if stat.S_ISLNK(st.st_mode) or (last and socket):
        return TRUSTED  # a link's own mode means nothing; a socket's mode is who may connect
    if st.st_mode & 0o022:
        sticky_dir = stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX
        if not (allow_sticky and sticky_dir and not last):
            return Verdict(False, f"{shown} is writable by group or others (mode {_mode(st)})")
    return TRUSTED


def path_verdict(host: HostRoot, host_path: str, *, allow_sticky: bool = False, socket: bool = False) -> Verdict:
    """Is every component of `host_path` under the root, links followed, root-owned and not
    writable by group or others? The root directory itself counts; what lies above it does not
    (a DaemonSet's /host is a mount, a test's root a private temp dir)."""
    try:
        st = os.stat(host.root)
    except OSError as exc:
        return Verdict(False, f"cannot stat the root {host.root}: {exc.strerror}")
    verdict = _component_verdict(str(host.root), st, last=False, allow_sticky=allow_sticky, socket=False)
    if not verdict.trusted:
        return verdict
    refusals: list[Verdict] = []

    def judge(component: PurePosixPath, last: bool) -> bool:
        try:
            st = os.lstat(host.path(component))
        except OSError as exc:
            refusals.append(Verdict(False, f"{component}: {exc.strerror}"))
            return False
        verdict = _component_verdict(str(component), st, last=last, allow_sticky=allow_sticky, socket=socket)
        if not verdict.trusted:
            refusals.append(verdict)
        return verdict.trusted

    try:
        host.walk(host_path if host_path.startswith("/") else "/" + host_path, judge)
    except HostError as exc:
        return Verdict(False, exc.message)
    return refusals[0] if refusals else TRUSTED


def socket_verdict(host: HostRoot, host_path: str) -> Verdict:
    """A socket that exists is believed only when it and the directories above it are root-owned.

    One that does not exist yet is not refused here: whoever connects later checks the peer
    (SO_PEERCRED) instead."""
    if not os.path.lexists(host.path(host_path)):
        return TRUSTED
    verdict = path_verdict(host, host_path, allow_sticky=True, socket=True)
    if verdict.trusted and not stat.S_ISSOCK(os.stat(host.path(host_path)).st_mode):
        return Verdict(False, f"{host_path} is not a socket")
    return verdict


def process_uids(proc: HostProcess) -> tuple[int, int] | None:
    """(real, effective) uid of a process, from its status file; None if it is gone."""
    try:
        with open(f"{proc.proc_dir}/status", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("Uid:"):
                    real, effective = line.split()[1:3]
                    return int(real), int(effective)
    except (OSError, ValueError):
        return None
    return None


def executable_path(proc: HostProcess) -> str | None:
    """The host path the process was started from (the kernel marks a replaced file ' (deleted)')."""
    if not proc.exe:
        return None
    return proc.exe.removesuffix(" (deleted)")


def process_verdict(host: HostRoot, proc: HostProcess) -> Verdict:
    """Trusted: uid 0 (real and effective), executable and its directories root-owned, not
    writable by group or others. The file is judged by the inode that runs (/proc/<pid>/exe is
    only stat'ed here, never run), its directories by the path under the root."""
    uids = process_uids(proc)
    if uids is None:
        return Verdict(False, "its /proc entry cannot be read")
    if uids != (0, 0):
        return Verdict(False, f"runs as uid {uids[0]} (effective {uids[1]}), not root")
    exe = executable_path(proc)
    if exe is None:
        return _verdict_without_exe(host, proc)
    if not exe.startswith("/"):
        return Verdict(False, "its executable cannot be read")
    try:
        st = os.stat(f"{proc.proc_dir}/exe")
    except PermissionError:
        return path_verdict(host, exe)  # not root ourselves (a user running detect): judge the path
    except OSError as exc:
        return Verdict(False, f"its executable cannot be read: {exc.strerror}")
    verdict = _component_verdict(exe, st, last=True, allow_sticky=False, socket=False)
    if not verdict.trusted:
        return verdict
    return path_verdict(host, posixpath.dirname(exe))


def _verdict_without_exe(host: HostRoot, proc: HostProcess) -> Verdict:
    """A root process whose /proc/<pid>/exe the kernel will not show us.

    Surprise: root without CAP_SYS_PTRACE (nodeagent's own systemd unit drops it) may not read
    /proc/<pid>/exe of a root process holding capabilities it lacks, such as containerd (ptrace
    access mode READ_FSCREDS, see proc(5) and ptrace(2)); nor may a non-root caller. The process
    runs with real and effective uid 0 (checked before), so root started it and its argv[0] is
    root's word for the binary: judge that path, if absolute. A process that is merely gone, or
    named by a relative argv[0], stays untrusted.
    """
    try:
        os.readlink(f"{proc.proc_dir}/exe")
    except PermissionError:
        argv0 = proc.cmdline[0] if proc.cmdline else ""
        if argv0.startswith("/"):
            return path_verdict(host, argv0)
        return Verdict(False, "its executable cannot be read (no CAP_SYS_PTRACE) and its argv[0] is no absolute path")
    except OSError:
        pass
    return Verdict(False, "its executable cannot be read")


def _user_name(host: HostRoot, uid: int) -> str:
    """The host's name for a uid (its /etc/passwd, not ours: in a pod they differ)."""
    for line in (host.read_text("/etc/passwd") or "").splitlines():
        fields = line.split(":")
        if len(fields) > 2 and fields[2] == str(uid):
            return fields[0]
    return str(uid)


def describe(host: HostRoot, proc: HostProcess, verdict: Verdict) -> dict[str, Any]:
    """One untrusted process as detect reports it and doctor names it."""
    uids = process_uids(proc)
    uid = uids[0] if uids else None
    return {
        "pid": proc.pid,
        "user": _user_name(host, uid) if uid is not None else None,
        "uid": uid,
        "euid": uids[1] if uids else None,
        "binary": executable_path(proc),
        "reason": verdict.reason,
    }


def unit_of(proc: HostProcess, units: tuple[str, ...]) -> str | None:
    """The systemd unit (one of `units`) whose cgroup holds the process, from /proc/<pid>/cgroup.

    Asked only of trusted processes (a user's delegated cgroup subtree may hold a cgroup of the
    same name); the path is matched at its end because our cgroup namespace may show a prefix
    (a node seen from its host)."""
    try:
        with open(f"{proc.proc_dir}/cgroup", encoding="utf-8", errors="replace") as fh:
            paths = [line.rstrip("\n").split(":", 2)[2] for line in fh if line.count(":") >= 2]
    except OSError:
        return None
    for unit in units:
        tail = f"/system.slice/{unit}"
        if any(p.rstrip("/").endswith(tail) for p in paths):
            return unit
    return None
