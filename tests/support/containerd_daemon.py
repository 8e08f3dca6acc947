"""Start a REAL containerd (1.6, 1.7 or 2.1) on a private socket for a test, and clean up after it.

Each daemon gets a work dir holding its config, socket, --root, --state and log. It runs in a
private mount namespace whose /run is a tmpfs, with /run/containerd bound to `<work>/run`: the runc
shim always puts its sockets in /run/containerd/s/ (hard-coded upstream), so this keeps them off the
real host and lets a restarted daemon (a new namespace binding the same directory) find the shims of
the previous one again, as on a real node where shims survive a containerd restart.

Use the pytest fixture `containerd_factory` (register with `pytest_plugins`, or import it):

    def test_x(containerd_factory):
        d = containerd_factory("1.7")                 # generated minimal config
        d = containerd_factory("2.1", config=text)    # your own config text (see `minimal_config`)
        d.socket, d.config_path, d.pid, d.restart(), d.ctr("images", "ls")
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import psutil
import pytest

TESTENV = Path(os.environ.get("NODEAGENT_TESTENV", "/opt/nodeagent-testenv"))

# version -> directory holding containerd, ctr and the runc shim of that version. scripts/setup-test-env
# puts the newest 2.x it finds into containerd-2 (sid moves; the tests still call that series "2.1").
BINDIRS: dict[str, Path] = {
    "1.6": Path("/usr/bin"),
    "1.7": TESTENV / "containerd-1.7/usr/bin",
    "2.1": TESTENV / "containerd-2/usr/bin",
}
VERSIONS = tuple(BINDIRS)

# The sandbox ("pause") image every generated config names; tests/support/oci_image.py builds it.
SANDBOX_IMAGE = "localhost/nodeagent-test/pause:1"

BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def cri_plugin_table(version: str) -> str:
    """The TOML table name of the CRI runtime plugin for a daemon version's generated config."""
    return "plugins.'io.containerd.cri.v1.runtime'" if version.startswith("2") else 'plugins."io.containerd.grpc.v1.cri"'


def minimal_config(version: str, work: str | os.PathLike, *, sandbox_image: str = SANDBOX_IMAGE, extra: str = "") -> str:
    """A small working config for `version`: runc handler without systemd cgroups, OOM adj restricted.

    `restrict_oom_score_adj`: this VM lacks CAP_SYS_RESOURCE, so runc fails writing oom_score_adj
    otherwise. The `opt` plugin's path is moved into `work`, or containerd creates /opt/containerd
    on the real host. `extra` is appended verbatim (more handlers, imports must go first: use
    `imports=` in your own text instead).
    """
    work = Path(work)
    opt = work / "opt"
    if version.startswith("2"):
        return f"""version = 3

[plugins.'io.containerd.internal.v1.opt']
  path = '{opt}'

[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'

[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = '{sandbox_image}'

[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  enable_cdi = false

[plugins.'io.containerd.cri.v1.runtime'.containerd]
  default_runtime_name = 'runc'

[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
  runtime_type = 'io.containerd.runc.v2'

[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
  SystemdCgroup = false
{extra}"""
    return f"""version = 2

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"

[plugins."io.containerd.grpc.v1.cri"]
  restrict_oom_score_adj = true
  sandbox_image = "{sandbox_image}"

[plugins."io.containerd.grpc.v1.cri".containerd]
  default_runtime_name = "runc"
  snapshotter = "overlayfs"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  SystemdCgroup = false
{extra}"""


# Runs inside `unshare -m`: private /run, our /run/containerd, then exec containerd (same PID).
_NS_WRAPPER = (
    'set -e; mount -n -t tmpfs -o mode=755 nodeagent-test-run /run; '
    'mkdir -p /run/containerd; mount -n --bind "$NODEAGENT_TEST_RUNDIR" /run/containerd; '
    'exec "$@"'
)


class DaemonError(AssertionError):
    """The test daemon could not be started (a test-environment problem, shown with its log)."""


@dataclass
class ContainerdDaemon:
    """One real containerd process of a given version with its own socket, root and state."""

    version: str
    work: Path
    config_path: Path
    extra_path: list[str] = field(default_factory=list)
    proc: subprocess.Popen | None = None
    pids_seen: list[int] = field(default_factory=list)
    cgroups_before: set[str] | None = None

    @property
    def bindir(self) -> Path:
        return BINDIRS[self.version]

    @property
    def binary(self) -> Path:
        return self.bindir / "containerd"

    @property
    def socket(self) -> Path:
        return self.work / "containerd.sock"

    @property
    def root(self) -> Path:
        return self.work / "root"

    @property
    def state(self) -> Path:
        return self.work / "state"

    @property
    def rundir(self) -> Path:
        """What the daemon and its shims see as /run/containerd."""
        return self.work / "run"

    @property
    def log_path(self) -> Path:
        return self.work / "containerd.log"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc and self.proc.poll() is None else None

    def env(self) -> dict[str, str]:
        # containerd finds shims on PATH first, then next to its own binary: put its own dir first
        # so 1.7/2.1 never pick Debian's 1.6 shim from /usr/bin.
        path = ":".join([*self.extra_path, str(self.bindir), BASE_PATH])
        return {"PATH": path, "NODEAGENT_TEST_RUNDIR": str(self.rundir), "HOME": "/root"}

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def ctr(self, *args: str, namespace: str = "k8s.io", check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run this version's `ctr` against the daemon."""
        argv = [str(self.bindir / "ctr"), "--connect-timeout", "1s", "--address", str(self.socket), "-n", namespace, *args]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise DaemonError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc

    def answers(self) -> bool:
        try:
            return self.ctr("version", check=False, timeout=5).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def start(self, timeout: float = 10.0) -> "ContainerdDaemon":
        """Start the daemon and wait until it answers on its socket (polled every 50 ms).

        Call it from a thread that lives as long as the daemon should: the daemon gets SIGTERM
        when that thread ends (pdeathsig, so a killed test run leaves no daemon behind).
        """
        if self.pid:
            raise DaemonError("daemon already running")
        self._check_opt_path()
        if self.cgroups_before is None:
            self.cgroups_before = set(namespace_cgroups())
        for d in (self.root, self.state, self.rundir):
            d.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        argv = [
            # SIGTERM to containerd if the test process dies without teardown
            "setpriv", "--pdeathsig", "TERM",
            "unshare", "--mount", "--propagation", "private", "--", "sh", "-c", _NS_WRAPPER, "sh",
            str(self.binary), "--config", str(self.config_path), "--address", str(self.socket),
            "--root", str(self.root), "--state", str(self.state),
        ]
        self.proc = subprocess.Popen(argv, stdout=log, stderr=log, env=self.env(), start_new_session=True)
        log.close()
        self.pids_seen.append(self.proc.pid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DaemonError(f"containerd {self.version} exited {self.proc.returncode}:\n{self.log_tail()}")
            if self.socket.exists() and self.answers():
                return self
            time.sleep(0.05)
        self.stop()
        raise DaemonError(f"containerd {self.version} not ready after {timeout}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM by PID, SIGKILL after `timeout`. Shims and their containers keep running."""
        if not self.proc:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self, timeout: float = 10.0) -> "ContainerdDaemon":
        self.stop()
        return self.start(timeout)

    def write_config(self, text: str) -> None:
        self.config_path.write_text(text)

    def _check_opt_path(self) -> None:
        """Refuse configs whose `opt` plugin would create /opt/containerd on the real host."""
        dump = subprocess.run(
            [str(self.binary), "--config", str(self.config_path), "config", "dump"],
            capture_output=True, text=True, timeout=30,
        )
        if dump.returncode != 0:
            return  # the daemon itself will fail and show why
        for line in dump.stdout.splitlines():
            if line.strip().startswith("path") and "/opt/containerd" in line and str(self.work) not in line:
                raise DaemonError(
                    "config leaves the opt plugin at /opt/containerd (it would be created on the real host);"
                    " set plugins.'io.containerd.internal.v1.opt'.path under the work dir (minimal_config does)"
                )

    # --- cleanup -------------------------------------------------------------------------------

    def shim_processes(self) -> list[psutil.Process]:
        """Shims started by this daemon: their command line names our socket."""
        ours = []
        for proc in psutil.process_iter(["cmdline"]):
            cmd = proc.info.get("cmdline") or []
            if cmd and "containerd-shim" in os.path.basename(cmd[0]) and str(self.socket) in cmd:
                ours.append(proc)
        return ours

    def remove_all_pods(self) -> None:
        """Stop and remove every CRI pod through containerd itself (unmounts, cgroups, shims)."""
        if not self.pid:
            return
        try:
            from cri_api.v1 import api_pb2 as pb
            from cri_api.v1 import api_pb2_grpc as pbg
            import grpc

            with grpc.insecure_channel(f"unix://{self.socket}") as ch:
                rt = pbg.RuntimeServiceStub(ch)
                pods = rt.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=5).items
                for pod in pods:
                    rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod.id), timeout=15)
                    rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod.id), timeout=15)
        except Exception:  # noqa: BLE001 - best effort; the kill below is the backstop
            pass

    def cleanup(self) -> None:
        """Remove pods, stop the daemon, kill leftover shims (and their children) by PID, unmount."""
        self.remove_all_pods()
        self.stop()
        for shim in self.shim_processes():
            try:
                victims = shim.children(recursive=True) + [shim]
            except psutil.NoSuchProcess:
                continue
            for victim in victims:
                try:
                    victim.kill()
                except psutil.NoSuchProcess:
                    pass
            psutil.wait_procs(victims, timeout=5)
        unmount_under(self.work)
        created = set(namespace_cgroups()) - (self.cgroups_before or set())
        if not Path("/run/containerd/containerd.sock").exists():
            # no real containerd on this machine: every k8s.io cgroup here is a test daemon's, and
            # test runs overlap (another daemon may have created it first): drop it when empty
            created = set(namespace_cgroups())
        for top in created:
            try:
                os.rmdir(top)  # fails while any pod's cgroup is still inside: never recurse into others'
            except OSError:
                pass
        shutil.rmtree(self.work, ignore_errors=True)


def namespace_cgroups(namespace: str = "k8s.io") -> list[str]:
    """The per-namespace parent cgroups containerd creates (`/k8s.io/<id>` with cgroupfs)."""
    base = Path("/sys/fs/cgroup")
    found = [base / namespace] + [p / namespace for p in base.iterdir() if p.is_dir()]
    return [str(p) for p in found if p.is_dir()]


def unmount_under(path: Path) -> None:
    """Lazily unmount whatever is still mounted below `path` in our namespace (deepest first)."""
    prefix = str(path).rstrip("/") + "/"
    with open("/proc/self/mountinfo") as fh:
        targets = [line.split()[4] for line in fh]
    for target in sorted((t for t in targets if t.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-n", "-l", target], capture_output=True)


def new_daemon(version: str, base: Path, config: str | Callable[[Path], str] | None = None, *, extra_path: list[str] | None = None,
               start: bool = True, registry: list | None = None) -> ContainerdDaemon:
    """Create a work dir under `base`, write the config and start the daemon.

    `config`: None (generated by minimal_config), text, or a callable(work_dir) -> text (to place
    paths such as the opt plugin's under the work dir). `registry` gets the daemon before it starts,
    so a failed start is still cleaned up.
    """
    if version not in BINDIRS:
        raise ValueError(f"unknown containerd version {version!r}; choose from {VERSIONS}")
    if not (BINDIRS[version] / "containerd").exists():
        pytest.skip(f"containerd {version} is not installed (run scripts/setup-test-env)")
    work = Path(tempfile.mkdtemp(prefix=f"ctrd{version.replace('.', '')}-", dir=base))
    config_path = work / "config.toml"
    if config is None:
        config = minimal_config(version, work)
    elif callable(config):
        config = config(work)
    config_path.write_text(config)
    daemon = ContainerdDaemon(version, work, config_path, extra_path=list(extra_path or []))
    if registry is not None:
        registry.append(daemon)
    if start:
        daemon.start()
    return daemon


@pytest.fixture
def containerd_factory(tmp_path_factory):
    """Factory: `containerd_factory(version, config=None, extra_path=None, start=True)`; see new_daemon.

    Work dirs live in a short temp dir (unix socket paths must stay under 108 bytes). Every daemon
    is torn down at the end of the test: pods removed through CRI, daemon stopped, shims killed.
    """
    base = Path(tempfile.mkdtemp(prefix="na-ctrd-"))
    daemons: list[ContainerdDaemon] = []

    def make(version: str, config=None, **kwargs) -> ContainerdDaemon:
        return new_daemon(version, base, config, registry=daemons, **kwargs)

    yield make
    for d in daemons:
        d.cleanup()
    shutil.rmtree(base, ignore_errors=True)
