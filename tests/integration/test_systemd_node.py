"""The systemd node harness itself: a real systemd + Debian's containerd.service in namespaces."""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil
import pytest

from nodeagent.containerd import cri
from tests.support.oci_image import TEST_IMAGE
from tests.support.systemd_node import SystemdNode

pytestmark = [pytest.mark.integration, pytest.mark.root]


def test_node_runs_containerd_service_reachable_through_cri(clean_node):
    assert clean_node.state() in ("running", "degraded")
    assert clean_node.systemctl("is-active", "containerd.service").stdout.strip() == "active"
    # the node's own containerd, reached from outside through /proc/<pid>/root
    status = cri.cri_status(clean_node.containerd_socket)
    assert status.ok, status.as_dict()
    assert status.runtime_version.startswith("1.6.")
    assert status.config["restrictOOMScoreAdj"] is True
    # the node is another PID namespace: its containerd is not a process we see as PID 1's child
    assert clean_node.run(["cat", "/proc/1/comm"]).stdout.strip() == "systemd"
    assert clean_node.run(["hostname"]).stdout.strip() == "nodeagent-node"


def test_systemctl_restart_changes_main_pid_and_pods_survive(clean_node):
    clean_node.import_test_images()
    with cri.CriClient(clean_node.containerd_socket) as client:
        start = time.monotonic()
        pod = client.run_pod("runc", name="survivor")
        ready_after = time.monotonic() - start
        try:
            assert client.pod_state(pod.id) == cri.SANDBOX_READY
            before = clean_node.main_pid()
            start = time.monotonic()
            clean_node.systemctl("restart", "containerd")
            restart_took = time.monotonic() - start
            clean_node.wait_active()
            after = clean_node.main_pid()
            assert before and after and before != after
        finally:
            pass
    # a new channel: the old daemon is gone. The sandbox (its shim) outlived the restart.
    with cri.CriClient(clean_node.containerd_socket) as client:
        deadline = time.monotonic() + 10
        while not cri.cri_status(clean_node.containerd_socket).ok and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.pod_state(pod.id) == cri.SANDBOX_READY
        run = client.run_container(pod, TEST_IMAGE, ["uname", "-r"])
        assert (run.exit_code, run.output.strip()) == (0, os.uname().release)
        client.destroy_pod(pod)
    assert ready_after < 5 and restart_took < 5, (ready_after, restart_took)


def test_writes_in_the_node_stay_in_the_node(clean_node):
    marker = f"/etc/nodeagent-node-marker-{os.getpid()}"
    clean_node.run(["sh", "-c", f"echo inside > {marker}"])
    assert clean_node.path(marker).read_text() == "inside\n"
    assert not Path(marker).exists()
    clean_node.run(["rm", marker])
    # Debian's policy-rc.d (which blocks package scripts from starting services) is gone in the node only
    assert not clean_node.path("/usr/sbin/policy-rc.d").exists()


def test_teardown_leaves_nothing_on_the_host():
    node = SystemdNode().boot()
    pid, work, cgroups = node.pid, node.work, list(node.cgroups)
    node.wait_active()
    inner = [p.pid for p in psutil.Process(pid).children(recursive=True)]
    assert inner, "the node should run services"
    assert node.boot_seconds < 10
    node.shutdown()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in inner)
    assert not work.exists() and not any(cg.exists() for cg in cgroups)
    # its mounts lived only in its own mount namespace (other tests on this machine may mount things)
    assert "nodeagent-node" not in Path("/proc/self/mountinfo").read_text()
    assert str(work) not in Path("/proc/self/mountinfo").read_text()
    assert not Path("/run/containerd").exists()


def test_stand_in_kata_shim_serves_a_kata_pod_in_the_node(clean_node):
    """The recipe the install tests use for Kata's plumbing. Stand-in: Kata VMs cannot run on these
    machines (no host-side vsock), so a copy of the runc shim plays containerd-shim-kata-v2; the pod
    is real, and verify rightly reports it as not isolated (it runs on the host kernel)."""
    from nodeagent import verify
    from nodeagent.host import HostRoot
    from tests.support.systemd_node import NODE_CONTAINERD_CONFIG

    node = clean_node
    node.import_test_images()
    config = node.path("/etc/containerd/config.toml")
    shim = node.path("/usr/local/bin/containerd-shim-kata-v2")
    shim.write_bytes(node.path("/usr/bin/containerd-shim-runc-v2").read_bytes())
    shim.chmod(0o755)
    config.write_text(NODE_CONTAINERD_CONFIG + (
        '\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata]\n'
        '  runtime_type = "io.containerd.kata.v2"\n  privileged_without_host_devices = true\n'
    ))
    try:
        node.systemctl("restart", "containerd")
        node.wait_active()
        from nodeagent.containerd import health

        report = health.wait_healthy(str(node.containerd_socket), ["runc", "kata"], timeout=10)
        assert report.healthy, report.reason
        with cri.CriClient(node.containerd_socket) as client:
            pod = client.run_pod("kata", name="kata-plumbing")
            try:
                assert client.pod_state(pod.id) == cri.SANDBOX_READY
            finally:
                client.destroy_pod(pod)
        check = verify.verify_cri("kata", "kata", str(node.containerd_socket), TEST_IMAGE, HostRoot(node.root))
        assert not check.ok and check.sandbox_kernel == os.uname().release and "not isolated" in check.reason
    finally:
        config.write_text(NODE_CONTAINERD_CONFIG)
        shim.unlink()
        node.systemctl("restart", "containerd")
        node.wait_active()
