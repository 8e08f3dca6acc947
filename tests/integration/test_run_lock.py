"""The run lock is root's alone: no other user can open it, so no other user can stop nodeagent.

Security review L2: the shipped units ran `touch /run/nodeagent.lock` under UMask=0022, so the
lock was 0644; `nobody` opened it read-only, took an exclusive flock, and every `install` and
`agent --once` exited 3, which nodeagent-converge.service counted as success. Here the real CLI
installs gVisor into a copy of a captured host (--root, restart none, the suite's directory
mirror) while a real `nobody` process (setpriv) tries the same.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.support.cli import run_cli

pytestmark = [pytest.mark.integration, pytest.mark.root]

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures/hosts/containerd-v2"
LOCK = "run/nodeagent.lock"
INSTALL = ("install", "--runtime", "gvisor", "--restart", "none")
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]

# Run as nobody: open the lock read-only and flock it; print what happened, then hold the lock
# (if it got one) until stdin closes.
_HOLDER = r"""
import fcntl, os, sys
try:
    fd = os.open(sys.argv[1], os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    print("held", flush=True)
except OSError as exc:
    print(f"refused {exc.errno}", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def root():
    """A host copy nobody can walk to (tmp_path's parents are 0700, which would hide the attack)."""
    if os.geteuid() != 0:
        pytest.skip("needs root (setpriv to nobody)")
    base = Path(tempfile.mkdtemp(prefix="na-runlock-"))
    os.chmod(base, 0o755)
    root = base / "root"
    shutil.copytree(FIXTURE, root, symlinks=True)
    for leftover in (root / "usr/local/bin").iterdir():  # the capture's own runsc: not ours to replace
        leftover.unlink()
    (root / "run").chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _as_nobody(lock: Path) -> subprocess.Popen:
    proc = subprocess.Popen([*NOBODY, sys.executable, "-c", _HOLDER, str(lock)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.verdict = proc.stdout.readline().strip()
    return proc


def _release(proc: subprocess.Popen) -> None:
    proc.stdin.close()
    proc.wait(30)


def _assert_root_only(lock: Path) -> os.stat_result:
    st = os.lstat(lock)
    assert stat.S_ISREG(st.st_mode) and (st.st_uid, st.st_gid) == (0, 0), st
    assert stat.S_IMODE(st.st_mode) == 0o600, oct(st.st_mode)
    return st


def _install(root: Path, umask: int | None = None) -> subprocess.CompletedProcess:
    if umask is None:
        return run_cli("--root", str(root), *INSTALL)
    old = os.umask(umask)  # inherited by the CLI subprocess
    try:
        return run_cli("--root", str(root), *INSTALL)
    finally:
        os.umask(old)


def test_the_lock_install_creates_is_closed_to_nobody(root):
    proc = _install(root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    _assert_root_only(root / LOCK)
    attacker = _as_nobody(root / LOCK)
    _release(attacker)
    assert attacker.verdict == "refused 13", attacker.verdict  # EACCES
    again = _install(root)  # and the next run is not held up by the attempt
    assert again.returncode == 0, again.stderr[-2000:]


def test_a_world_readable_lock_held_by_nobody_is_replaced_and_install_converges(root):
    """The old units' `touch` left a root-owned 0644 lock; nobody holds an flock on it."""
    lock = root / LOCK
    lock.touch()
    lock.chmod(0o644)
    attacker = _as_nobody(lock)
    try:
        assert attacker.verdict == "held"
        proc = _install(root)
        assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])  # today: 3, "another nodeagent holds"
        assert os.readlink(root / "usr/local/bin/runsc").startswith("/opt/nodeagent/gvisor/")
    finally:
        _release(attacker)
    _assert_root_only(lock)
    late = _as_nobody(lock)
    _release(late)
    assert late.verdict == "refused 13", late.verdict


def test_a_lock_owned_by_nobody_is_repaired(root):
    lock = root / LOCK
    lock.write_text("")
    os.chown(lock, 65534, 65534)
    lock.chmod(0o644)
    proc = _install(root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    _assert_root_only(lock)


@pytest.mark.parametrize("preexisting", [None, 0o666])
def test_the_lock_is_0600_whatever_the_umask(root, preexisting):
    lock = root / LOCK
    if preexisting is not None:
        old = os.umask(0)
        try:
            lock.touch(mode=preexisting)
        finally:
            os.umask(old)
    proc = _install(root, umask=0)
    assert proc.returncode == 0, proc.stderr[-2000:]
    _assert_root_only(lock)


def test_a_lock_that_is_a_symlink_is_replaced_not_followed(root):
    victim = root / "etc/victim"
    victim.write_text("keep me\n")
    (root / LOCK).symlink_to(victim)
    proc = _install(root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert victim.read_text() == "keep me\n"  # today: truncated, then the pid written into it
    _assert_root_only(root / LOCK)

