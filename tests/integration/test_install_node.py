"""`nodeagent install` / `verify` / `uninstall` end to end on a real node (issue 5).

The node is this machine's systemd booted in namespaces with Debian's containerd.service
(tests/support/systemd_node.py). Artifacts come from a directory mirror holding Debian's REAL
runsc and STAND-IN shims (tests/support/mirror.py): no containerd-shim-runsc-v1 can be had
here, and Kata cannot run on this VM (no host-side vsock), so `kata` is installed with
--skip-eligibility and its "shim" is a copy of the runc shim — what the `kata` pod proves is
the plumbing (registration, CRI, shim lookup, restart), not a VM. gVisor's sandbox is real:
`verify` runs the installed runsc.
"""

from __future__ import annotations

import json
import shutil
import sys
import time

import pytest

from nodeagent.containerd.cri import CriClient, cri_status
from tests.support.mirror import default_mirror
from tests.support.oci_image import TEST_IMAGE

pytestmark = [pytest.mark.integration, pytest.mark.root]

MIRROR = "/srv/nodeagent-mirror"
CONFIG = "/etc/containerd/config.toml"
INSTALL = ["install", "--runtime", "all", "--skip-eligibility", "--restart", "systemd", "--mirror", MIRROR]


def nodeagent(node, *args, check=True, timeout=120):
    """Run the nodeagent CLI inside the node (its root is an overlay of this machine's /)."""
    proc = node.run([sys.executable, "-m", "nodeagent", "-o", "json", *args], check=False, timeout=timeout,
                    env={"NODEAGENT_LOG_FORMAT": "json", "NODEAGENT_HEALTH_TIMEOUT": "20"})
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture
def node(clean_node):
    """The shared node with the mirror in place and containerd's original config restored after."""
    mirror = clean_node.path(MIRROR)
    if not mirror.exists():
        shutil.copytree(default_mirror(), mirror)
    if not clean_node.path("/etc/nodeagent-test-images").exists():
        clean_node.import_test_images()
        clean_node.path("/etc/nodeagent-test-images").write_text("imported\n")
    original = clean_node.path(CONFIG).read_bytes()
    yield clean_node
    # leave the node as we found it, whatever the test did
    clean_node.systemctl("reset-failed", "containerd", check=False)
    clean_node.systemctl("start", "containerd", check=False)
    clean_node.wait_active()
    with CriClient(clean_node.containerd_socket) as cri:
        for pod in cri.list_pods():
            cri.destroy_pod(pod.id)
    nodeagent(clean_node, "uninstall", "--restart", "systemd", "--force", check=False)
    if clean_node.path(CONFIG).read_bytes() != original:
        clean_node.path(CONFIG).write_bytes(original)
        clean_node.systemctl("restart", "containerd")
    for unit_dropin in clean_node.path("/etc/systemd/system/containerd.service.d").glob("*nodeagent-test*"):
        unit_dropin.unlink()
        clean_node.systemctl("daemon-reload")
        clean_node.systemctl("restart", "containerd")
    clean_node.wait_active()


def served(node) -> set[str]:
    status = cri_status(node.containerd_socket, timeout=5)
    assert status.ok, status.reason
    return status.handlers


def test_install_verify_reinstall_uninstall(node):
    original = node.path(CONFIG).read_bytes()
    pid_before = node.main_pid()

    report = json.loads(nodeagent(node, *INSTALL).stdout)
    assert report["changed"] and report["restart"]
    assert {a["runtime"] for a in report["artifacts"]} == {"gvisor", "kata"}
    assert report["restarted"]["method"] == "systemctl" and report["restarted"]["unit"] == "containerd.service"
    pid_after = node.main_pid()
    assert pid_after != pid_before
    assert {"runsc", "kata"} <= served(node)
    assert node.path("/usr/local/bin/runsc").is_symlink()
    assert node.path("/opt/kata").is_symlink()

    # a kata pod through CRI reaches SANDBOX_READY (stand-in shim found on containerd's PATH)
    with CriClient(node.containerd_socket) as cri:
        pod = cri.run_pod("kata", "kata-plumbing")
        assert cri.pod_state(pod.id) == "SANDBOX_READY"
        cri.destroy_pod(pod)

    # gVisor's sandbox is real: its kernel is not the node's
    proc = nodeagent(node, "verify", "--runtime", "gvisor")
    result = json.loads(proc.stdout)["runtimes"]["gvisor"]
    assert result["ok"] and result["sandbox_kernel"] != result["host_kernel"]
    assert result["host_kernel"] == open("/proc/sys/kernel/osrelease").read().strip()

    # a second install restarts nothing
    again = json.loads(nodeagent(node, *INSTALL).stdout)
    assert again["changed"] is False and again["restart"] is False
    assert node.main_pid() == pid_after

    # uninstall restores the original bytes and containerd stays healthy
    undo = json.loads(nodeagent(node, "uninstall", "--restart", "systemd").stdout)
    assert undo["changed"] and undo["restart"]
    assert node.path(CONFIG).read_bytes() == original
    assert not ({"runsc", "kata"} & served(node))
    assert not node.path("/usr/local/bin/runsc").exists() and not node.path("/opt/kata").exists()
    assert not node.path("/var/lib/nodeagent/state.json").exists()


def _start_sleeper(cri, pod) -> str:
    """Create and start a long-running container (run_container would wait for it to exit)."""
    pb = cri.pb
    cfg = pb.ContainerConfig(metadata=pb.ContainerMetadata(name="sleeper"), image=pb.ImageSpec(image=TEST_IMAGE),
                             command=["sleep", "3600"], log_path="sleeper.log")
    cid = cri.runtime.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=pod.id, config=cfg,
                                                                sandbox_config=pod.config), timeout=30).container_id
    cri.runtime.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=30)
    return cid


def _container(cri, cid):
    return cri.runtime.ContainerStatus(cri.pb.ContainerStatusRequest(container_id=cid), timeout=10).status


def test_running_containers_survive_install(node):
    with CriClient(node.containerd_socket) as cri:
        pod = cri.run_pod("runc", "survivor")
        cid = _start_sleeper(cri, pod)
        before = _container(cri, cid)
        assert before.state == cri.pb.ContainerState.CONTAINER_RUNNING
    pid_before = node.main_pid()
    nodeagent(node, *INSTALL)
    assert node.main_pid() != pid_before  # containerd did restart...
    with CriClient(node.containerd_socket) as cri:  # ...and the pod and its container kept running
        assert cri.pod_state(pod.id) == "SANDBOX_READY"
        after = _container(cri, cid)
        assert after.state == cri.pb.ContainerState.CONTAINER_RUNNING
        assert after.started_at == before.started_at  # the same process, not a restarted one


def test_uninstall_refuses_while_a_kata_sandbox_runs(node):
    nodeagent(node, *INSTALL)
    config_installed = node.path(CONFIG).read_bytes()
    with CriClient(node.containerd_socket) as cri:
        pod = cri.run_pod("kata", "busy")
        proc = nodeagent(node, "uninstall", "--restart", "systemd", check=False)
        assert proc.returncode == 2 and "in use" in proc.stderr and "hint:" in proc.stderr
        assert node.path(CONFIG).read_bytes() == config_installed  # nothing was changed
        assert "kata" in served(node)
        cri.destroy_pod(pod)


def test_from_a_daemonset_pod_restart_reaches_the_nodes_systemd(node):
    """The agent in its own mount and PID namespaces, the node's root at $NODEAGENT_ROOT, no hostPID:
    the restart goes through systemd's private socket under the root."""
    original = node.path(CONFIG).read_bytes()
    pid_before = node.main_pid()
    args = [sys.executable, "-m", "nodeagent", "-o", "json", "install", "--runtime", "gvisor",
            "--restart", "auto", "--mirror", str(default_mirror())]
    proc = node.run_pod(args, env={"NODEAGENT_LOG_FORMAT": "json", "NODEAGENT_HEALTH_TIMEOUT": "20"})
    report = json.loads(proc.stdout)
    assert report["restarted"]["method"] == "dbus"
    assert node.main_pid() != pid_before
    assert "runsc" in served(node)
    undo = node.run_pod([sys.executable, "-m", "nodeagent", "-o", "json", "uninstall"],
                        env={"NODEAGENT_LOG_FORMAT": "json"})
    assert json.loads(undo.stdout)["restart"]
    assert node.path(CONFIG).read_bytes() == original


def _dropin(node, name: str, body: str) -> None:
    d = node.path("/etc/systemd/system/containerd.service.d")
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{name}-nodeagent-test.conf").write_text(body)
    node.systemctl("daemon-reload")


def test_containerd_not_coming_back_rolls_back(node):
    """Fault: containerd refuses to start on the new config (an ExecStartPre stands in for a
    version-specific rejection that `config dump` did not catch). Install must roll back."""
    original = node.path(CONFIG).read_bytes()
    _dropin(node, "refuse-runsc", "[Service]\nExecStartPre=/bin/sh -c '! grep -q runsc /etc/containerd/config.toml'\n")
    node.systemctl("restart", "containerd")  # the old config still starts fine
    node.wait_active()
    proc = node.run([sys.executable, "-m", "nodeagent", *INSTALL, "--runtime", "gvisor"], check=False,
                    env={"NODEAGENT_HEALTH_TIMEOUT": "5", "NODEAGENT_LOG_FORMAT": "json"}, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "rolled back" in proc.stderr and "healthy on the previous configuration" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert node.path(CONFIG).read_bytes() == original
    node.wait_active()
    assert served(node) >= {"runc"}


def test_handlers_not_served_roll_back(node):
    """Fault: the config nodeagent was told to edit is not the one containerd runs with (the
    operator's --containerd-config points at the wrong file). CRI never lists the handler;
    install rolls the file back and exits 2."""
    decoy = "/etc/containerd/other.toml"
    node.path(decoy).write_bytes(node.path(CONFIG).read_bytes())
    before = node.path(decoy).read_bytes()
    pid_before = node.main_pid()
    proc = node.run([sys.executable, "-m", "nodeagent", *INSTALL, "--runtime", "gvisor",
                     "--containerd-config", decoy], check=False,
                    env={"NODEAGENT_HEALTH_TIMEOUT": "3", "NODEAGENT_LOG_FORMAT": "json"}, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "rolled back" in proc.stderr and "runsc" in proc.stderr
    assert node.path(decoy).read_bytes() == before
    assert node.main_pid() not in (0, pid_before)  # restarted twice: to the new state and back
    assert "runsc" not in served(node)
    node.path(decoy).unlink()


def test_start_limit_hit_by_our_restart_is_handled(node):
    """containerd was restarted twice just before (a crash loop, an upgrade): with StartLimitBurst=2
    our restart is the third start in the window and systemd refuses it (start-limit-hit).
    The installer resets the unit's failed state and retries with back-off."""
    _dropin(node, "start-limit", "[Unit]\nStartLimitIntervalSec=60\nStartLimitBurst=2\n")
    node.systemctl("reset-failed", "containerd")
    node.systemctl("restart", "containerd")
    node.systemctl("restart", "containerd")
    node.wait_active()
    report = json.loads(nodeagent(node, *INSTALL, "--runtime", "gvisor").stdout)
    assert report["restarted"]["start_limit_resets"] >= 1
    assert "runsc" in served(node)


def test_restart_auto_refuses_under_a_running_control_plane_unless_allowed(node):
    """A kube-apiserver static pod runs (its sandbox labelled as the kubelet labels one: stand-in,
    no kubelet here): `--restart auto` refuses and changes nothing; the flag lets it restart, and
    the static pod's sandbox survives."""
    from tests.integration.test_restart_impact import APISERVER_MANIFEST, run_kubelet_like_pod
    from pathlib import Path

    manifests = node.path("/etc/kubernetes/manifests")
    manifests.mkdir(parents=True, exist_ok=True)
    (manifests / "kube-apiserver.yaml").write_text(APISERVER_MANIFEST)
    auto = ["install", "--runtime", "gvisor", "--restart", "auto", "--mirror", MIRROR]
    try:
        with CriClient(node.containerd_socket) as cri:
            static = run_kubelet_like_pod(cri, "kube-apiserver-node1", "runc", static=True,
                                          labels={"component": "kube-apiserver", "tier": "control-plane"},
                                          log_dir=Path("/tmp/nodeagent-test-static-pods"))
        config, pid = node.path(CONFIG).read_bytes(), node.main_pid()
        refused = nodeagent(node, *auto, check=False)
        assert refused.returncode == 2 and "control-plane" in refused.stderr, refused.stderr
        assert "hint:" in refused.stderr and "Traceback" not in refused.stderr
        assert node.path(CONFIG).read_bytes() == config and node.main_pid() == pid
        assert not node.path("/usr/local/bin/runsc").exists()

        report = json.loads(nodeagent(node, *auto, "--allow-control-plane-restart").stdout)
        assert report["restarted"]["unit"] == "containerd.service" and node.main_pid() != pid
        impact = report["restart_impact"]
        assert impact["blocks_auto_restart"] and impact["kubelet_restarts"] is False
        assert [p["name"] for p in impact["static_pods"]] == ["kube-apiserver-node1"]
        with CriClient(node.containerd_socket) as cri:
            assert cri.pod_state(static) == "SANDBOX_READY"
    finally:
        shutil.rmtree(node.path("/etc/kubernetes"), ignore_errors=True)


def test_kata_shims_on_the_node_are_served_labelled_and_uninstalled(node):
    """`--kata-shims qemu` on the systemd node with Debian's REAL containerd 1.6: CRI serves
    kata-qemu with its runtime_type, its shim link is on containerd's PATH (a stand-in shim: no Kata
    VM can run here), the node label follows, and uninstall restores the config's bytes."""
    original = node.path(CONFIG).read_bytes()
    nodeagent(node, "install", "--runtime", "kata", "--skip-eligibility", "--restart", "systemd",
              "--mirror", MIRROR, "--kata-shims", "qemu")
    status = cri_status(node.containerd_socket, timeout=5)
    assert status.ok and status.runtime_types()["kata-qemu"] == "io.containerd.kata-qemu.v2", status.as_dict()
    link = node.path("/usr/local/bin/containerd-shim-kata-qemu-v2")
    assert link.is_symlink() and str(link.readlink()) == "/opt/kata/bin/containerd-shim-kata-v2"
    labels = json.loads(nodeagent(node, "labels", "--kata-shims", "qemu").stdout)["labels"]
    assert labels["sandbox.nodeagent.io/kata-qemu"] == "true" and labels["sandbox.nodeagent.io/kata"] == "true"
    nodeagent(node, "uninstall", "--runtime", "kata", "--restart", "systemd")
    assert node.path(CONFIG).read_bytes() == original
    assert "kata-qemu" not in served(node) and not link.is_symlink()
