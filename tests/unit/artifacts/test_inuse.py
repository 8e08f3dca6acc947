"""artifacts.inuse: a version is in use while any process runs a binary from it, whichever way
the kernel spells the path (host-absolute, under --root, or "(deleted)" after a prune). The
processes here are real: copies of /bin/sleep started from a version dir in a fake root."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from nodeagent.artifacts.inuse import pids_using
from nodeagent.host import HostRoot

VERSION = "/opt/nodeagent/gvisor/20240729.0"


@pytest.fixture
def sleeper(tmp_path):
    """A process whose executable is <root>/opt/nodeagent/gvisor/20240729.0/runsc (a copy of sleep)."""
    binary = tmp_path / VERSION.lstrip("/") / "runsc"
    binary.parent.mkdir(parents=True)
    shutil.copy2(shutil.which("sleep"), binary)
    proc = subprocess.Popen([str(binary), "60"])
    yield proc, binary
    proc.kill()
    proc.wait()


def test_a_running_binary_keeps_its_version_in_use_and_only_that_one(tmp_path, sleeper):
    proc, _ = sleeper
    host = HostRoot(tmp_path)
    assert proc.pid in pids_using(host, VERSION)
    assert proc.pid in pids_using(host, VERSION + "/")
    assert proc.pid not in pids_using(host, "/opt/nodeagent/gvisor/20240101.0")
    assert proc.pid not in pids_using(host, "/opt/nodeagent/gvisor/2024")  # a prefix of the name is not the dir


def test_a_deleted_binary_still_counts(tmp_path, sleeper):
    """A prune that raced a start leaves the process running an unlinked file: still in use."""
    proc, binary = sleeper
    binary.unlink()
    assert proc.pid in pids_using(HostRoot(tmp_path), VERSION)


def test_nothing_running_means_not_in_use(tmp_path, sleeper):
    proc, _ = sleeper
    proc.kill()
    proc.wait()
    assert proc.pid not in pids_using(HostRoot(tmp_path), VERSION)


def test_a_process_of_another_mount_namespace_does_not_pin_a_captured_trees_version(tmp_path):
    """Seen on main while a systemd-node test ran beside the catalogue: a process in a private
    mount namespace ran /opt/nodeagent/kata/<v>/... (its own /opt), and `uninstall --root <tmp
    tree>` refused: "kata is still in use by running sandbox process(es) 1388". For a tree that
    is not the live root and has no procfs of its own, the host-absolute spelling names this
    machine's files, not the tree's; only the root-prefixed one counts. The process here is real:
    a copy of sleep, run from a tmp dir bind-mounted over /opt/nodeagent in `unshare -m`."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    other = tmp_path / "other-namespace"
    binary = other / VERSION.removeprefix("/opt/nodeagent/") / "runsc"
    binary.parent.mkdir(parents=True)
    shutil.copy2(shutil.which("sleep"), binary)
    tree = tmp_path / "tree"  # a captured tree holding the same version
    (tree / VERSION.lstrip("/")).mkdir(parents=True)
    proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c",
                             f'mkdir -p /opt/nodeagent && mount --bind "{other}" /opt/nodeagent && exec {VERSION}/runsc 60'])
    try:
        import time

        for _ in range(100):  # until sh has exec'd the sleep copy
            try:
                if os.readlink(f"/proc/{proc.pid}/exe").startswith(VERSION):
                    break
            except OSError:
                pass
            time.sleep(0.05)
        assert os.readlink(f"/proc/{proc.pid}/exe") == f"{VERSION}/runsc"  # how the kernel spells it to us
        assert proc.pid not in pids_using(HostRoot(tree), VERSION)
    finally:
        proc.kill()
        proc.wait()
