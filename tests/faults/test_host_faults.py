"""A full disk, a read-only root and two nodeagents at once: a clear error or a wait, never damage.

The races are staged, not hoped for: the first run is frozen while it holds the run lock
(tests/support/locks.py), the second runs against the held lock, then the first finishes.

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
from pathlib import Path

import pytest

from tests.faults import harness
from tests.support import cli
from tests.support.cli import assert_known_error, run_cli
from tests.support.locks import flock_holders, paused_while_holding
from tests.support.scenarios import have_containerd
from tests.support.wait import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.root]
CONFINED = Path(__file__).with_name("confined.py")
# the run lock is taken before the disk/permissions trouble shows; it lives in /run (a tmpfs on a
# real node) and is the one trace a failed run may leave
# the run lock: created (its directory too, or that directory's mtime moves), or reused
LOCK_TRACE = {"added run", "added run/nodeagent.lock", "changed run/nodeagent.lock", "changed run (mtime)"}
LOCK = "run/nodeagent.lock"
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


def _popen(argv: list[str], tmp: Path, **kw) -> subprocess.Popen:
    return subprocess.Popen(argv, env=harness.cli_env(tmp), text=True, **kw)


def _race(root: Path, tmp: Path, first: list[str], second: list[str]) -> tuple[subprocess.CompletedProcess, ...]:
    """Run `second` while `first` holds the run lock (a barrier, not luck: see tests/support/locks.py).

    Returns (first, second) completed: `second` ran to its end against the held lock, then
    `first` was resumed and finished."""
    a = _popen(first, tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        with paused_while_holding(a, root / LOCK):
            b = subprocess.run(second, env=harness.cli_env(tmp), capture_output=True, text=True, timeout=120)
            assert a.pid in flock_holders(root / LOCK)  # still held: the two really overlapped
            assert f"(pid {a.pid})" in b.stderr, b.stderr[-2000:]  # and the loser named the holder
        out, err = a.communicate(timeout=120)
    finally:
        if a.poll() is None:
            a.kill()
            a.wait()
    return subprocess.CompletedProcess(a.args, a.returncode, out, err), b


def _lost_the_lock(loser: subprocess.CompletedProcess, holder: subprocess.CompletedProcess) -> None:
    assert holder.returncode == 0, holder.stderr[-2000:]
    message = assert_known_error(loser, 3)
    assert "another nodeagent holds" in message


@pytest.mark.parametrize("round_", range(3))
def test_two_installs_at_once_the_second_exits_3_no_lost_update(ref, tmp_path, round_):
    root = tmp_path / "root"
    harness.copy_root(ref.template, root)
    argv = harness.argv(root, "install", "kata")
    first, second = _race(root, tmp_path, argv, argv)
    _lost_the_lock(second, first)
    assert (root / harness.CONFIG).read_bytes() == ref.converged_config
    state = json.loads((root / "var/lib/nodeagent/state.json").read_text())
    assert "kata" in json.dumps(state), state
    assert harness.release_trees(root) == ref.releases and harness._leftovers(root) == []
    again = run_cli("--root", str(root), "-o", "json", *INSTALL)
    assert again.returncode == 0 and json.loads(again.stdout)["changed"] is False, again.stdout


@pytest.mark.parametrize("holder", ["uninstall", "install"])
def test_install_and_uninstall_at_once_the_holder_wins_whole(ref, tmp_path, holder):
    """The run holding the lock finishes; the other exits 3 having changed nothing, so the node
    is wholly what the holder made it."""
    root = tmp_path / "root"
    harness.copy_root(ref.installed if holder == "uninstall" else ref.template, root)
    other = "install" if holder == "uninstall" else "uninstall"
    first, second = _race(root, tmp_path, harness.argv(root, holder, "kata"), harness.argv(root, other, "kata"))
    _lost_the_lock(second, first)
    state, problems = harness.check_node(root, ref, "install", after_rerun=True)
    assert not problems, problems
    if holder == "install":
        assert state == "converged" and harness.release_trees(root) == ref.releases
    else:
        assert state == "original" and harness.release_trees(root) == {}


def _agent_argv(root: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "nodeagent", "--root", str(root), "agent", "--runtime", "kata",
            "--skip-eligibility", "--restart", "none", "--listen", "127.0.0.1:0", *extra]


def test_two_agents_once_at_once_the_second_exits_3(ref, tmp_path):
    """`agent --once` that finds the lock held exits 3 (it used to say 2); the holder converges."""
    root = tmp_path / "root"
    harness.copy_root(ref.template, root)
    first, second = _race(root, tmp_path, _agent_argv(root, "--once"), _agent_argv(root, "--once"))
    _lost_the_lock(second, first)
    assert (root / harness.CONFIG).read_bytes() == ref.converged_config
    assert harness.release_trees(root) == ref.releases and harness._leftovers(root) == []


def _readyz(proc: subprocess.Popen) -> int:
    """HTTP status of the agent's /readyz (0 while it does not listen yet)."""
    import urllib.error
    import urllib.request

    import psutil

    for conn in psutil.Process(proc.pid).net_connections("tcp"):
        if conn.status == psutil.CONN_LISTEN:
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            try:
                with opener.open(f"http://127.0.0.1:{conn.laddr.port}/readyz", timeout=5) as r:
                    return r.status
            except urllib.error.HTTPError as e:
                return e.code
            except OSError:
                return 0
    return 0


def test_two_long_running_agents_the_second_waits_then_both_are_ready(ref, tmp_path):
    """The agent that finds the lock held is not ready and says why, retries after its back-off
    (it waits), and both end ready on one converged node: no lost update, no second restart."""
    root = tmp_path / "root"
    harness.copy_root(ref.template, root)
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs: list[subprocess.Popen] = []
    try:
        procs.append(_popen(_agent_argv(root, "--interval", "300"), tmp_path, stdout=subprocess.DEVNULL,
                            stderr=logs[0].open("w")))
        with paused_while_holding(procs[0], root / LOCK):
            procs.append(_popen(_agent_argv(root, "--interval", "300"), tmp_path, stdout=subprocess.DEVNULL,
                                stderr=logs[1].open("w")))
            wait_for(lambda: "another nodeagent holds" in logs[1].read_text(), 60,
                     "the second agent to find the lock held", interval=0.1, detail=logs[1].read_text)
            assert procs[1].poll() is None, "the agent that lost the lock must keep running and retry"
            assert _readyz(procs[1]) == 503
        # first back-off is 5 s
        wait_for(lambda: all(p.poll() is None and _readyz(p) == 200 for p in procs), 90, "both agents ready",
                 interval=0.5, detail=lambda: "\n".join(log.read_text()[-1500:] for log in logs))
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
