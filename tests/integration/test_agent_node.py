"""`nodeagent agent` against a real systemd node and the loopback STAND-IN API server (issue 6).

No kube-apiserver can be had here: tests/support/fake_apiserver.py is a stand-in enforcing what
the real one does for our calls. The agent runs like a DaemonSet pod: the node's root at --root
(/proc/<node>/root), containerd restarted through the node's systemd private socket, the API on
loopback. It must converge, serve health and metrics, label the Node from what CRI serves,
repair a handler someone removed, and on SIGTERM keep the runtimes while the DaemonSet still
selects the node but uninstall once it does not.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from nodeagent.containerd.cri import cri_status
from tests.support import prom
from tests.support.fake_apiserver import TOKEN, apiserver, free_port, kubeconfig_text, pki  # noqa: F401
from tests.support.mirror import default_mirror
from tests.support.wait import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.root]

CONFIG = "/etc/containerd/config.toml"
NODE = "/api/v1/nodes/node-a"
DS = "/apis/apps/v1/namespaces/nodeagent/daemonsets/nodeagent"
P = "sandbox.nodeagent.io/"


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return 0, ""


def _wait(pred, timeout: float = 60, what: str = "condition"):
    return wait_for(pred, timeout, what, interval=0.2)


def _metric(port: int, name: str) -> float:
    """The sum over the metric's label sets (nodeagent_converges_total has an outcome label)."""
    return prom.total(prom.parse(_get(port, "/metrics")[1]), name)


@pytest.fixture
def agent_env(tmp_path, apiserver, pki, clean_node):  # noqa: F811
    kc = tmp_path / "kubeconfig"
    kc.write_text(kubeconfig_text(apiserver.url, user={"token": TOKEN},
                                  cluster_extra={"certificate-authority": str(pki.ca_cert)}))
    apiserver.put_object(NODE, {"apiVersion": "v1", "kind": "Node",
                                "metadata": {"labels": {"kubernetes.io/os": "linux"}}})
    apiserver.put_object(DS, {"apiVersion": "apps/v1", "kind": "DaemonSet",
                              "metadata": {"namespace": "nodeagent"},
                              "spec": {"template": {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"}}}}})
    original = clean_node.path(CONFIG).read_bytes()
    yield kc, clean_node, original
    if clean_node.path(CONFIG).read_bytes() != original:
        subprocess.run([sys.executable, "-m", "nodeagent", "--root", str(clean_node.root), "uninstall",
                        "--force"], capture_output=True, timeout=120)
    clean_node.wait_active()


def _start_agent(kc, node, port: int, *extra: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NODEAGENT_")}
    env.update({"POD_NAMESPACE": "nodeagent", "NODEAGENT_LOG_FORMAT": "json", "NODEAGENT_HEALTH_TIMEOUT": "20"})
    for var in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "KUBECONFIG", "KUBERNETES_SERVICE_HOST"):
        env.pop(var, None)
    argv = [sys.executable, "-m", "nodeagent", "agent", "--root", str(node.root), "--kubeconfig", str(kc),
            "--node-name", "node-a", "--listen", f"127.0.0.1:{port}", "--interval", "1",
            "--runtime", "gvisor", "--mirror", str(default_mirror()), *extra]
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _stop(proc: subprocess.Popen, timeout: float = 60) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"agent did not stop on SIGTERM within {timeout}s:\n{err[-3000:]}")
    return proc.returncode, err


def test_agent_converges_labels_repairs_drift_and_stops_cleanly(agent_env, apiserver):  # noqa: F811
    kc, node, original = agent_env
    port = free_port()
    proc = _start_agent(kc, node, port)
    try:
        _wait(lambda: _get(port, "/readyz")[0] == 200, what="/readyz")
        assert _get(port, "/healthz")[0] == 200
        assert "runsc" in cri_status(node.containerd_socket).handlers
        labels = _wait(lambda: (apiserver.object(NODE)["metadata"].get("labels") or {}).get(P + "gvisor") and
                       apiserver.object(NODE)["metadata"]["labels"], what="gvisor label")
        assert labels[P + "state"] == "ready" and labels[P + "gvisor-platform"] == "systrap"
        assert labels["kubernetes.io/os"] == "linux"  # not ours: untouched
        assert _metric(port, "nodeagent_installs_total") == 1
        assert _metric(port, "nodeagent_containerd_restarts_total") == 1

        # drift: someone puts the old config back and restarts containerd (a package upgrade)
        node.path(CONFIG).write_bytes(original)
        node.systemctl("restart", "containerd")
        _wait(lambda: _metric(port, "nodeagent_drift_repairs_total") >= 1, what="drift repair")
        _wait(lambda: "runsc" in cri_status(node.containerd_socket).handlers, what="runsc served again")
        assert b"runsc" in node.path(CONFIG).read_bytes()
        assert _metric(port, "nodeagent_containerd_restarts_total") >= 2
    finally:
        code, err = _stop(proc)
    assert code == 0, err[-3000:]
    assert "Traceback" not in err
    # a rolling update stops the pod while the DaemonSet still selects the node: keep the runtimes
    assert b"runsc" in node.path(CONFIG).read_bytes()
    assert "runsc" in cri_status(node.containerd_socket).handlers

    # the DaemonSet is deleted: the next stop uninstalls and restores the original config
    apiserver.put_object(DS, {**apiserver.object(DS), "metadata": {**apiserver.object(DS)["metadata"],
                                                                   "deletionTimestamp": "2026-11-27T00:00:00Z"}})
    proc = _start_agent(kc, node, port)
    try:
        _wait(lambda: _get(port, "/readyz")[0] == 200, what="/readyz after restart")
        assert _metric(port, "nodeagent_installs_total") == 0  # already converged: nothing to do
    finally:
        code, err = _stop(proc)
    assert code == 0, err[-3000:]
    assert node.path(CONFIG).read_bytes() == original
    assert "runsc" not in cri_status(node.containerd_socket).handlers
    with apiserver.lock:
        events = list(apiserver.store.objects.get("/api/v1/namespaces/default/events", {}).values())
    assert {"NodeagentInstalled", "NodeagentRemoving"} <= {e.get("reason") for e in events}


def test_a_halted_rollout_touches_nothing_until_resumed_then_the_startup_taint_goes(agent_env, apiserver):  # noqa: F811
    """Issue 16: the fleet already recorded rollout_max_failures failed nodes for this desired state.
    The agent must not restart containerd nor switch its config; it says `halted` (label, metric,
    one Event). After `nodeagent rollout resume` it converges, verifies with real runsc, and only
    then removes the startup taint, leaving the provisioner's other taints alone."""
    from nodeagent.kube.rollout import RolloutRecord, desired_state_hash
    from nodeagent.kube.client import KubeClient
    from nodeagent.kube.credentials import from_kubeconfig
    from nodeagent.settings import Settings

    kc, node, original = agent_env
    other_taint = {"key": "node.kubernetes.io/network-unavailable", "effect": "NoSchedule"}
    startup = {"key": "sandbox.nodeagent.io/not-ready", "effect": "NoSchedule"}
    apiserver.put_object(NODE, {**apiserver.object(NODE), "spec": {"taints": [startup, other_taint]}})
    desired = desired_state_hash(Settings(runtime="gvisor", mirror=str(default_mirror())))
    with KubeClient(from_kubeconfig(str(kc))) as api:
        for failed in ("node-x", "node-y", "node-z"):
            RolloutRecord(api, "nodeagent", desired, 3).record_failure(failed, "rolled back: test")
    containerd_pid = node.main_pid()
    port = free_port()
    proc = _start_agent(kc, node, port, "--startup-taint", "sandbox.nodeagent.io/not-ready")
    try:
        _wait(lambda: _metric(port, "nodeagent_rollout_halted") == 1, what="halted metric")
        labels = apiserver.object(NODE)["metadata"]["labels"]
        assert labels[P + "state"] == "halted"
        _wait(lambda: _metric(port, "nodeagent_converge_failures_total") >= 2, timeout=60, what="a second halted round")
        assert node.main_pid() == containerd_pid, "containerd was restarted during a halted rollout"
        assert node.path(CONFIG).read_bytes() == original
        assert apiserver.object(NODE)["spec"]["taints"] == [startup, other_taint]
        with apiserver.lock:
            events = list(apiserver.store.objects.get("/api/v1/namespaces/default/events", {}).values())
        assert [e["reason"] for e in events].count("NodeagentRolloutHalted") == 1  # on the change, not per round

        resumed = subprocess.run([sys.executable, "-m", "nodeagent", "rollout", "resume", "--kubeconfig", str(kc),
                                  "--namespace", "nodeagent"], capture_output=True, text=True, timeout=60)
        assert resumed.returncode == 0, resumed.stderr
        _wait(lambda: _get(port, "/readyz")[0] == 200, timeout=120, what="/readyz after resume")
        assert _metric(port, "nodeagent_rollout_halted") == 0
        _wait(lambda: apiserver.object(NODE)["spec"]["taints"] == [other_taint], what="startup taint removed")
        assert apiserver.object(NODE)["metadata"]["labels"][P + "state"] == "ready"
        assert node.main_pid() != containerd_pid

        # at rest: no Lease, no rollout record, no taint patch; one Node GET per round
        _wait(lambda: apiserver.count("PATCH", path_contains="/nodes/") >= 2, what="labels and taint settled")
        first = _metric(port, "nodeagent_converges_total")
        apiserver.reset_records()
        _wait(lambda: _metric(port, "nodeagent_converges_total") >= first + 3, timeout=60, what="three rounds at rest")
        rounds = _metric(port, "nodeagent_converges_total") - first
        with apiserver.lock:
            seen = [(r.method, r.path) for r in apiserver.records]
        assert not [r for r in seen if "/leases" in r[1] or "/configmaps" in r[1] or r[0] != "GET"], seen
        print(f"\n[rollout] at rest: {len(seen)} API requests in {rounds:.0f} rounds: {sorted(set(seen))}")
        assert len(seen) <= rounds + 1
    finally:
        code, err = _stop(proc)
    assert code == 0, err[-3000:]
    with apiserver.lock:
        events = list(apiserver.store.objects.get("/api/v1/namespaces/default/events", {}).values())
    assert "NodeagentStartupTaintRemoved" in {e["reason"] for e in events}
