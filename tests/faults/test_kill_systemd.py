"""SIGKILL `nodeagent install --restart systemd` on the systemd node: real restarts, real CRI.

The node (tests/support/systemd_node.py) runs Debian's containerd.service under this machine's own
systemd in namespaces. A kill can land before the config switch, between the switch and the
restart (containerd still serves the old handlers), or while systemd restarts containerd. The
whole process group dies (nsenter, nodeagent, its `config dump` or systemctl). After each:
containerd is active and parses its config, the config is the old or the new one, state.json and
its backups agree with it, no partial release; the re-run converges, restarting containerd if it does not yet serve the
handlers its config names; a second re-run restarts nothing (MainPID unchanged); uninstall gives
back the original bytes of every file under /etc/containerd. CI runs a few
points; `scripts/faults` runs more (NODEAGENT_FAULTS_NODE_POINTS).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time

import pytest

from nodeagent.containerd.cri import cri_status
from tests.faults import harness
from tests.support.mirror import default_mirror
from tests.support.systemd_node import REPO

pytestmark = [pytest.mark.integration, pytest.mark.root, pytest.mark.timeout(900)]

POINTS = int(os.environ.get("NODEAGENT_FAULTS_NODE_POINTS", "2"))
SEED = int(os.environ.get("NODEAGENT_FAULTS_SEED", "20261127"))
MIRROR = "/srv/nodeagent-mirror"
INSTALL = ["install", "--runtime", "kata", "--skip-eligibility", "--restart", "systemd"]
ENV = {"NODEAGENT_LOG_FORMAT": "json", "NODEAGENT_MIRROR": MIRROR, "NODEAGENT_HEALTH_TIMEOUT": "20"}


def nodeagent(node, *args):
    node.systemctl("reset-failed", "containerd.service", check=False)  # start limit: 5 starts per 10 s
    return node.run([sys.executable, "-m", "nodeagent", "-o", "json", *args], check=False, env=ENV, timeout=120)


def killed_run(node, delay: float) -> bool:
    """Start install in the node, SIGKILL its whole process group after `delay` s (nodeagent and
    what it runs: `config dump`, systemctl); True if it was still running then."""
    node.systemctl("reset-failed", "containerd.service", check=False)
    # this checkout's nodeagent, as SystemdNode.run gives it (not whichever one pip installed)
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(REPO), **ENV}
    launcher = subprocess.Popen(node.nsenter_argv([sys.executable, "-m", "nodeagent", *INSTALL]), env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        launcher.wait(delay)
        return False
    except subprocess.TimeoutExpired:
        pass
    harness.kill_group(launcher.pid)  # nsenter, the nodeagent it forked, and their children
    launcher.wait(60)
    return True


def test_sigkill_during_install_with_real_restarts(clean_node):
    node = clean_node
    if not node.path(MIRROR).exists():
        shutil.copytree(default_mirror(), node.path(MIRROR))
    original = node.path(harness.CONFIG).read_bytes()
    original_files = harness.containerd_files(node.root)
    try:
        assert nodeagent(node, *INSTALL).returncode == 0
        ref = harness.Reference("kata", node.root, node.root, original, node.path(harness.CONFIG).read_bytes(),
                                harness.release_trees(node.root), original_files=original_files,
                                converged_files=harness.containerd_files(node.root))
        assert nodeagent(node, "uninstall", "--restart", "systemd").returncode == 0
        # Time an install like the killed ones: after an uninstall, with the download cached and
        # the unpacked release kept (the first install also downloads and unpacks: far longer).
        start = time.perf_counter()
        assert nodeagent(node, *INSTALL).returncode == 0
        duration = time.perf_counter() - start
        assert nodeagent(node, "uninstall", "--restart", "systemd").returncode == 0
        rng = random.Random(SEED)
        tally = harness.Tally()
        for _ in range(POINTS):
            delay = rng.uniform(0.3 * duration, duration)  # the first third is interpreter start-up
            killed = killed_run(node, delay)
            node.wait_active()
            state, problems = harness.check_node(node.root, ref, "install", after_rerun=False)
            rerun = nodeagent(node, *INSTALL)
            if rerun.returncode != 0:
                problems.append(f"re-run exited {rerun.returncode}: {rerun.stderr[-300:]}")
            status = cri_status(node.containerd_socket, timeout=5)
            if not (status.ok and "kata" in status.handlers):
                problems.append(f"after the re-run CRI does not serve kata: {status.as_dict()}")
            pid = node.main_pid()
            again = nodeagent(node, *INSTALL)
            if again.returncode != 0 or json.loads(again.stdout)["changed"] or node.main_pid() != pid:
                problems.append(f"second re-run changed something or restarted containerd: {again.stdout[-300:]}")
            tally.add(harness.KillResult("install", "start", delay, killed, state, problems))
            assert nodeagent(node, "uninstall", "--restart", "systemd").returncode == 0
            # the recovered node uninstalls back to the original bytes (config and every file beside it)
            assert harness.containerd_files(node.root) == original_files
        harness.REPORTS.append(f"systemd node, seed={SEED}: {tally.summary()}")
        assert tally.killed >= POINTS // 2, tally.summary()
        assert not tally.corruptions, "\n".join(tally.corruptions)
    finally:
        nodeagent(node, "uninstall", "--restart", "systemd", "--force")
        if node.path(harness.CONFIG).read_bytes() != original:
            node.path(harness.CONFIG).write_bytes(original)
            node.systemctl("restart", "containerd", check=False)
