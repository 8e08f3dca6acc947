"""kube.nodes: which Node is ours, and converging its labels with one GET and at most one PATCH,
against the loopback HTTPS STAND-IN API server (no kube-apiserver can be had here; see
tests/support/fake_apiserver.py)."""

from __future__ import annotations

import socket

import pytest

from nodeagent.errors import KubeError
from nodeagent.kube.client import KubeClient
from nodeagent.kube.credentials import from_kubeconfig
from nodeagent.kube.labels import OWNED_ANNOTATION
from nodeagent.kube.nodes import apply_labels, get_node, node_name, node_path
from nodeagent.settings import Settings
from tests.support.fake_apiserver import apiserver, kc, pki  # noqa: F401 (fixtures)

P = "sandbox.nodeagent.io/"


@pytest.fixture
def api(kc):  # noqa: F811
    with KubeClient(from_kubeconfig(kc), sleep=lambda s: None) as client:
        yield client


def test_the_node_name_comes_from_the_setting_then_the_downward_api_then_the_hostname():
    assert node_name(Settings(node_name="from-flag"), {"NODE_NAME": "from-env"}) == "from-flag"
    assert node_name(Settings(), {"NODE_NAME": " from-env\n"}) == "from-env"
    assert node_name(None, {}) == socket.gethostname().strip()


def test_a_node_name_cannot_leave_its_path():
    assert node_path("a/../../namespaces/kube-system") == "/api/v1/nodes/a%2F..%2F..%2Fnamespaces%2Fkube-system"


def test_a_missing_node_is_a_known_error_that_names_the_flag(apiserver, api):  # noqa: F811
    with pytest.raises(KubeError, match="node 'node-x' does not exist") as exc:
        get_node(api, "node-x")
    assert "--node-name" in exc.value.hint


def test_labels_are_patched_once_and_a_converged_node_gets_no_patch(apiserver, api):  # noqa: F811
    apiserver.put_object("/api/v1/nodes/node-a", {"apiVersion": "v1", "kind": "Node",
                                                  "metadata": {"labels": {"team": "blue"}}})
    patch = apply_labels(api, "node-a", {P + "gvisor": "true"})
    assert patch["metadata"]["labels"] == {P + "gvisor": "true"}
    node = apiserver.object("/api/v1/nodes/node-a")
    assert node["metadata"]["labels"] == {"team": "blue", P + "gvisor": "true"}
    assert node["metadata"]["annotations"][OWNED_ANNOTATION] == P + "gvisor"
    apiserver.reset_records()
    assert apply_labels(api, "node-a", {P + "gvisor": "true"}) is None
    assert apiserver.count(method="PATCH") == 0 and apiserver.count(method="GET") == 1
