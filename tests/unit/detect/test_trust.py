"""detect.trust on real files: who owns each component of a path, who may write it (issue 11 §1)."""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import pytest

from nodeagent.detect import trust
from nodeagent.detect.procs import HostProcess
from nodeagent.host import HostRoot

pytestmark = pytest.mark.root  # chown needs root
NOBODY = 65534


@pytest.fixture
def root():
    """A root-owned 0755 host root with /usr/bin/containerd (0755) in it."""
    path = Path(tempfile.mkdtemp(prefix="nodeagent-trust-"))
    os.chmod(path, 0o755)
    (path / "usr/bin").mkdir(parents=True)
    binary = path / "usr/bin/containerd"
    binary.write_bytes(b"\x7fELF")
    binary.chmod(0o755)
    yield path
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def verdict(root: Path, host_path: str, **kw) -> trust.Verdict:
    return trust.path_verdict(HostRoot(root), host_path, **kw)


def test_a_root_owned_binary_in_root_owned_directories_is_trusted(root):
    assert verdict(root, "/usr/bin/containerd") == trust.TRUSTED


def test_a_binary_others_may_write_or_own_is_not(root):
    (root / "usr/bin/containerd").chmod(0o775)
    assert verdict(root, "/usr/bin/containerd").reason == "/usr/bin/containerd is writable by group or others (mode 0o775)"
    (root / "usr/bin/containerd").chmod(0o755)
    os.chown(root / "usr/bin/containerd", NOBODY, NOBODY)
    assert verdict(root, "/usr/bin/containerd").reason == "/usr/bin/containerd is owned by uid 65534, not root"


def test_a_directory_above_it_that_others_may_write_is_not(root):
    (root / "usr").chmod(0o777)
    assert verdict(root, "/usr/bin/containerd").reason == "/usr is writable by group or others (mode 0o777)"
    (root / "usr").chmod(0o1777)  # sticky does not make a binary's directory safe
    assert not verdict(root, "/usr/bin/containerd").trusted
    assert verdict(root, "/usr/bin/containerd", allow_sticky=True) == trust.TRUSTED


def test_the_root_itself_counts(root):
    root.chmod(0o777)
    assert not verdict(root, "/usr/bin/containerd").trusted


def test_links_are_followed_and_judged_where_they_lead(root):
    (root / "usr/local/bin").mkdir(parents=True)
    planted = root / "var/tmp/evil"
    planted.mkdir(parents=True)
    os.chown(planted, NOBODY, NOBODY)
    (planted / "containerd").write_bytes(b"x")
    (root / "usr/local/bin/containerd").symlink_to("/var/tmp/evil/containerd")
    assert verdict(root, "/usr/local/bin/containerd").reason == "/var/tmp/evil is owned by uid 65534, not root"
    (root / "usr/local/bin/ok").symlink_to("../../bin/containerd")
    assert verdict(root, "/usr/local/bin/ok") == trust.TRUSTED


def test_sockets(root):
    host = HostRoot(root)
    (root / "run/containerd").mkdir(parents=True)
    assert trust.socket_verdict(host, "/run/containerd/containerd.sock") == trust.TRUSTED  # absent: peer checked later
    (root / "run/containerd/containerd.sock").write_text("")
    assert trust.socket_verdict(host, "/run/containerd/containerd.sock").reason == "/run/containerd/containerd.sock is not a socket"
    (root / "run/containerd/containerd.sock").unlink()
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(root / "run/containerd/containerd.sock"))
        os.chmod(root / "run/containerd/containerd.sock", 0o660)  # a socket's mode is who may connect: fine
        assert trust.socket_verdict(host, "/run/containerd/containerd.sock") == trust.TRUSTED
        os.chown(root / "run/containerd/containerd.sock", NOBODY, NOBODY)
        assert trust.socket_verdict(host, "/run/containerd/containerd.sock").reason == (
            "/run/containerd/containerd.sock is owned by uid 65534, not root")


@pytest.mark.parametrize("line, unit", [
    ("0::/system.slice/containerd.service", "containerd.service"),
    ("1:name=systemd:/nodeagent-node-x/system.slice/k3s.service", "k3s.service"),  # seen from the node's host
    ("0::/user.slice/user-1000.slice/user@1000.service/app.slice/containerd.service", None),
    ("0::/system.slice/containerd.service.d", None),
])
def test_unit_of_reads_the_cgroup(tmp_path, line, unit):
    (tmp_path / "cgroup").write_text(line + "\n")
    proc = HostProcess(1, "containerd", "/usr/bin/containerd", proc_dir=str(tmp_path))
    assert trust.unit_of(proc, ("containerd.service", "k3s.service")) == unit


_VERDICT_WITHOUT_PTRACE = """\
import json, sys
from nodeagent.detect import procs, trust
from nodeagent.host import HostRoot
pid, root = int(sys.argv[1]), sys.argv[2]
(proc,) = [p for p in procs.find(HostRoot("/"), ("containerd",)) if p.pid == pid]
verdict = trust.process_verdict(HostRoot(root), proc)
print(json.dumps({"exe": proc.exe, "trusted": verdict.trusted, "reason": verdict.reason}))
"""


def _verdict_as_root_without_ptrace(root: Path, argv0: str) -> dict:
    """process_verdict for a real root process with full capabilities (a copy of sleep named
    containerd, started as `argv0`), judged by root without CAP_SYS_PTRACE, as in nodeagent's
    systemd unit: the kernel refuses it /proc/<pid>/exe."""
    import json
    import shutil
    import subprocess
    import sys

    shutil.copy2("/bin/sleep", root / "usr/bin/containerd")
    daemon = subprocess.Popen([argv0, "60"], executable=str(root / "usr/bin/containerd"))
    try:
        out = subprocess.run(
            ["setpriv", "--bounding-set", "-sys_ptrace", "--inh-caps", "-all", "--",
             sys.executable, "-c", _VERDICT_WITHOUT_PTRACE, str(daemon.pid), str(root)],
            check=True, capture_output=True, text=True, timeout=60,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])})
    finally:
        daemon.kill()
        daemon.wait()
    return json.loads(out.stdout)


def test_root_without_ptrace_judges_a_root_process_by_its_absolute_argv0(root):
    seen = _verdict_as_root_without_ptrace(root, "/usr/bin/containerd")
    assert seen == {"exe": None, "trusted": True, "reason": None}  # exe hidden, still believed
    (root / "usr/bin").chmod(0o777)
    assert _verdict_as_root_without_ptrace(root, "/usr/bin/containerd")["reason"] == \
        "/usr/bin is writable by group or others (mode 0o777)"


def test_root_without_ptrace_does_not_believe_a_relative_argv0(root):
    seen = _verdict_as_root_without_ptrace(root, "containerd")
    assert seen["reason"] == "its executable cannot be read (no CAP_SYS_PTRACE) and its argv[0] is no absolute path"
