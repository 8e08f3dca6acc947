"""The Ansible role applied for real to a systemd node, then verified with testinfra.

Route, and why: the node is this machine's systemd booted in namespaces with Debian's
containerd.service (tests/support/systemd_node.py). No SSH runs in it, so ansible-playbook runs
*inside* the node (nsenter into all its namespaces) with `connection: local`: the role's tasks
and modules execute in the node's mount/PID/net namespaces against its systemd, apt database,
containerd and filesystem, exactly as on a managed host. The node has no network, so nodeagent is
installed from this checkout plus a local wheelhouse, and artifacts come from a directory mirror.
testinfra checks the result through a small backend that runs its commands in the node the same
way (nsenter), so every `host.file()` / `host.service()` looks at the node, not at this machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import testinfra
from testinfra.backend import base as testinfra_base

from nodeagent.containerd import cri
from tests.support import node_venv
from tests.support.systemd_node import SystemdNode
from tests.support.tree import diff_snapshots, snapshot

pytestmark = [pytest.mark.integration, pytest.mark.root]

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "ansible"
ANSIBLE_PLAYBOOK = str(Path(sys.executable).parent / "ansible-playbook")
GVISOR_VERSION = node_venv.GVISOR_VERSION
VENV = node_venv.VENV
# What the role may touch on the node; check mode and a refused run must leave all of it alone.
WATCHED = ("/etc/nodeagent", "/etc/containerd", "/etc/systemd/system", "/opt/nodeagent", "/usr/local/bin",
           "/usr/local/lib/nodeagent", "/var/lib/nodeagent")


class NsenterBackend(testinfra_base.BaseBackend):
    """testinfra commands run inside the node (all its namespaces), like the chroot backend does."""

    NAME = "nsenter"

    def __init__(self, pid: int, **kwargs):
        self.pid = pid
        super().__init__(f"node-{pid}", **kwargs)

    def run(self, command: str, *args: str, **kwargs) -> testinfra_base.CommandResult:
        cmd = self.get_command(command, *args)
        out = self.run_local("nsenter -t %s -m -u -i -n -p -- /bin/sh -c %s", str(self.pid), cmd)
        out.command = self.encode(cmd)
        return out


def _make_mirror(node) -> str:
    node_venv.make_gvisor_mirror(node.path("/srv/mirror"))
    return "/srv/mirror"


def _play_vars(mirror: str, **overrides) -> dict:
    values = {
        "nodeagent_runtime": "gvisor",
        "nodeagent_mirror": mirror,
        "nodeagent_gvisor_version": GVISOR_VERSION,
        "nodeagent_restart": "systemd",
        "nodeagent_settings": {"listen": "127.0.0.1:9101", "interval": 3600},
        "nodeagent_service": True,
    }
    values.update(overrides)
    return values


class Play:
    """ansible-playbook run inside the node against `localhost` with connection local."""

    def __init__(self, node, play_vars: dict):
        self.node = node
        self.dir = node.path("/srv/play")
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "inventory.ini").write_text(
            "[sandbox_nodes]\nlocalhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3\n")
        (self.dir / "site.yml").write_text(
            "- name: Converge\n  hosts: sandbox_nodes\n  gather_facts: false\n  roles:\n    - role: nodeagent\n")
        self.vars = play_vars
        self.seconds: list[float] = []  # how long each run took (reported by the timing test)

    def run(self, *extra: str, **overrides) -> subprocess.CompletedProcess:
        started = time.monotonic()
        try:
            return self._run(*extra, **overrides)
        finally:
            self.seconds.append(round(time.monotonic() - started, 1))

    def _run(self, *extra: str, **overrides) -> subprocess.CompletedProcess:
        (self.dir / "vars.json").write_text(json.dumps({**self.vars, **overrides}))
        argv = [ANSIBLE_PLAYBOOK, "-i", "/srv/play/inventory.ini", "/srv/play/site.yml", "-e", "@/srv/play/vars.json",
                *extra]
        env = {"HOME": "/root", "ANSIBLE_ROLES_PATH": str(ANSIBLE_DIR / "roles"), "ANSIBLE_NOCOLOR": "1",
               "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_LOCAL_TEMP": "/tmp/ansible-local",
               "ANSIBLE_REMOTE_TEMP": "/tmp/ansible-remote", "PYTHONUNBUFFERED": "1", "ANSIBLE_PIPELINING": "1",
               "PIP_CONFIG_FILE": "/dev/null"}
        # only what the role installed: with this checkout on PYTHONPATH, the role's pip would take
        # the checkout's nodeagent.egg-info for an installed nodeagent and skip it (no console script)
        return self.node.run(argv, check=False, timeout=600, env=env, import_checkout=False)


def recap(proc: subprocess.CompletedProcess) -> dict[str, int]:
    match = re.search(r"localhost\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", proc.stdout)
    assert match, proc.stdout[-3000:] + proc.stderr[-2000:]
    return dict(zip(("ok", "changed", "unreachable", "failed"), map(int, match.groups())))


def watched(node) -> dict:
    out = {}
    for path in WATCHED:
        out.update({f"{path}/{k}": v for k, v in snapshot(node.path(path)).items()} if node.path(path).exists() else {})
    out["containerd MainPID"] = node.main_pid()
    return out


@pytest.fixture(scope="module")
def journey(tmp_path_factory):
    """Boot a node, then: the real run, a second run, check mode with a changed setting."""
    node = SystemdNode().boot()
    try:
        node.wait_active("containerd.service")
        wheels = node_venv.deps_wheelhouse()
        # nodeagent by name from a wheelhouse (this checkout's wheel + its dependencies), the way an
        # air-gapped fleet installs it; a name keeps pip idempotent (a directory always reinstalls)
        own = node_venv.build_wheel(tmp_path_factory.mktemp("nodeagent-wheel"))
        node.path("/srv/nodeagent-wheel").mkdir(parents=True)
        shutil.copy2(own, node.path(f"/srv/nodeagent-wheel/{own.name}"))  # the node's /tmp is its own
        extra = f"--no-index --find-links {wheels} --find-links /srv/nodeagent-wheel"
        play = Play(node, _play_vars(_make_mirror(node), nodeagent_package="nodeagent", nodeagent_pip_extra_args=extra))
        runs = {"first": play.run("--diff"), "second": play.run()}
        before = watched(node)
        # a setting that would change containerd's config: another handler name for gVisor
        runs["check"] = play.run("--check", "--diff", nodeagent_settings={**play.vars["nodeagent_settings"],
                                                                          "gvisor_handler": "gvisor-check"})
        runs["check_changes"] = diff_snapshots(before, watched(node))
        if os.environ.get("NODEAGENT_TEST_DEBUG_DIR"):  # full ansible output, for humans
            for name, proc in runs.items():
                if isinstance(proc, subprocess.CompletedProcess):
                    Path(os.environ["NODEAGENT_TEST_DEBUG_DIR"], f"ansible-{name}.log").write_text(proc.stdout + proc.stderr)
        yield node, play, runs
    finally:
        node.shutdown()


def _task_output(proc: subprocess.CompletedProcess, task: str) -> str:
    return proc.stdout.split(f"TASK [nodeagent : {task}")[1].split("TASK [")[0]


def test_first_run_converges_and_reports_changed(journey):
    node, _, runs = journey
    proc = runs["first"]
    assert recap(proc)["failed"] == 0, proc.stdout[-6000:]
    assert recap(proc)["changed"] > 0
    # the converge task's `changed` is nodeagent's own JSON `changed`; diff mode shows its diff
    converge = _task_output(proc, "Converge the node")
    assert "changed: [localhost]" in converge, converge
    assert "+++ " in converge and "runtimes.runsc]" in converge, converge


def test_second_run_changes_nothing(journey):
    _, _, runs = journey
    proc = runs["second"]
    assert recap(proc) == {**recap(proc), "changed": 0, "failed": 0}, proc.stdout[-6000:]


def test_check_mode_reports_the_change_with_its_diff_and_changes_nothing(journey):
    _, _, runs = journey
    proc = runs["check"]
    assert recap(proc)["failed"] == 0, proc.stdout[-6000:]
    converge = _task_output(proc, "Converge the node")
    assert "changed: [localhost]" in converge, converge  # nodeagent plan: would change
    assert "+[plugins." in converge and "runtimes.gvisor-check]" in converge, converge
    settings = _task_output(proc, "Write /etc/nodeagent/config.toml")
    assert '+gvisor_handler = "gvisor-check"' in settings, settings
    assert runs["check_changes"] == []


def test_testinfra_verifies_the_converged_node(journey):
    node, _, _ = journey
    host = testinfra.host.Host(NsenterBackend(node.pid))

    config = host.file("/etc/nodeagent/config.toml")
    assert config.is_file and config.user == "root" and config.mode == 0o600
    assert 'runtime = "gvisor"' in config.content_string and 'mirror = "/srv/mirror"' in config.content_string

    agent = host.file(f"{VENV}/bin/nodeagent")
    assert agent.is_file and agent.mode & 0o111
    assert host.run(f"{VENV}/bin/nodeagent version").rc == 0

    release = f"/opt/nodeagent/gvisor/{GVISOR_VERSION}"
    for name in ("runsc", "containerd-shim-runsc-v1"):
        binary = host.file(f"{release}/{name}")
        assert binary.is_file and binary.mode == 0o755 and binary.user == "root", name
        link = host.file(f"/usr/local/bin/{name}")
        assert link.is_symlink and link.linked_to == f"{release}/{name}", name
    assert host.file(f"{release}/runsc").sha256sum == hashlib.sha256(Path("/usr/bin/runsc").read_bytes()).hexdigest()

    containerd_config = host.file("/etc/containerd/config.toml")
    assert containerd_config.contains("io.containerd.runsc.v1")
    assert containerd_config.contains("restrict_oom_score_adj")  # the node's own settings survived
    assert host.file("/etc/containerd/runsc.toml").is_file
    assert host.service("containerd").is_running

    # containerd serves the handler (CRI status, through the node's socket)
    status = cri.cri_status(node.containerd_socket)
    assert status.ok and {"runc", "runsc"} <= set(status.handlers), status.as_dict()
    # and the installed runsc really sandboxes: gVisor's kernel, not the host's
    assert host.check_output("/usr/local/bin/runsc --network=none do uname -r") == "4.4.0"


def test_agent_service_is_installed_enabled_and_running(journey):
    node, _, _ = journey
    host = testinfra.host.Host(NsenterBackend(node.pid))
    unit = host.file("/etc/systemd/system/nodeagent.service")
    assert unit.mode == 0o644 and unit.content_string == (REPO / "systemd/nodeagent.service").read_text()
    service = host.service("nodeagent")
    assert service.is_enabled and service.is_running
    assert host.check_output("curl -fsS http://127.0.0.1:9101/readyz").startswith("ready")


def test_refused_settings_fail_with_nodeagents_error_and_hint_and_change_nothing(journey):
    node, play, _ = journey
    before = watched(node)
    # Kata needs host-side vsock, which this VM lacks: naming it explicitly is refused (exit 2).
    proc = play.run(nodeagent_runtime="kata")
    assert recap(proc)["failed"] == 1, proc.stdout[-4000:]
    failure = proc.stdout.split("fatal: [localhost]")[1]
    assert "nodeagent plan failed (exit 2): kata cannot run on this host" in failure, failure[:2000]
    assert "hint: " in failure and "--skip-eligibility" in failure
    assert "Traceback" not in proc.stdout
    assert diff_snapshots(before, watched(node)) == []


def test_runs_are_timed(journey):
    _, play, _ = journey
    print("ansible-playbook seconds per run:", play.seconds)
    assert len(play.seconds) >= 4
