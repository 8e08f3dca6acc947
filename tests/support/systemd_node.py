"""A throw-away "node": this machine's own systemd booted as PID 1 of new namespaces.

Why: the installer restarts containerd through systemd, handles its start limit, and runs from a
DaemonSet with the node's root at /host. All of that needs a real systemd managing Debian's real
containerd.service, and systemd must never boot on this machine's real root (its boot clean-up
wipes /tmp and it takes over the root cgroups). So (see shared/notes/test-environment.md):

- new PID, mount, UTS, IPC, net and cgroup namespaces (`unshare --fork`), propagation private;
- the root is an overlay of `/` with a tmpfs upper layer: the node sees the machine's files (so
  /usr/bin/containerd, runc, runsc, python are there) and every write stays in the tmpfs;
- fresh /proc, read-only sysfs, private cgroup mounts shaped like the host's (here: v1 hierarchies
  plus cgroup2 at unified; runc needs the v1 cpu/memory controllers), each rooted in a fresh child
  of our own cgroup that becomes the node's cgroup-namespace root, a minimal /dev, tmpfs /run, /tmp;
- `pivot_root` (with chroot, an nsenter'd systemctl sees "offline"), then
  `container=other /lib/systemd/systemd --system`;
- /var/lib/containerd is a tmpfs (overlayfs snapshots cannot have an overlay as upper layer);
- units we don't want (databases, timers, gettys, podman, ...) masked; Debian's image ships a
  Docker-style policy-rc.d, removed in the overlay; /etc/containerd/config.toml replaced by a
  config that works on this VM (`restrict_oom_score_adj`: no CAP_SYS_RESOURCE here).

From outside, the node's root filesystem is /proc/<pid>/root (what `--root` gets) and commands run
inside with `nsenter -t <pid> -m -u -i -n -p`. Teardown SIGKILLs the node's PID 1 (by PID), which
ends every process in its PID namespace; its mounts vanish with its mount namespace; its cgroup is
removed. Nothing is left on the real host.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]

NODE_CONTAINERD_CONFIG = """version = 2

[plugins."io.containerd.grpc.v1.cri"]
  restrict_oom_score_adj = true
  sandbox_image = "localhost/nodeagent-test/pause:1"

[plugins."io.containerd.grpc.v1.cri".containerd]
  default_runtime_name = "runc"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  SystemdCgroup = false

[plugins."io.containerd.internal.v1.opt"]
  path = "/var/lib/containerd/opt"
"""

# Units that would only slow the boot down or fail in a container. Masked in the overlay only.
MASKED_UNITS = (
    "postgresql.service", "postgresql@.service", "podman.service", "podman.socket", "podman-restart.service",
    "podman-auto-update.service", "podman-auto-update.timer", "getty@tty1.service", "getty-static.service",
    "getty.target", "console-getty.service", "serial-getty@.service", "apt-daily.timer", "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer", "e2scrub_all.timer", "e2scrub_reap.service", "fstrim.timer", "man-db.timer",
    "systemd-tmpfiles-clean.timer", "systemd-timesyncd.service", "systemd-pstore.service", "remote-fs.target",
    "systemd-logind.service", "systemd-update-utmp.service", "systemd-update-utmp-runlevel.service",
    "dev-hugepages.mount", "dev-mqueue.mount", "sys-kernel-debug.mount", "sys-kernel-tracing.mount",
    "sys-fs-fuse-connections.mount", "sys-kernel-config.mount", "systemd-journald-audit.socket",
    "systemd-networkd.service", "systemd-resolved.service", "cron.service", "ssh.service", "rsyslog.service",
    # boot-time chores of a real machine, on the critical path to `running` and pointless here
    "systemd-modules-load.service", "modprobe@.service", "systemd-remount-fs.service", "systemd-sysctl.service",
    "systemd-sysusers.service", "systemd-journal-flush.service", "systemd-user-sessions.service",
    "systemd-random-seed.service", "systemd-firstboot.service", "systemd-machine-id-commit.service",
    "systemd-update-done.service", "ldconfig.service", "systemd-hwdb-update.service", "systemd-binfmt.service",
    "proc-sys-fs-binfmt_misc.automount", "systemd-ask-password-wall.path", "systemd-ask-password-console.path",
)



def cgroup_hierarchies() -> list[tuple[Path, str, str]]:
    """(host mount point, fs type, mount options) of each cgroup hierarchy, with our own cgroup path.

    Returns (mount point / our cgroup path, fstype, options) so a child cgroup can be made next to us
    (and inside any limits the test runner has, e.g. a memory cgroup).
    """
    ours: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        ours[controllers] = path
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, right = line.split(" - ", 1)
        mount_point = left.split()[4]
        fstype, _, superopts = right.split()[:3]
        if fstype == "cgroup2":
            key, opts = "", ""
        elif fstype == "cgroup":
            opts = ",".join(o for o in superopts.split(",") if o not in ("rw", "ro"))
            key = opts
        else:
            continue
        if key in ours and mount_point.startswith("/sys/fs/cgroup"):
            found.append((Path(mount_point) / ours[key].lstrip("/"), fstype, opts))
    return found

# Runs as PID 1 of the new namespaces. $1 = work dir, $2 = host path of the staged files to copy in.
_BOOT_SCRIPT = r"""#!/bin/sh
set -eu
W=$1
R=$W/root
mount -n -t tmpfs -o mode=755 nodeagent-node-upper "$W/t"
mkdir -p "$W/t/upper" "$W/t/work"
mount -n -t overlay nodeagent-node -o "lowerdir=/,upperdir=$W/t/upper,workdir=$W/t/work" "$R"
mount -n -t proc proc "$R/proc"
mount -n -t sysfs -o ro,nosuid,nodev,noexec sysfs "$R/sys"
@CGROUP_MOUNTS@
mount -n -t tmpfs -o mode=755,size=16m,nosuid nodeagent-node-dev "$R/dev"
for d in null zero full random urandom tty; do
  touch "$R/dev/$d"; mount -n --bind "/dev/$d" "$R/dev/$d"
done
mkdir -p "$R/dev/pts" "$R/dev/shm"
mount -n -t devpts -o newinstance,ptmxmode=0666,mode=620,nosuid,noexec devpts "$R/dev/pts"
ln -s pts/ptmx "$R/dev/ptmx"
mount -n -t tmpfs -o mode=1777,nosuid,nodev nodeagent-node-shm "$R/dev/shm"
ln -s /proc/self/fd "$R/dev/fd"
ln -s /proc/self/fd/0 "$R/dev/stdin"; ln -s /proc/self/fd/1 "$R/dev/stdout"; ln -s /proc/self/fd/2 "$R/dev/stderr"
mount -n -t tmpfs -o mode=755,nosuid,nodev nodeagent-node-run "$R/run"
mount -n -t tmpfs -o mode=1777,nosuid,nodev nodeagent-node-tmp "$R/tmp"
# this checkout, at its own path: the editable nodeagent install and the role/units live there,
# and a clone under /tmp (hidden by the tmpfs above) or on another filesystem (not part of the
# overlay of /) would otherwise be missing inside the node
mkdir -p "$R"@REPO@
mount -n --rbind @REPO@ "$R"@REPO@
# containerd's overlayfs snapshotter cannot use an overlay as its upper layer: give it a tmpfs
mkdir -p "$R/var/lib/containerd"
mount -n -t tmpfs -o mode=711 nodeagent-node-containerd "$R/var/lib/containerd"
cp -a "$W/stage/." "$R/"
rm -f "$R/usr/sbin/policy-rc.d"
hostname nodeagent-node
cd "$R"
mkdir -p .oldroot
pivot_root . .oldroot
cd /
umount -n -l /.oldroot
rmdir /.oldroot
exec env -i container=other PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  /lib/systemd/systemd --system --log-target=console --show-status=no
"""


class NodeError(AssertionError):
    """The node did not boot or a command in it failed (a test-environment problem)."""


class SystemdNode:
    """One booted node. `pid` is its PID 1 as seen from the real host."""

    def __init__(self, base: str | os.PathLike | None = None, containerd_config: str = NODE_CONTAINERD_CONFIG):
        self.work = Path(tempfile.mkdtemp(prefix="na-node-", dir=base))
        self.containerd_config = containerd_config
        self.cgroup_name = f"nodeagent-node-{uuid.uuid4().hex[:8]}"
        self.hierarchies = cgroup_hierarchies()
        self.cgroups = [parent / self.cgroup_name for parent, _, _ in self.hierarchies]
        self.launcher: subprocess.Popen | None = None
        self.pid: int | None = None
        self.boot_seconds: float | None = None

    # --- boot / teardown ------------------------------------------------------------------------

    def _stage(self) -> None:
        """Files copied into the node's root before systemd starts."""
        stage = self.work / "stage"
        units = stage / "etc/systemd/system"
        units.mkdir(parents=True)
        for unit in MASKED_UNITS:
            (units / unit).symlink_to("/dev/null")
        (stage / "etc/containerd").mkdir(parents=True)
        (stage / "etc/containerd/config.toml").write_text(self.containerd_config)
        (stage / "etc/hostname").write_text("nodeagent-node\n")
        (stage / "etc/machine-id").write_text(uuid.uuid4().hex + "\n")

    def boot(self, timeout: float = 30.0) -> "SystemdNode":
        for d in ("t", "root"):
            (self.work / d).mkdir()
        self._stage()
        (self.work / "boot.sh").write_text(_BOOT_SCRIPT.replace("@CGROUP_MOUNTS@", self._cgroup_mount_lines())
                                          .replace("@REPO@", shlex.quote(str(REPO))))
        self._make_cgroups()
        console = open(self.work / "console.log", "wb")
        # enter the node's own cgroups first: they become the roots of the node's cgroup namespace
        enter = "; ".join(f'echo $$ > "{cg}/cgroup.procs"' for cg in self.cgroups)
        argv = [
            "sh", "-c", f'set -e; {enter}; exec "$@"', "sh",
            # pdeathsig twice: if the test process dies without teardown, unshare gets SIGKILL, and
            # so does the node's PID 1 when unshare goes: the whole PID namespace ends with it
            "setpriv", "--pdeathsig", "KILL",
            "unshare", "--pid", "--fork", "--mount", "--uts", "--ipc", "--net", "--cgroup",
            "--propagation", "private", "--",
            "setpriv", "--pdeathsig", "KILL", "sh", str(self.work / "boot.sh"), str(self.work),
        ]
        start = time.monotonic()
        self.launcher = subprocess.Popen(argv, stdout=console, stderr=console, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        console.close()
        deadline = start + timeout
        try:
            while time.monotonic() < deadline:
                if self.launcher.poll() is not None:
                    raise NodeError(f"node exited {self.launcher.returncode} during boot:\n{self.console_tail()}")
                if self.pid is None:
                    self.pid = self._find_pid1()
                if self.pid is not None and self._booted():
                    self.boot_seconds = time.monotonic() - start
                    return self
                time.sleep(0.05)
            raise NodeError(f"node not running after {timeout}s: {self.state()}\n{self.console_tail()}")
        except BaseException:
            self.shutdown()
            raise

    def _find_pid1(self) -> int | None:
        try:
            children = psutil.Process(self.launcher.pid).children()
        except psutil.NoSuchProcess:
            return None
        for child in children:
            try:
                if child.exe() == "/usr/lib/systemd/systemd" or child.name() == "systemd":
                    return child.pid
            except psutil.Error:
                continue
        return None

    def state(self) -> str:
        if self.pid is None:
            return "not started"
        proc = self.run(["systemctl", "is-system-running"], check=False, timeout=10)
        return proc.stdout.strip() or proc.stderr.strip()

    def _booted(self) -> bool:
        return self.state() in ("running", "degraded")

    def console_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join((self.work / "console.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def shutdown(self) -> None:
        """SIGKILL the node's PID 1 (ends its whole PID namespace), then remove its cgroup and files."""
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.launcher is not None:
            if self.pid is None and self.launcher.poll() is None:
                self.launcher.kill()
            try:
                self.launcher.wait(10)
            except subprocess.TimeoutExpired:
                self.launcher.kill()
                self.launcher.wait(5)
        self._remove_cgroup()
        shutil.rmtree(self.work, ignore_errors=True)
        self.pid = None

    def _cgroup_mount_lines(self) -> str:
        """Mount the node's cgroups like the host's: pure cgroup2, or v1 hierarchies + unified."""
        if len(self.hierarchies) == 1 and self.hierarchies[0][1] == "cgroup2":
            return 'mount -n -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$R/sys/fs/cgroup"'
        lines = ['mount -n -t tmpfs -o mode=755,nosuid,nodev,noexec nodeagent-node-cgroup "$R/sys/fs/cgroup"']
        for parent, fstype, opts in self.hierarchies:
            host_mount = next(p for p in [parent, *parent.parents] if p.parent == Path("/sys/fs/cgroup"))
            target = f'"$R/sys/fs/cgroup/{host_mount.name}"'
            lines.append(f"mkdir -p {target}")
            if fstype == "cgroup2":
                lines.append(f"mount -n -t cgroup2 -o nosuid,nodev,noexec cgroup2 {target}")
            else:
                lines.append(f"mount -n -t cgroup -o nosuid,nodev,noexec,{opts} cgroup {target}")
        return "\n".join(lines)

    def _make_cgroups(self) -> None:
        for cg in self.cgroups:
            cg.mkdir()
            # a new v1 cpuset starts with no CPUs and no memory nodes: no task may join it
            for knob in ("cpuset.cpus", "cpuset.mems"):
                if (cg / knob).exists():
                    (cg / knob).write_text((cg.parent / knob).read_text())

    def _remove_cgroup(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while any(cg.exists() for cg in self.cgroups):
            for cg in self.cgroups:
                for dirpath, _, _ in sorted(os.walk(cg), key=lambda e: len(e[0]), reverse=True):
                    try:
                        os.rmdir(dirpath)
                    except OSError:
                        pass
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)  # the killed processes are still being reaped

    # --- inside the node ------------------------------------------------------------------------

    @property
    def root(self) -> Path:
        """The node's root filesystem seen from the real host (give it to `--root`)."""
        return Path(f"/proc/{self.pid}/root")

    def path(self, node_path: str) -> Path:
        return self.root / node_path.lstrip("/")

    @property
    def containerd_socket(self) -> Path:
        return self.path("/run/containerd/containerd.sock")

    def nsenter_argv(self, argv: list[str]) -> list[str]:
        return ["nsenter", "-t", str(self.pid), "-m", "-u", "-i", "-n", "-p", "--", *argv]

    def run(self, argv: list[str], *, check: bool = True, timeout: float = 60, input: str | None = None,
            env: dict[str, str] | None = None, import_checkout: bool = True) -> subprocess.CompletedProcess:
        """Run a command inside the node (all its namespaces).

        import_checkout=False leaves PYTHONPATH unset, for commands that must see only what is
        installed in the node (a venv's pip and console script, as on a managed host).
        """
        full_env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
                    "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"}
        if import_checkout:
            # nsenter -m starts in the node's /, where `python -m nodeagent` would import the
            # package pip installed (maybe another checkout), not this one. Surprise: the checkout
            # on PYTHONPATH also carries its nodeagent.egg-info (scripts/setup-test-env does
            # `pip install -e`), so any pip in the node then thinks nodeagent is installed.
            full_env["PYTHONPATH"] = str(REPO)
        full_env.update(env or {})
        proc = subprocess.run(self.nsenter_argv(argv), capture_output=True, text=True, timeout=timeout,
                              input=input, env=full_env)
        if check and proc.returncode != 0:
            raise NodeError(f"{argv} in the node exited {proc.returncode}: {proc.stderr.strip() or proc.stdout.strip()}")
        return proc

    def pod_argv(self, argv: list[str], *, host_pid: bool = False) -> list[str]:
        """argv run like a DaemonSet pod on this node: node's network/UTS/IPC, its own mount namespace.

        The pod's files are this machine's (where nodeagent is installed, as in its image); the
        node's root is reachable at $NODEAGENT_ROOT, which nodeagent reads as --root:
        - host_pid=False: a child PID namespace of the node's (any pod); the node's root was opened
          before /proc was remounted and is held as fd 9 of the pod's PID 1: /proc/1/fd/9
        - host_pid=True: the node's PID namespace (hostPID): /proc/1 is the node's systemd, the
          root is /proc/1/root and `nsenter -t 1` reaches the node.
        """
        root = "/proc/1/root" if host_pid else "/proc/1/fd/9"
        script = (
            'set -e; exec 9< "/proc/$0/root"; mount -n -t proc proc /proc; '
            f'export NODEAGENT_ROOT={root}; exec "$@"'
        )
        return [
            "nsenter", "-t", str(self.pid), "-p", "-n", "-u", "-i", "--",
            "unshare", "--mount", "--propagation", "private", "--fork", *([] if host_pid else ["--pid"]), "--",
            "sh", "-c", script, str(self.pid), *argv,
        ]

    def run_pod(self, argv: list[str], *, host_pid: bool = False, check: bool = True, timeout: float = 120,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run argv as a DaemonSet-like pod (see pod_argv); the environment is ours plus `env`."""
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("NODEAGENT_")}
        full_env.update(env or {})
        proc = subprocess.run(self.pod_argv(argv, host_pid=host_pid), capture_output=True, text=True,
                              timeout=timeout, env=full_env)
        if check and proc.returncode != 0:
            raise NodeError(f"{argv} in a pod exited {proc.returncode}: {proc.stderr.strip() or proc.stdout.strip()}")
        return proc

    def hit_start_limit(self, unit: str = "containerd.service", tries: int = 12) -> int:
        """Restart `unit` back to back until systemd refuses (start-limit-hit); returns the restarts done."""
        for n in range(1, tries + 1):
            self.systemctl("restart", unit, check=False)
            if self.unit_property(unit, "Result") == "start-limit-hit":
                return n
        raise NodeError(f"{unit} never hit its start limit in {tries} restarts")

    def systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(["systemctl", *args], check=check)

    def unit_property(self, unit: str, prop: str) -> str:
        return self.systemctl("show", "-p", prop, "--value", unit).stdout.strip()

    def main_pid(self, unit: str = "containerd.service") -> int:
        """The unit's MainPID in the node's PID namespace (0 when not running)."""
        return int(self.unit_property(unit, "MainPID") or 0)

    def import_test_images(self) -> None:
        """Import the busybox test image (also the sandbox image of NODE_CONTAINERD_CONFIG) into the node."""
        from tests.support.oci_image import SANDBOX_IMAGE, TEST_IMAGE, build_oci_archive

        build_oci_archive(self.path("/tmp/nodeagent-test-images.tar"), [TEST_IMAGE, SANDBOX_IMAGE])
        self.run(["ctr", "-n", "k8s.io", "images", "import", "/tmp/nodeagent-test-images.tar"])
        self.path("/tmp/nodeagent-test-images.tar").unlink()
        from tests.support.oci_image import wait_until_cri_sees

        wait_until_cri_sees(self.containerd_socket, [TEST_IMAGE, SANDBOX_IMAGE])

    def wait_active(self, unit: str = "containerd.service", timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.systemctl("is-active", unit, check=False).stdout.strip() == "active":
                if unit != "containerd.service" or self.containerd_socket.exists():
                    return
            time.sleep(0.05)
        status = self.systemctl("status", "--no-pager", unit, check=False).stdout
        raise NodeError(f"{unit} not active after {timeout}s:\n{status}")


@pytest.fixture(scope="session")
def systemd_node():
    """One booted node shared by the session (boot ~0.5 s); tests must leave containerd running."""
    if os.geteuid() != 0:
        pytest.skip("booting systemd in namespaces needs root")
    if not Path("/lib/systemd/systemd").exists():
        pytest.skip("systemd is not installed (run scripts/setup-test-env)")
    node = SystemdNode().boot()
    try:
        node.wait_active("containerd.service")
        yield node
    finally:
        node.shutdown()


@pytest.fixture
def clean_node(systemd_node):
    """The shared node, handed back in shape after the test: containerd's start-rate counter reset
    (several tests restarting it within 10 s would otherwise trip systemd's start limit for the
    next one) and containerd active again."""
    yield systemd_node
    systemd_node.systemctl("reset-failed", "containerd.service", check=False)
    if systemd_node.systemctl("is-active", "containerd.service", check=False).stdout.strip() != "active":
        systemd_node.systemctl("start", "containerd.service", check=False)
    systemd_node.wait_active()
