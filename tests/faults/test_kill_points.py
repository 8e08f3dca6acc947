"""SIGKILL nodeagent at seeded random points of install and uninstall; nothing may be corrupt.

CI runs the reduced set below (100 kill points, Kata's small release, ~1.5 min); `scripts/faults`
runs the full set (more points, both runtimes incl. gVisor's real runsc, plus real restarts on the
systemd node). See tests/faults/harness.py for what is checked after each kill: the config, runsc.toml,
state.json and its backups agree with the config in effect; after the recovery, uninstall gives
back the original bytes; the whole process group is killed (children such as `config dump` too).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.faults import harness
from tests.support.cli import run_cli
from tests.support.scenarios import have_containerd

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

POINTS = int(os.environ.get("NODEAGENT_FAULTS_POINTS", "100"))
SEED = int(os.environ.get("NODEAGENT_FAULTS_SEED", "20261127"))
RUNTIME = os.environ.get("NODEAGENT_FAULTS_RUNTIME", "kata")


@pytest.fixture
def base():
    path = Path(tempfile.mkdtemp(prefix="na-faults-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_sigkill_at_random_points_leaves_old_or_new_state(base):
    if not have_containerd("1.6"):
        pytest.skip("containerd 1.6 is not installed (run scripts/setup-test-env)")
    ref, tally = harness.run_campaign(base, RUNTIME, POINTS, SEED)
    timed = ", ".join(f"{op} {d:.2f}s" for op, d in ref.durations.items())
    harness.REPORTS.append(f"runtime={RUNTIME} seed={SEED}: {tally.summary()} (runs under the kills' load: {timed})")
    assert tally.tried == POINTS
    # a point whose run finished before the kill proves little: most must be real kills
    assert tally.killed >= 0.8 * POINTS, tally.summary()
    # both outcomes must occur, or the points missed the write window
    assert tally.left_original and tally.left_converged, tally.summary()
    assert not tally.corruptions, "\n".join(tally.corruptions[:40])


def test_rerun_sweeps_temp_files_a_killed_run_left(base):
    """Regression: a SIGKILL inside atomic_write (cache index) or while a release dir was being
    deleted left `.nodeagent-tmp-*` behind for good; the next run now removes them under the lock."""
    if not have_containerd("1.6"):
        pytest.skip("containerd 1.6 is not installed (run scripts/setup-test-env)")
    ref = harness.Reference.build(base / "ref", "kata", warm_up=False)
    root = base / "root"
    harness.copy_root(ref.installed, root)
    stale = [root / "var/lib/nodeagent/cache/.nodeagent-tmp-abc", root / "etc/containerd/.nodeagent-tmp-def",
             root / "usr/local/bin/.nodeagent-tmp-containerd-shim-kata-v2.4242"]
    for p in stale:
        p.write_bytes(b"half a file")
    doomed = root / "opt/nodeagent/kata/.nodeagent-tmp-rm-3.0.0"
    (doomed / "bin").mkdir(parents=True)
    (doomed / "bin/containerd-shim-kata-v2").write_bytes(b"half a shim")
    proc = run_cli("--root", str(root), "install", "--runtime", "kata", "--skip-eligibility", "--restart", "none")
    assert proc.returncode == 0, proc.stderr
    assert not [p for p in stale if os.path.lexists(p)] and not doomed.exists()
    assert (root / harness.CONFIG).read_bytes() == ref.converged_config
    (root / "opt/nodeagent/kata/.nodeagent-tmp-rm-3.11.0").mkdir()
    proc = run_cli("--root", str(root), "uninstall", "--runtime", "kata", "--restart", "none")
    assert proc.returncode == 0, proc.stderr
    assert harness._leftovers(root) == [] and not (root / "opt/nodeagent/kata").exists()
    assert (root / harness.CONFIG).read_bytes() == ref.original_config


def test_the_checks_see_bookkeeping_that_disagrees_with_the_config(base):
    """The after-kill checks can fail: a lost or altered backup, a converged config nobody owns in
    state.json, and an uninstall that does not give the original bytes back are all reported."""
    if not have_containerd("1.6"):
        pytest.skip("containerd 1.6 is not installed (run scripts/setup-test-env)")
    ref = harness.Reference.build(base / "ref", "kata", warm_up=False)
    assert harness.check_node(ref.installed, ref, "install", after_rerun=True) == ("converged", [])

    def problems_after(damage) -> list[str]:
        root = base / "damaged"
        shutil.rmtree(root, ignore_errors=True)
        harness.copy_root(ref.installed, root)
        damage(root)
        return harness.check_node(root, ref, "install", after_rerun=True)[1]

    backups = lambda root: sorted((root / "var/lib/nodeagent/backups").iterdir())  # noqa: E731
    assert any("which is missing" in p for p in problems_after(lambda r: backups(r)[0].unlink()))
    assert any("does not hold" in p for p in problems_after(lambda r: backups(r)[0].write_bytes(b"[x]\n")))
    assert any("does not own it" in p for p in problems_after(lambda r: (r / harness.STATE).unlink()))

    root = base / "left"
    harness.copy_root(ref.installed, root)
    (root / "etc/containerd/stray.toml").write_text("# left behind\n")
    harness.converge(root, "uninstall", "kata")
    assert harness.content(root) != ref.uninstalled


def _renames(trace: Path) -> list[str]:
    """Destination of each rename(2) in an strace log, in order."""
    import re

    return [m.group(1) for m in re.finditer(r'rename(?:at2?)?\(.*?"[^"]*", (?:\w+, )?"([^"]*)"', trace.read_text())]


def test_kill_right_before_runsc_toml_lands_leaves_no_config_naming_it(base):
    """A SIGKILL between the two writes of a gVisor install must not leave a config that names a
    runsc.toml which is not there (runsc's shim reads it for every sandbox). Random kill points
    hardly hit that gap, so strace kills the run exactly at the rename(2) that puts runsc.toml in
    place (found by a traced run first; `inject=...:when=N`)."""
    import subprocess

    if not have_containerd("1.6"):
        pytest.skip("containerd 1.6 is not installed (run scripts/setup-test-env)")
    if not shutil.which("strace"):
        pytest.skip("strace is not installed (scripts/setup-test-env installs it)")
    ref = harness.Reference.build(base / "ref", "gvisor", warm_up=False)
    assert "etc/containerd/runsc.toml" in ref.converged_files
    renames = ["rename", "renameat", "renameat2"]
    runs = {}
    for name, inject in (("traced", []), ("killed", None)):
        root, tmp = base / name / "root", base / name / "tmp"
        harness.copy_root(ref.template, root)
        tmp.mkdir()
        if inject is None:
            order = _renames(base / "traced/trace")
            nth = order.index(str(base / "traced/root/etc/containerd/runsc.toml")) + 1
            inject = ["-e", f"inject={','.join(renames)}:signal=KILL:when={nth}"]
        runs[name] = subprocess.run(
            ["strace", "-f", "-qqq", "-o", str(base / name / "trace"), "-e", f"trace={','.join(renames)}", *inject,
             *harness.argv(root, "install", "gvisor")], env=harness.cli_env(tmp), capture_output=True, timeout=300)
    assert runs["traced"].returncode == 0, runs["traced"].stderr[-2000:]
    assert runs["killed"].returncode == -9  # strace ends itself with the signal that killed the tracee
    root = base / "killed/root"
    assert not (root / "etc/containerd/runsc.toml").exists()  # killed before it landed
    state, problems = harness.check_node(root, ref, "install", after_rerun=False)
    assert problems == [], (state, problems)
