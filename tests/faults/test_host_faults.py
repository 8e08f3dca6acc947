"""A full disk, a read-only root and two nodeagents at once: a clear error or a wait, never damage.

Disk full / read-only run in a private mount namespace (`unshare -m`, see confined.py) with a
real containerd 1.6 binary in the root (it validates the config) and the suite's mirror (real
runsc, stand-in shims).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.faults import harness
from tests.support import cli
from tests.support.cli import assert_known_error, run_cli
from tests.unit.containerd.scenarios import have_containerd

pytestmark = [pytest.mark.integration, pytest.mark.root]
CONFINED = Path(__file__).with_name("confined.py")
# the run lock is taken before the disk/permissions trouble shows; it lives in /run (a tmpfs on a
# real node) and is the one trace a failed run may leave
# the run lock: created (its directory too, or that directory's mtime moves), or reused
LOCK_TRACE = {"added run", "added run/nodeagent.lock", "changed run/nodeagent.lock", "changed run (mtime)"}
INSTALL = ["install", "--runtime", "kata", "--skip-eligibility", "--restart", "none"]


@pytest.fixture(scope="module")
def ref():
    if os.geteuid() != 0:
        pytest.skip("needs root (mount namespaces)")
    if not have_containerd("1.6"):
        pytest.skip("containerd 1.6 is not installed (run scripts/setup-test-env)")
    base = Path(tempfile.mkdtemp(prefix="na-hostfaults-"))
    try:
        yield harness.Reference.build(base, "kata", warm_up=False)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def confined(mode: str, template: Path, *args: str) -> dict:
    mount_point = Path(tempfile.mkdtemp(prefix="na-confined-"))
    try:
        # this test's own TMPDIR (tests/conftest.py): a bad-input case must leave it empty
        env = harness.cli_env(cli.TMPDIR or Path(tempfile.gettempdir()))
        proc = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, str(CONFINED), mode,
                               str(mount_point), str(template), *args],
                              capture_output=True, text=True, timeout=300, env=env)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)
    finally:
        mount_point.rmdir()  # empty: the tmpfs lived in the private namespace only


def changes(result: dict) -> list[str]:
    """The diff minus the run lock, the one trace allowed (added, or rewritten when it was there)."""
    return [c for c in result["diff"] if c not in LOCK_TRACE and not c.startswith("changed run/nodeagent.lock ")]


def as_proc(result: dict) -> subprocess.CompletedProcess:
    return subprocess.CompletedProcess([], result["rc"], result["stdout"], result["stderr"])


@pytest.mark.bad_input
def test_disk_full_is_a_clear_error_and_changes_nothing(ref):
    result = confined("full", ref.template, *INSTALL)
    message = assert_known_error(as_proc(result), 2)
    assert "no space left" in message.lower(), result["stderr"]
    assert changes(result) == [], result["diff"]


@pytest.mark.bad_input
def test_disk_full_during_uninstall_keeps_the_installed_node(ref):
    """Uninstall needs little space (a temp file to restore the config), but a disk filled to the
    last byte must still not leave it half done."""
    result = confined("filled", ref.installed, "uninstall", "--runtime", "kata", "--restart", "none")
    message = assert_known_error(as_proc(result), 2)
    assert "no space left" in message.lower(), result["stderr"]
    assert changes(result) == [], result["diff"]


@pytest.mark.bad_input
@pytest.mark.parametrize("mode", ["ro", "ro-etc"])
def test_read_only_root_is_a_clear_error_and_changes_nothing(ref, mode):
    result = confined(mode, ref.template, *INSTALL)
    message = assert_known_error(as_proc(result), 2)
    assert "read-only" in message, result["stderr"]
    assert changes(result) == [], result["diff"]


def test_uninstall_that_cannot_remove_its_links_leaves_none_dangling(ref):
    """Regression (found by the kill points): removal took /opt/kata away before the shim's link
    that points through it, so a run stopped in between left a dangling containerd-shim-kata-v2.
    With /usr/local/bin read-only the removal stops right there, deterministically."""
    result = confined("ro-bin", ref.installed, "uninstall", "--runtime", "kata", "--restart", "none")
    assert result["dangling"] == [], result
    assert "read-only" in assert_known_error(as_proc(result), 2)


def _concurrent(root: Path, argvs: list[list[str]]) -> list[subprocess.CompletedProcess]:
    tmp = Path(tempfile.mkdtemp(prefix="na-faults-tmp-"))
    try:
        procs = [subprocess.Popen(a, env=harness.cli_env(tmp), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for a in argvs]
        return [subprocess.CompletedProcess(p.args, p.wait(120), *p.communicate()) for p in procs]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.parametrize("round_", range(3))
def test_two_installs_at_once_one_waits_or_exits_3_no_lost_update(ref, tmp_path, round_):
    root = tmp_path / "root"
    harness.copy_root(ref.template, root)
    argv = harness.argv(root, "install", "kata")
    results = _concurrent(root, [argv, argv])
    codes = sorted(r.returncode for r in results)
    assert codes in ([0, 0], [0, 3]), [(r.returncode, r.stderr[-500:]) for r in results]
    for r in results:
        if r.returncode == 3:
            assert "another nodeagent holds" in assert_known_error(r, 3)
    assert (root / harness.CONFIG).read_bytes() == ref.converged_config
    state = json.loads((root / "var/lib/nodeagent/state.json").read_text())
    assert "kata" in json.dumps(state), state
    assert harness.release_trees(root) == ref.releases and harness._leftovers(root) == []
    again = run_cli("--root", str(root), "-o", "json", *INSTALL)
    assert again.returncode == 0 and json.loads(again.stdout)["changed"] is False, again.stdout


def test_install_and_uninstall_at_once_end_in_one_whole_state(ref, tmp_path):
    """Whichever runs second wins; the node is wholly installed or wholly uninstalled."""
    root = tmp_path / "root"
    harness.copy_root(ref.installed, root)
    results = _concurrent(root, [harness.argv(root, "uninstall", "kata"), harness.argv(root, "install", "kata")])
    assert all(r.returncode in (0, 3) for r in results), [(r.returncode, r.stderr[-500:]) for r in results]
    state, problems = harness.check_node(root, ref, "install", after_rerun=True)
    assert not problems, problems
    if state == "converged":
        assert harness.release_trees(root) == ref.releases
    else:
        assert state == "original" and harness.release_trees(root) == {}


def _agent_argv(root: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "nodeagent", "--root", str(root), "agent", "--runtime", "kata",
            "--skip-eligibility", "--restart", "none", "--listen", "127.0.0.1:0", *extra]


def test_two_agents_once_at_once_one_exits_3(ref, tmp_path):
    """`agent --once` that finds the lock held exits 3 (it used to say 2); the other converges."""
    root = tmp_path / "root"
    harness.copy_root(ref.template, root)
    results = _concurrent(root, [_agent_argv(root, "--once"), _agent_argv(root, "--once")])
    codes = sorted(r.returncode for r in results)
    assert codes in ([0, 0], [0, 3]), [(r.returncode, r.stdout[-300:], r.stderr[-300:]) for r in results]
    for r in results:
        if r.returncode == 3:
            assert "another nodeagent holds" in assert_known_error(r, 3)
    assert (root / harness.CONFIG).read_bytes() == ref.converged_config
    assert harness.release_trees(root) == ref.releases and harness._leftovers(root) == []


def test_two_long_running_agents_both_become_ready(ref, tmp_path):
    """The agent that loses the lock retries after its back-off (it waits), and both end ready on
    one converged node: no lost update, no second restart."""
    import urllib.request

    import psutil

    root = tmp_path / "root"
    harness.copy_root(ref.template, root)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    procs = [subprocess.Popen(_agent_argv(root, "--interval", "300"), env=harness.cli_env(tmp),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(2)]
    try:
        ready = set()
        deadline = time.monotonic() + 90  # first back-off is 5 s
        while len(ready) < 2 and time.monotonic() < deadline:
            for p in procs:
                assert p.poll() is None, f"agent {p.pid} exited {p.returncode}"
                for conn in psutil.Process(p.pid).net_connections("tcp"):
                    if conn.status == psutil.CONN_LISTEN:
                        try:
                            with urllib.request.urlopen(f"http://127.0.0.1:{conn.laddr.port}/readyz", timeout=2) as r:
                                if r.status == 200:
                                    ready.add(p.pid)
                        except OSError:
                            pass
            time.sleep(0.5)
        assert len(ready) == 2, "both agents must converge (the loser after its back-off)"
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
    assert (root / harness.CONFIG).read_bytes() == ref.converged_config
    state = json.loads((root / "var/lib/nodeagent/state.json").read_text())
    assert "kata" in json.dumps(state)
    assert harness.release_trees(root) == ref.releases and harness._leftovers(root) == []


# --- out of file descriptors (security review M2) ------------------------------------------------

STARVED = Path(__file__).resolve().parents[1] / "support/fd_starved.py"
CAPTURED_HOST = Path(__file__).resolve().parents[1] / "fixtures/hosts/containerd-v2"


@pytest.mark.bad_input
@pytest.mark.parametrize("command", [["install", "--runtime", "all"], ["install", "--runtime", "gvisor"]])
def test_out_of_file_descriptors_is_a_clear_error_not_a_misdetected_host(tmp_path, command):
    """With one descriptor left, the run lock takes it and the detection under the lock cannot
    open /proc/cpuinfo or /proc/sys/kernel/arch. Today that reads as "architecture unknown": gVisor
    is skipped as ineligible and install says "nothing to install" with exit 0 (an agent would
    then be ready and label the node without it). It must be an error that names the read error."""
    from tests.support.mirror import default_mirror
    from tests.support.tree import diff_snapshots, snapshot

    root = tmp_path / "root"
    shutil.copytree(CAPTURED_HOST, root, symlinks=True)
    for leftover in (root / "usr/local/bin").iterdir():  # the capture's own runsc: not ours to replace
        leftover.unlink()
    before = snapshot(root)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NODEAGENT_")}
    env.update(NODEAGENT_MIRROR=str(default_mirror()), NODEAGENT_LOG_FORMAT="json")
    proc = subprocess.run([sys.executable, str(STARVED), "1", "--root", str(root), *command, "--restart", "none"],
                          capture_output=True, text=True, timeout=120, env=env)
    message = assert_known_error(proc, 2)
    assert "cannot read the host reliably" in message and "Too many open files" in message, message
    assert "architecture unknown" not in proc.stdout + proc.stderr
    assert set(diff_snapshots(before, snapshot(root))) <= LOCK_TRACE
    # with descriptors to spare the very same install converges
    ok = subprocess.run([sys.executable, str(STARVED), "64", "--root", str(root), *command, "--restart", "none"],
                        capture_output=True, text=True, timeout=120, env=env)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert os.readlink(root / "usr/local/bin/runsc").startswith("/opt/nodeagent/gvisor/")
