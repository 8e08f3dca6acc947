"""The startup taint (issue 16, item 1) against the loopback STAND-IN API server with deploy/'s
admission policy enforced (real CEL via tests/support/admission.py; no kube-apiserver exists here).

The agent removes exactly the taints with the startup key, leaves every other taint, refuses to
remove the wrong entry when someone edits the taints at the same moment (the JSON patch's `test`
ops fail with 422 and the agent re-reads), and the policy admits exactly that change.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from nodeagent.kube.client import KubeClient
from nodeagent.kube.credentials import from_kubeconfig
from nodeagent.kube.nodes import get_node, remove_startup_taint, taint_removal
from tests.support import admission
from tests.support.fake_apiserver import TOKEN, apiserver, kubeconfig_text, pki  # noqa: F401 (fixtures)

NODE = "/api/v1/nodes/node-a"
KEY = "sandbox.nodeagent.io/not-ready"
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
AGENT = "system:serviceaccount:nodeagent:nodeagent"
CONTROL_PLANE = {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}
STARTUP = {"key": KEY, "effect": "NoSchedule"}
STARTUP_EXEC = {"key": KEY, "value": "true", "effect": "NoExecute"}


@pytest.fixture
def api(tmp_path, apiserver, pki):  # noqa: F811
    docs = list(yaml.safe_load_all((DEPLOY / "admission-policy.yaml").read_text()))
    policy = next(d for d in docs if d["kind"] == "ValidatingAdmissionPolicy")
    assert f"'{KEY}'" in next(v["expression"] for v in policy["spec"]["variables"] if v["name"] == "startupTaintKey")
    binding = next(d for d in docs if d["kind"] == "ValidatingAdmissionPolicyBinding")
    apiserver.admission = admission.standin_hook(policy, binding["metadata"]["name"], {"token-user-0": (AGENT, "node-a")})
    path = tmp_path / "kubeconfig"
    path.write_text(kubeconfig_text(apiserver.url, user={"token": TOKEN},
                                    cluster_extra={"certificate-authority": str(pki.ca_cert)}))
    with KubeClient(from_kubeconfig(str(path))) as client:
        yield client


def seed(apiserver, taints):  # noqa: F811
    apiserver.put_object(NODE, {"apiVersion": "v1", "kind": "Node", "metadata": {"labels": {}},
                                "spec": {"taints": taints}})


def test_only_the_startup_taint_goes_every_effect_of_it(apiserver, api):  # noqa: F811
    seed(apiserver, [CONTROL_PLANE, STARTUP, {"key": "other", "effect": "NoExecute"}, STARTUP_EXEC])
    assert remove_startup_taint(api, "node-a", KEY) is True
    assert apiserver.object(NODE)["spec"]["taints"] == [CONTROL_PLANE, {"key": "other", "effect": "NoExecute"}]
    assert remove_startup_taint(api, "node-a", KEY) is False  # gone: nothing sent
    assert apiserver.count("PATCH") == 1


def test_a_concurrent_taint_edit_is_not_lost_and_the_wrong_entry_never_removed(apiserver, api):  # noqa: F811
    seed(apiserver, [STARTUP, CONTROL_PLANE])
    stale = get_node(api, "node-a")
    # the provisioner edits the taints after we read them: ours moves to another index
    apiserver.put_object(NODE, {**apiserver.object(NODE), "spec": {"taints": [
        {"key": "karpenter.sh/disrupted", "effect": "NoSchedule"}, CONTROL_PLANE, STARTUP]}})
    assert remove_startup_taint(api, "node-a", KEY, node=stale) is True
    assert apiserver.count("PATCH", status=422) == 1  # the stale patch's `test` failed; nothing applied
    assert apiserver.object(NODE)["spec"]["taints"] == [{"key": "karpenter.sh/disrupted", "effect": "NoSchedule"},
                                                        CONTROL_PLANE]


def test_the_admission_policy_refuses_removing_another_taint_with_the_same_patch(apiserver, api):  # noqa: F811
    """Our patch is what the policy allows; the same patch aimed at another taint is refused."""
    seed(apiserver, [CONTROL_PLANE, STARTUP])
    ops = taint_removal({"spec": {"taints": [CONTROL_PLANE, STARTUP]}}, CONTROL_PLANE["key"])
    from nodeagent.kube.client import KubeForbidden

    with pytest.raises(KubeForbidden) as err:
        api.patch(NODE, ops, strategy="json")
    assert "may only remove its startup taint" in err.value.message
    assert apiserver.object(NODE)["spec"]["taints"] == [CONTROL_PLANE, STARTUP]
