"""Start the sandboxes `verify --measure` samples, find each one's runtime processes, end them.

Two ways, as `verify` itself checks runtimes:
- `runsc do`: a real gVisor sandbox without containerd or an image. Its runtime processes are
  everything below the `runsc do` process: the Sentry (`runsc-sandbox ... boot`, with the stub
  processes it runs the workload's address spaces in) and the Gofer (`runsc-gofer`). `runsc do`
  itself stands where the shim would be, outside the pod's cgroup, and is not counted.
- CRI: RunPodSandbox with the runtime's handler, exactly as the kubelet starts a pod. Its runtime
  processes are everything below the sandbox's shim (`containerd-shim-* -id <sandbox id>`): for
  a VM runtime the VMM and its helpers (virtiofsd), the workload being inside the guest. No
  container is started: the pod sandbox alone already boots the runtime.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psutil

from nodeagent.errors import CommandFailed
from nodeagent.measure import MeasureError, RuntimeMeasure, descendants, sample
from nodeagent.run import spawn

READY_LINE = b"nodeagent-measure-ready"
# the workload: tell us it runs, then do nothing for longer than any measurement takes
WORKLOAD = ["sh", "-c", f"echo {READY_LINE.decode()}; exec sleep 600"]


def _wait_ready(proc: subprocess.Popen, deadline: float) -> None:
    """Until the sandboxed workload printed its ready line (it then runs inside the sandbox).

    Reads the pipe's fd with os.read, never through proc.stdout: a buffered readline() takes
    every byte that arrived, so a ready line that came in the same chunk as an earlier line
    would sit in Python's buffer while select() waited for new bytes until the deadline."""
    fd = proc.stdout.fileno()
    seen = b""  # the last bytes read, enough to find a ready line split across two reads
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = os.read(fd, 65536)
        if not chunk:  # EOF: runsc do ended
            raise MeasureError(f"`runsc do` exited {_exit_code(proc)} before its sandbox started")
        seen += chunk
        if READY_LINE in seen:
            return
        seen = seen[-len(READY_LINE):]
    raise MeasureError("the gVisor sandbox did not start in time",
                       "the node may be overloaded; try a larger --health-timeout or a smaller --measure N")


def _exit_code(proc: subprocess.Popen) -> int:
    """Wait for `proc` to exit WITHOUT reaping it (Popen's convention: -N for signal N); see _exited."""
    if proc.returncode is not None:
        return proc.returncode
    info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
    return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status


def _exited(proc: subprocess.Popen, timeout: float) -> bool:
    """Whether `proc` exits within `timeout`, left unreaped: until we reap it its pid, which is
    also the id of the session and process group spawn() gave it, cannot be reused, so a
    killpg() of that group reaches only processes we started."""
    deadline = time.monotonic() + timeout
    while proc.returncode is None:
        try:
            if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
        except ChildProcessError:  # reaped behind Popen's back: its pid is no longer ours
            proc.poll()  # sets returncode (0 on ECHILD), so _end does not killpg a reusable id
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _end(procs: list[subprocess.Popen]) -> None:
    """SIGTERM each `runsc do` (it takes its sandbox down with it), then SIGKILL whatever is left
    of its session and every process that ran below it, so no sandbox outlives the measurement,
    even when `runsc do` exited and left processes behind."""
    below = [child for proc in procs for child in descendants(proc.pid)]  # psutil guards pid reuse
    for proc in procs:
        if not _exited(proc, 0):
            os.kill(proc.pid, signal.SIGTERM)  # not send_signal: its poll() would reap it
    for proc in procs:
        _exited(proc, 10)
        if proc.returncode is None:  # still ours (running, or a zombie holding its pid)
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # its own session (spawn): only what it started
            except ProcessLookupError:
                pass
        proc.wait(5)
        if proc.stdout:
            proc.stdout.close()
    for child in below:  # e.g. a sandbox process that made a session of its own
        try:
            child.kill()
        except psutil.Error:
            pass


def measure_runsc_do(runsc: Path, count: int, *, platform: str | None = None, window: float = 2.0,
                     timeout: float = 60.0) -> RuntimeMeasure:
    """`count` gVisor sandboxes side by side via `runsc do`, sampled together, then ended."""
    result = RuntimeMeasure("gvisor", "runsc-do", window=window, detail={"runsc": str(runsc)})
    if platform:
        result.detail["platform"] = platform
    state = tempfile.mkdtemp(prefix="nodeagent-measure-")
    flags = ["--root", state, "--network=none"] + (["--rootless"] if os.geteuid() != 0 else [])
    flags += [f"--platform={platform}"] if platform else []
    procs: list[subprocess.Popen] = []
    try:
        with tempfile.TemporaryFile() as errors:
            try:
                deadline = time.monotonic() + timeout
                for _ in range(count):
                    procs.append(spawn([str(runsc), *flags, "do", *WORKLOAD], stderr=errors, cwd="/"))
                for proc in procs:
                    _wait_ready(proc, deadline)
            except (MeasureError, CommandFailed) as exc:
                errors.seek(0)
                tail = errors.read().decode(errors="replace").strip().splitlines()[-1:]
                raise MeasureError(exc.message + (f": {tail[0]}" if tail else ""), exc.hint) from None
            result.costs = sample([descendants(p.pid) for p in procs], window)
            result.sandboxes = len(result.costs)
    finally:
        _end(procs)
        shutil.rmtree(state, ignore_errors=True)
    return result


def shim_of(sandbox_id: str) -> psutil.Process | None:
    """The shim process serving a CRI sandbox (`containerd-shim-<runtime> ... -id <id>`)."""
    for proc in psutil.process_iter(["cmdline"]):
        argv = proc.info["cmdline"] or []
        if argv and os.path.basename(argv[0]).startswith("containerd-shim") and sandbox_id in argv:
            return proc
    return None


def measure_cri(runtime: str, handler: str, socket: str, count: int, *, window: float = 2.0,
                timeout: float = 60.0) -> RuntimeMeasure:
    """`count` pod sandboxes with `handler` through CRI, sampled together, then removed."""
    from nodeagent.containerd.cri import CriClient, CriError

    result = RuntimeMeasure(runtime, "cri", window=window, detail={"handler": handler, "socket": socket})
    pods = []
    try:
        with CriClient(socket, timeout=min(timeout, 30.0)) as client:
            try:
                for i in range(count):
                    pods.append(client.run_pod(handler, name=f"measure-{runtime}-{i}", timeout=timeout))
                groups = []
                for pod in pods:
                    shim = shim_of(pod.id)
                    if shim is None:
                        raise MeasureError(f"no shim process found for sandbox {pod.id[:12]} (handler {handler!r})",
                                           "run nodeagent where it sees the node's processes (hostPID)")
                    groups.append(descendants(shim.pid))
                result.costs = sample(groups, window)
                result.sandboxes = len(result.costs)
            finally:
                for pod in pods:
                    client.destroy_pod(pod)
    except CriError as exc:
        raise MeasureError(f"no sandbox with handler {handler!r}: {exc.message}", exc.hint) from None
    return result


def skipped(runtime: str, method: str, reason: str) -> RuntimeMeasure:
    return RuntimeMeasure(runtime, method, skipped=True, reason=reason)

