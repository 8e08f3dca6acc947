"""Restart impact without containerd: static pod paths per flavor, manifests, the auto-restart rule."""

from __future__ import annotations

import pytest

from nodeagent.containerd import impact
from nodeagent.host import HostRoot

ETCD = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: etcd\n  namespace: kube-system\n"


@pytest.mark.parametrize("flavor, kubelet_restarts", [("k3s", True), ("rke2", True), ("containerd", False),
                                                      ("microk8s", False), ("k0s", False)])
def test_kubelet_restarts_with_containerd_only_on_k3s_and_rke2(tmp_path, flavor, kubelet_restarts):
    found = impact.assess(HostRoot(tmp_path), "/nowhere.sock", flavor, True, ask_cri=False)
    assert found.kubelet_restarts is kubelet_restarts
    assert found.sandboxes == {} and found.sandboxes_reason == "containerd is not running"
    text = "\n".join(impact.render(found))
    assert ("both restart" in text) is kubelet_restarts and "running sandboxes unknown" in text


def test_rke2_server_static_pods_come_from_its_own_dir(tmp_path):
    manifests = tmp_path / "var/lib/rancher/rke2/agent/pod-manifests"
    manifests.mkdir(parents=True)
    (manifests / "etcd.yaml").write_text(ETCD)
    (manifests / "list.yaml").write_text("- not\n- a pod\n")
    found = impact.assess(HostRoot(tmp_path), "/nowhere.sock", "rke2", True, ask_cri=False)
    assert found.static_pod_path == "/var/lib/rancher/rke2/agent/pod-manifests"
    assert [(m["name"], m["control_plane"], m.get("error")) for m in found.manifests] == [
        ("etcd", True, None), (None, False, "not a Pod manifest")]
    # a control plane, but no static pod seen running: nothing blocks
    assert found.control_plane and not found.blocks_auto_restart
    impact.enforce(found, "auto", allowed=False)


def _blocking() -> impact.RestartImpact:
    found = impact.RestartImpact(restart=True, flavor="containerd")
    found.static_pods = [{"name": "kube-apiserver-n1", "namespace": "kube-system", "handler": "",
                          "sandbox_id": "x", "control_plane": True}]
    return found


def test_only_restart_auto_is_refused_and_the_flag_allows_it():
    with pytest.raises(impact.RestartRefused) as err:
        impact.enforce(_blocking(), "auto", allowed=False)
    assert "kube-system/kube-apiserver-n1" in err.value.message and "--allow-control-plane-restart" in err.value.hint
    impact.enforce(_blocking(), "auto", allowed=True)
    impact.enforce(_blocking(), "systemd", allowed=False)  # an explicit restart method is the operator's call
    impact.enforce(_blocking(), "none", allowed=False)
    no_restart = _blocking()
    no_restart.restart = False
    impact.enforce(no_restart, "auto", allowed=False)
    assert impact.render(no_restart) == []


def test_a_static_pod_that_is_not_control_plane_does_not_block():
    found = _blocking()
    found.static_pods[0].update(name="node-exporter-n1", control_plane=False)
    assert not found.blocks_auto_restart


@pytest.mark.parametrize("unit, blocks", [("k3s.service", True), ("k3s-agent.service", False)])
def test_a_k3s_server_is_its_own_control_plane(tmp_path, unit, blocks):
    """A k3s server runs the API server inside the unit a restart restarts: no static pods needed."""
    found = impact.assess(HostRoot(tmp_path), "/nowhere.sock", "k3s", True, ask_cri=False, unit=unit)
    assert found.kubelet_restarts and found.control_plane is blocks and found.blocks_auto_restart is blocks
    if blocks:
        with pytest.raises(impact.RestartRefused) as err:
            impact.enforce(found, "auto", allowed=False)
        assert "API server" in err.value.message
        assert any("API server" in line for line in impact.render(found))
    else:
        impact.enforce(found, "auto", allowed=False)
