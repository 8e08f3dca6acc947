"""Prove a sandbox is real: start one and compare the kernel it reports with the host's.

A sandboxed workload must not see the host kernel: gVisor's Sentry answers `uname -r` itself
(4.4.0) and prints its own boot lines in `dmesg`; a Kata VM runs its guest kernel. The same
release as the host's means the "sandbox" is plain runc (a wrong handler, a shim that falls back).

gVisor is checked with `runsc do` (no image, no containerd needed), with a throw-away runsc state
dir so nothing is written on the host. Everything else goes through CRI with the handler and an
image the caller names (`--image`), exactly as the kubelet would run a pod.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from nodeagent.errors import CommandFailed
from nodeagent.host import HostRoot
from nodeagent.run import run

log = structlog.get_logger(__name__)

# our own symlink first (INTERFACE: /usr/local/bin/runsc), then the host's PATH
RUNSC_CANDIDATES = ("/usr/local/bin/runsc",)
_RUNSC_CGROUP = re.compile(r"runsc-\d{6}")


@dataclass
class RuntimeCheck:
    runtime: str
    method: str  # "runsc-do" | "cri"
    ok: bool = False
    skipped: bool = False
    sandbox_kernel: str | None = None
    host_kernel: str | None = None
    dmesg: list[str] = field(default_factory=list)
    reason: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)  # binary, handler, image, timings
    elapsed: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "skipped": self.skipped,
            "method": self.method,
            "sandbox_kernel": self.sandbox_kernel,
            "host_kernel": self.host_kernel,
            "dmesg": self.dmesg,
            "reason": self.reason,
            **self.detail,
            "elapsed": round(self.elapsed, 3),
        }


def host_kernel(host: HostRoot) -> str:
    """The host's kernel release (under --root when it shows a proc, else the running kernel: the same one)."""
    text = host.read_text("/proc/sys/kernel/osrelease")
    return (text or "").strip() or os.uname().release


def judge(check: RuntimeCheck) -> RuntimeCheck:
    """ok when the sandbox reported a kernel and it is not the host's."""
    if not check.sandbox_kernel:
        check.ok = False
        check.reason = check.reason or "the sandbox printed no kernel release"
    elif check.sandbox_kernel == check.host_kernel:
        check.ok = False
        check.reason = (f"the sandbox reports the host's own kernel {check.host_kernel}: it is not isolated "
                        "(is the handler really running the sandbox runtime?)")
    else:
        check.ok = True
    return check


# --- gVisor: runsc do --------------------------------------------------------------------------


def find_runsc(host: HostRoot) -> Path | None:
    """The runsc binary nodeagent installed (or the host's own), as a real path we can execute."""
    found = host.find_executable(RUNSC_CANDIDATES, "runsc")
    return host.resolve(found) if found else None


def _runsc_cgroups() -> set[str]:
    """runsc-NNNNNN cgroups runsc may create (and leak when `runsc do` fails) under the cgroup roots
    and under our own cgroups."""
    base = Path("/sys/fs/cgroup")
    parents = {base}
    try:
        parents |= {p for p in base.iterdir() if p.is_dir() and not p.is_symlink()}
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for hierarchy in [base, *(base / c.replace("name=", "") for c in controllers.split(",") if c)]:
                parents.add(hierarchy / path.lstrip("/"))
    except OSError:
        pass
    found = set()
    for parent in parents:
        try:
            found |= {str(parent / name) for name in os.listdir(parent) if _RUNSC_CGROUP.fullmatch(name)}
        except OSError:
            continue
    return found


def _remove_leaked_cgroups(before: set[str]) -> list[str]:
    removed = []
    for path in sorted(_runsc_cgroups() - before):
        try:
            os.rmdir(path)  # only succeeds for an empty cgroup: a live sandbox keeps its own
            removed.append(path)
        except OSError:
            pass
    return removed


def runsc_do(runsc: Path, argv: list[str], *, platform: str | None = None, timeout: float = 60.0) -> str:
    """Run `runsc do argv` with a private state dir and no network; return stdout."""
    state = tempfile.mkdtemp(prefix="nodeagent-runsc-")
    # --ignore-cgroups: the check is about the kernel the sandbox sees, not resource limits, and
    # inside a DaemonSet pod runsc would otherwise look for cgroup v1 controllers the pod's
    # /sys/fs/cgroup does not show ("stat /sys/fs/cgroup/cpu: no such file or directory")
    flags = ["--root", state, "--network=none", "--ignore-cgroups"]
    if os.geteuid() != 0:
        flags.append("--rootless")  # runsc do needs no root this way
    if platform:
        flags.append(f"--platform={platform}")
    before = _runsc_cgroups()
    try:
        return run([str(runsc), *flags, "do", *argv], timeout=timeout, cwd="/",
                   hint="run `runsc do uname -r` by hand to see why gVisor cannot start here").stdout
    finally:
        shutil.rmtree(state, ignore_errors=True)
        leaked = _remove_leaked_cgroups(before)
        if leaked:
            log.debug("removed cgroups runsc left behind", cgroups=leaked)


def verify_gvisor(host: HostRoot, *, platform: str | None = None, timeout: float = 60.0) -> RuntimeCheck:
    start = time.monotonic()
    check = RuntimeCheck("gvisor", "runsc-do", host_kernel=host_kernel(host))
    runsc = find_runsc(host)
    if runsc is None:
        check.reason = "runsc not found under the host root (/usr/local/bin/runsc or PATH): gVisor is not installed"
        check.elapsed = time.monotonic() - start
        return check
    check.detail["runsc"] = str(runsc)
    if platform:
        check.detail["platform"] = platform
    try:
        check.sandbox_kernel = runsc_do(runsc, ["uname", "-r"], platform=platform, timeout=timeout).strip() or None
        check.dmesg = runsc_do(runsc, ["dmesg"], platform=platform, timeout=timeout).splitlines()[:8]
    except CommandFailed as exc:
        check.reason = f"gVisor could not start a sandbox: {exc.message}"
    check.elapsed = time.monotonic() - start
    return judge(check) if check.reason is None else check


# --- any handler through CRI ------------------------------------------------------------------


def verify_cri(runtime: str, handler: str, socket: str, image: str, host: HostRoot, *,
               timeout: float = 60.0) -> RuntimeCheck:
    """RunPodSandbox with `handler`, a container printing `uname -r` and dmesg, compare, clean up."""
    from nodeagent.containerd.cri import CriClient, CriError

    start = time.monotonic()
    check = RuntimeCheck(runtime, "cri", host_kernel=host_kernel(host),
                         detail={"handler": handler, "image": image, "socket": socket})
    try:
        with CriClient(socket, timeout=min(timeout, 30.0)) as client:
            if not client.image_present(image):
                check.reason = f"image {image} is not present in containerd's k8s.io namespace (pull or import it first)"
                check.elapsed = time.monotonic() - start
                return check
            pod = client.run_pod(handler, name=f"verify-{runtime}", timeout=timeout)
            check.detail["sandbox_ready_after"] = round(time.monotonic() - start, 3)
            try:
                run_ = client.run_container(pod, image, ["sh", "-c", "uname -r; dmesg 2>&1 | head -n 8"],
                                            name="uname", timeout=timeout)
            finally:
                client.destroy_pod(pod)
    except CriError as exc:
        check.reason = f"no sandbox with handler {handler!r}: {exc.message}"
        check.elapsed = time.monotonic() - start
        return check
    lines = run_.output.splitlines()
    check.sandbox_kernel = lines[0].strip() if lines else None
    check.dmesg = lines[1:9]
    if run_.exit_code not in (0, None) and not check.sandbox_kernel:
        check.reason = f"the probe container exited {run_.exit_code}"
    check.elapsed = time.monotonic() - start
    return judge(check)
