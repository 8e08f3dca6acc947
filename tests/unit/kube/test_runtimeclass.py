"""kube.runtimeclass: one RuntimeClass's manifest, converging it (create, leave, update, replace a
handler the API server will not change in place, never touch one that is not ours), and whether
it selects a node. Against the loopback HTTPS STAND-IN API server (no kube-apiserver can be had
here; see tests/support/fake_apiserver.py). The per-runtime defaults (manifests()) belong to the
runtimes and are tested with them and in tests/integration/test_kube_objects.py."""

from __future__ import annotations

import pytest

from nodeagent.kube.client import KubeClient
from nodeagent.kube.credentials import from_kubeconfig
from nodeagent.kube.runtimeclass import COLLECTION, MANAGED_BY, converge, converge_one, manifest, selects_node
from tests.support.fake_apiserver import apiserver, kc, pki  # noqa: F401 (fixtures)

P = "sandbox.nodeagent.io/"


@pytest.fixture
def api(kc):  # noqa: F811
    with KubeClient(from_kubeconfig(kc), sleep=lambda s: None) as client:
        yield client


def gvisor(handler: str = "runsc", memory: str | None = None) -> dict:
    return manifest("gvisor", handler, node_label=P + "gvisor", memory=memory, cpu=None)


def test_the_manifest_schedules_onto_labelled_nodes_with_optional_overhead_and_tolerations():
    plain = gvisor()
    assert plain == {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
                     "metadata": {"name": "gvisor", "labels": MANAGED_BY}, "handler": "runsc",
                     "scheduling": {"nodeSelector": {P + "gvisor": "true"}}}
    toleration = [{"key": "sandbox", "operator": "Exists"}]
    full = manifest("kata", "kata", node_label=P + "kata", memory="160Mi", cpu="250m", tolerations=toleration)
    assert full["overhead"] == {"podFixed": {"cpu": "250m", "memory": "160Mi"}}
    toleration[0]["key"] = "changed"
    assert full["scheduling"]["tolerations"] == [{"key": "sandbox", "operator": "Exists"}]  # a copy


def test_create_leave_update_and_replace(apiserver, api):  # noqa: F811
    assert converge_one(api, gvisor()) == "created"
    assert converge_one(api, gvisor()) == "unchanged"
    apiserver.reset_records()
    assert converge_one(api, gvisor(memory="64Mi")) == "updated"
    assert apiserver.count(method="PUT") == 1 and apiserver.count(method="DELETE") == 0
    assert apiserver.object(f"{COLLECTION}/gvisor")["overhead"] == {"podFixed": {"memory": "64Mi"}}
    assert converge_one(api, gvisor(handler="runsc-debug")) == "replaced"  # handler is immutable
    assert apiserver.object(f"{COLLECTION}/gvisor")["handler"] == "runsc-debug"


def test_an_update_keeps_other_peoples_labels(apiserver, api):  # noqa: F811
    converge_one(api, gvisor())
    obj = apiserver.object(f"{COLLECTION}/gvisor")
    obj["metadata"]["labels"]["team"] = "blue"
    apiserver.put_object(f"{COLLECTION}/gvisor", obj)
    converge_one(api, gvisor(memory="64Mi"))
    assert apiserver.object(f"{COLLECTION}/gvisor")["metadata"]["labels"] == {**MANAGED_BY, "team": "blue"}


def test_a_runtimeclass_that_is_not_ours_is_left_alone(apiserver, api):  # noqa: F811
    apiserver.put_object(f"{COLLECTION}/gvisor", {"metadata": {"labels": {}}, "handler": "gvisor"})
    apiserver.reset_records()
    assert converge(api, [gvisor()]) == {"gvisor": "foreign"}
    assert apiserver.object(f"{COLLECTION}/gvisor")["handler"] == "gvisor"
    assert apiserver.count(method="GET") == 1 and apiserver.count() == 1  # looked, wrote nothing


@pytest.mark.parametrize("selector, labels, selects", [
    ({P + "gvisor": "true"}, {P + "gvisor": "true", "x": "y"}, True),
    ({P + "gvisor": "true"}, {P + "gvisor": "false"}, False),
    ({P + "gvisor": "true", "zone": "a"}, {P + "gvisor": "true"}, False),
    ({}, {P + "gvisor": "true"}, None),  # no nodeSelector: any node
    ({P + "gvisor": "true"}, None, None),  # the node's labels are unknown
])
def test_selects_node(selector, labels, selects):
    obj = {"handler": "runsc", "scheduling": {"nodeSelector": selector}}
    assert selects_node(obj, labels) is selects
