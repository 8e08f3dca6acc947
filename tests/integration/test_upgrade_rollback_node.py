"""A failed upgrade puts the node back on the old version: binaries, config, runsc.toml, state.

On the systemd node (tests/support/systemd_node.py, Debian's containerd.service under a real
systemd), gVisor A is installed from a directory mirror; then B is attempted together with
Kata and another gVisor platform, so the attempt changes everything an install can: the
gVisor links (to B), new Kata links, config.toml, runsc.toml and state. containerd then does not
come back: STAND-IN for "B does not work on this node" is a unit drop-in whose ExecStartPre
refuses to start while gVisor's shim link points into B's directory (a real systemd start
failure, keyed on B's binaries being linked). The installer must roll ALL of it back.

Before the undo journal covered artifacts, the links stayed on B (A's config ran with B's
binaries) and, here, containerd could not even be started again after the rollback.
Artifacts: Debian's REAL runsc (B is the same binary with bytes appended, so its digest
differs) and STAND-IN shims, as in test_install_node.py.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from nodeagent.containerd.cri import cri_status
from nodeagent.settings import Settings
from tests.support import mirror_builder as builders
from tests.support.tree import diff_snapshots, snapshot

pytestmark = [pytest.mark.integration, pytest.mark.root]

MIRROR = "/srv/nodeagent-upgrade-mirror"
CONFIG = "/etc/containerd/config.toml"
A, B = "20240101.0", "20240202.0"
BASE = ["--skip-eligibility", "--restart", "systemd", "--mirror", MIRROR]
WATCHED = ("/etc/containerd", "/opt/nodeagent", "/var/lib/nodeagent")
LINKS = ("/usr/local/bin/runsc", "/usr/local/bin/containerd-shim-runsc-v1", "/usr/local/bin/containerd-shim-kata-v2",
         "/opt/kata")
DROPIN = "/etc/systemd/system/containerd.service.d/refuse-b-nodeagent-test.conf"


def nodeagent(node, *args, timeout=180, env=None):
    return node.run([sys.executable, "-m", "nodeagent", "-o", "json", *args], check=False, timeout=timeout,
                    env={"NODEAGENT_LOG_FORMAT": "json", "NODEAGENT_HEALTH_TIMEOUT": "15", **(env or {})})


def build_mirror(base: Path) -> Path:
    builders.gvisor_tarball_release(base, A)
    b_runsc = base / "runsc-b"
    b_runsc.write_bytes(builders.REAL_RUNSC.read_bytes() + b"\0release B\0")  # still runs; another digest
    builders.gvisor_tarball_release(base, B, builders.gvisor_members(runsc=b_runsc))
    b_runsc.unlink()
    builders.kata_release(base, Settings().kata_version, builders.kata_members(shim=builders.STANDIN_SHIM))
    return base


def watched(node) -> dict[str, object]:
    """Bytes, modes and link targets of everything an install touches (not inodes or times)."""
    trees = {d: snapshot(node.path(d), metadata=False) for d in WATCHED if node.path(d).exists()}
    links = {p: os.readlink(node.path(p)) if node.path(p).is_symlink() else node.path(p).exists() for p in LINKS}
    return {"trees": trees, "links": links}


@pytest.fixture
def node(clean_node, tmp_path):
    mirror = clean_node.path(MIRROR)
    shutil.rmtree(mirror, ignore_errors=True)
    shutil.copytree(build_mirror(tmp_path / "mirror"), mirror)
    original = clean_node.path(CONFIG).read_bytes()
    yield clean_node
    dropin = clean_node.path(DROPIN)
    if dropin.exists():
        dropin.unlink()
        clean_node.systemctl("daemon-reload")
    clean_node.systemctl("reset-failed", "containerd", check=False)
    clean_node.systemctl("restart", "containerd", check=False)
    clean_node.wait_active()
    nodeagent(clean_node, "uninstall", "--restart", "systemd", "--force")
    if clean_node.path(CONFIG).read_bytes() != original:
        clean_node.path(CONFIG).write_bytes(original)
        clean_node.systemctl("restart", "containerd")
        clean_node.wait_active()
    shutil.rmtree(mirror, ignore_errors=True)


def test_failed_upgrade_rolls_back_links_config_runsc_toml_and_state(node):
    done = nodeagent(node, "install", "--runtime", "gvisor", "--gvisor-version", A, *BASE)
    assert done.returncode == 0, done.stderr
    shim = node.path("/usr/local/bin/containerd-shim-runsc-v1")
    assert os.readlink(shim) == f"/opt/nodeagent/gvisor/{A}/containerd-shim-runsc-v1"
    platform = node.path("/etc/containerd/runsc.toml").read_text()
    other = "ptrace" if 'platform = "ptrace"' not in platform else "systrap"
    upgrade = ["install", "--runtime", "all", "--gvisor-version", B, *BASE]
    env = {"NODEAGENT_GVISOR_PLATFORM": other}  # a setting without a flag

    # the attempt changes every kind of thing an install writes (plan writes nothing)
    proc = nodeagent(node, "plan", *upgrade[1:], env=env)
    assert proc.returncode == 0, proc.stderr
    planned = json.loads(proc.stdout)
    assert {f["path"] for f in planned["files"]} >= {CONFIG, "/etc/containerd/runsc.toml"}
    actions = {a["runtime"]: a["action"] for a in planned["artifacts"]}
    # Kata's stand-in may sit in the node's download cache from another test (uninstall keeps it)
    assert actions["gvisor"] == "download" and actions["kata"] in ("download", "cached"), actions
    assert planned["restart"]

    before = watched(node)
    pid_before = node.main_pid()
    dropin = node.path(DROPIN)
    dropin.parent.mkdir(parents=True, exist_ok=True)
    dropin.write_text(f"[Service]\nExecStartPre=/bin/sh -c '! readlink /usr/local/bin/containerd-shim-runsc-v1 | grep -q {B}'\n")
    node.systemctl("daemon-reload")

    failed = nodeagent(node, *upgrade, env=env)
    assert failed.returncode == 2, failed.stderr
    after = watched(node)
    assert after["links"] == before["links"]
    assert set(after["trees"]) == set(before["trees"])
    assert {d: diff_snapshots(before["trees"][d], after["trees"][d]) for d in before["trees"]} == \
        {d: [] for d in before["trees"]}
    assert "rolled back" in failed.stderr and "healthy on the previous configuration" in failed.stderr, failed.stderr
    assert "Traceback" not in failed.stderr
    assert os.readlink(shim) == f"/opt/nodeagent/gvisor/{A}/containerd-shim-runsc-v1"
    assert not node.path("/opt/kata").exists()
    # containerd runs again, on A, with the handlers it had
    node.wait_active()
    assert node.main_pid() not in (0, pid_before)  # restarted: to B (refused) and back to A
    status = cri_status(node.containerd_socket, timeout=5)
    assert status.ok and "runsc" in status.handlers and "kata" not in status.handlers
