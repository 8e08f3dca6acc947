"""The restart impact report of `plan` / `install --dry-run` / `install` against a REAL containerd
with REAL sandboxes (issue 16 item 5), and `--restart auto` refusing under a running control plane.

No kubelet can be had here: the "static pod" sandboxes are created through CRI with the labels and
annotations the kubelet gives a static pod's sandbox (kuberuntime's newPodLabels copies the pod's
labels and adds io.kubernetes.pod.*; newPodAnnotations copies the pod's annotations, which for a
pod from staticPodPath include `kubernetes.io/config.source: file`). That part is a stand-in for
the kubelet; containerd, CRI and the sandboxes are real.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from nodeagent.containerd.cri import CriClient
from tests.support.cli import assert_known_error, run_cli
from tests.support.containerd_daemon import minimal_config
from tests.support.oci_image import import_test_images
from tests.support.tree import diff_snapshots, snapshot
from tests.support.scenarios import have_containerd, install_containerd

pytestmark = pytest.mark.integration

SOCKET = "/run/containerd/containerd.sock"
EXTRA_RUNC_HANDLER = "\n[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc-b]\n  runtime_type = 'io.containerd.runc.v2'\n"
APISERVER_MANIFEST = """\
apiVersion: v1
kind: Pod
metadata:
  name: kube-apiserver
  namespace: kube-system
  labels: {component: kube-apiserver, tier: control-plane}
spec:
  containers: [{name: kube-apiserver, image: registry.k8s.io/kube-apiserver:v1.31.0}]
"""


def run_kubelet_like_pod(client: CriClient, name: str, handler: str, *, static: bool, labels: dict | None = None,
                         log_dir: Path) -> str:
    """A READY sandbox labelled the way the kubelet labels a pod's sandbox (stand-in: no kubelet here)."""
    pb = client.pb
    uid = uuid.uuid4().hex
    namespace = "kube-system" if static else "default"
    annotations = {"kubernetes.io/config.source": "file" if static else "api", "kubernetes.io/config.seen": "now"}
    config = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, uid=uid, namespace=namespace, attempt=0),
        log_directory=str(log_dir / uid),
        labels={"io.kubernetes.pod.name": name, "io.kubernetes.pod.namespace": namespace,
                "io.kubernetes.pod.uid": uid, **(labels or {})},
        annotations=annotations,
        linux=pb.LinuxPodSandboxConfig(security_context=pb.LinuxSandboxSecurityContext(
            namespace_options=pb.NamespaceOption(network=pb.NamespaceMode.NODE))),
    )
    return client.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=config, runtime_handler=handler),
                                        timeout=30).pod_sandbox_id


@pytest.fixture
def node_root(tmp_path, containerd_factory):
    """A node root whose containerd socket is a REAL containerd 2.x with runc and runc-b handlers."""
    if not have_containerd("2.1"):
        pytest.skip("containerd 2.x is not installed (run scripts/setup-test-env)")
    daemon = containerd_factory("2.1", lambda work: minimal_config("2.1", work, extra=EXTRA_RUNC_HANDLER))
    import_test_images(daemon)
    root = tmp_path / "root"
    (root / "etc/containerd").mkdir(parents=True)
    (root / "etc/containerd/config.toml").write_text(minimal_config("2.1", tmp_path / "cfg"))
    install_containerd(root, "2.1")
    (root / "run/containerd").mkdir(parents=True)
    (root / SOCKET.lstrip("/")).symlink_to(daemon.socket)
    return root, daemon


def _plan(root: Path, *extra: str):
    return run_cli("--root", str(root), "plan", "--runtime", "gvisor", "--skip-eligibility",
                   "--containerd-socket", SOCKET, "-o", "json", *extra)


def test_plan_lists_sandboxes_per_handler_and_static_pods(node_root, tmp_path):
    root, daemon = node_root
    logs = tmp_path / "pods"
    with CriClient(daemon.socket) as client:
        for i in range(2):
            run_kubelet_like_pod(client, f"web-{i}", "runc", static=False, log_dir=logs)
        run_kubelet_like_pod(client, "batch-0", "runc-b", static=False, log_dir=logs)
        stopped = run_kubelet_like_pod(client, "gone-0", "runc", static=False, log_dir=logs)
        client.stop_pod(stopped)  # NOTREADY: a restart touches nothing of it
        run_kubelet_like_pod(client, "etcd-node1", "", static=True, log_dir=logs,  # "" = the default handler
                             labels={"component": "etcd", "tier": "control-plane"})

    proc = _plan(root)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert {"changed", "restart", "files", "artifacts"} <= set(data) and data["restart"] is True
    impact = data["restart_impact"]
    assert impact["sandboxes"] == {"runc": 3, "runc-b": 1} and impact["sandboxes_total"] == 4
    assert [(p["namespace"], p["name"], p["control_plane"]) for p in impact["static_pods"]] == [
        ("kube-system", "etcd-node1", True)]
    # no manifest dir in this root: the running etcd sandbox alone marks the control plane
    assert impact["static_pod_path"] == "/etc/kubernetes/manifests" and impact["manifests"] == []
    assert impact["control_plane"] and impact["blocks_auto_restart"]
    assert impact["kubelet_restarts"] is False and impact["flavor"] == "containerd"

    text = run_cli("--root", str(root), "plan", "--runtime", "gvisor", "--skip-eligibility",
                   "--containerd-socket", SOCKET)
    assert "restart impact: 4 running sandbox(es) keep running (runc 3, runc-b 1)" in text.stdout
    assert "kube-system/etcd-node1" in text.stdout and "--allow-control-plane-restart" in text.stdout

    dry = run_cli("--root", str(root), "install", "--dry-run", "--runtime", "gvisor", "--skip-eligibility",
                  "--containerd-socket", SOCKET, "-o", "json")
    assert json.loads(dry.stdout)["restart_impact"] == impact


def test_manifests_mark_the_control_plane_and_a_plain_node_is_not_blocked(node_root, tmp_path):
    root, daemon = node_root
    manifests = root / "etc/kubernetes/manifests"
    manifests.mkdir(parents=True)
    (manifests / "kube-apiserver.yaml").write_text(APISERVER_MANIFEST)
    (manifests / "broken.yaml").write_text("kind: Pod\nmetadata: [unclosed\n")
    (manifests / ".hidden.yaml").write_text(APISERVER_MANIFEST)  # the kubelet skips dot files too
    with CriClient(daemon.socket) as client:
        run_kubelet_like_pod(client, "web-0", "runc", static=False, log_dir=tmp_path / "pods")

    impact = json.loads(_plan(root).stdout)["restart_impact"]
    assert [(m["file"], m["name"], m["control_plane"]) for m in impact["manifests"]] == [
        ("/etc/kubernetes/manifests/broken.yaml", None, False),
        ("/etc/kubernetes/manifests/kube-apiserver.yaml", "kube-apiserver", True)]
    assert impact["manifests"][0]["error"].startswith("not YAML")
    # a control-plane node, but none of its static pods run: a restart is not blocked
    assert impact["control_plane"] and impact["static_pods"] == [] and not impact["blocks_auto_restart"]

    # the kubelet's own config moves staticPodPath
    (root / "var/lib/kubelet").mkdir(parents=True)
    (root / "var/lib/kubelet/config.yaml").write_text("kind: KubeletConfiguration\nstaticPodPath: /etc/static\n")
    impact = json.loads(_plan(root).stdout)["restart_impact"]
    assert impact["static_pod_path"] == "/etc/static" and impact["manifests"] == [] and not impact["control_plane"]


@pytest.mark.bad_input
def test_restart_auto_refuses_under_running_static_control_plane(node_root, tmp_path):
    root, daemon = node_root
    (root / "etc/kubernetes/manifests").mkdir(parents=True)
    (root / "etc/kubernetes/manifests/kube-apiserver.yaml").write_text(APISERVER_MANIFEST)
    with CriClient(daemon.socket) as client:
        run_kubelet_like_pod(client, "kube-apiserver-node1", "runc", static=True, log_dir=tmp_path / "pods",
                             labels={"component": "kube-apiserver", "tier": "control-plane"})
    before = snapshot(root)
    proc = run_cli("--root", str(root), "install", "--runtime", "gvisor", "--skip-eligibility",
                   "--containerd-socket", SOCKET, "--restart", "auto")
    error = assert_known_error(proc, 2)
    assert "control-plane" in error and "kube-system/kube-apiserver-node1" in error and "nothing was changed" in error
    assert "--allow-control-plane-restart" in proc.stderr
    assert diff_snapshots(before, snapshot(root)) == []
    with CriClient(daemon.socket) as client:
        assert sum(1 for p in client.list_pods() if p.state == client.pb.SANDBOX_READY) == 1
