"""deploy/'s ValidatingAdmissionPolicy, its real CEL evaluated against allowed and forbidden patches.

Attack (security review H2): the agent's token may patch every Node, so root on one node could
re-label, taint or cordon the others. The policy must let the agent's ServiceAccount change only
the Node named in its own token, and there only our labels/annotations and the startup taint.

No kube-apiserver can be had here: tests/support/admission.py is a stand-in for its admission
plugin, but the CEL is evaluated for real (PyPI `common-expression-language`) with the variables
Kubernetes gives (`object`, `oldObject`, `request` with userInfo.username and extra). Each patch is
applied as the API server does (JSON merge patch), then judged.
"""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from nodeagent.facts import HostFacts
from nodeagent.kube.labels import (
    DEFAULT_PREFIX, KATA_COMPAT_LABEL, OWNED_ANNOTATION, desired_labels, label_patch,
)
from nodeagent.settings import Settings
from tests.support.admission import evaluate, request
from tests.support.fake_apiserver import merge_patch

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
P = "sandbox.nodeagent.io/"
AGENT = "system:serviceaccount:nodeagent:nodeagent"
STARTUP = {"key": P + "not-ready", "value": "true", "effect": "NoSchedule"}
CONTROL_PLANE = {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}
READY = {"registered": True, "served": True, "shim_present": True}


def _rendered() -> list[dict]:
    """`kubectl kustomize deploy` when kubectl is here (it ships with this machine's image), else
    the files kustomization.yaml lists, with its namespace applied to the namespaced ones we read."""
    kubectl = shutil.which("kubectl")
    if kubectl:
        out = subprocess.run([kubectl, "kustomize", str(DEPLOY)], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return [d for d in yaml.safe_load_all(out.stdout) if d]
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    docs = [d for f in kustomization["resources"] for d in yaml.safe_load_all((DEPLOY / f).read_text()) if d]
    for d in docs:
        if d["kind"] == "ServiceAccount":
            d["metadata"]["namespace"] = kustomization["namespace"]
    return docs


@pytest.fixture(scope="module")
def objects() -> dict:
    return {(d["kind"], d["metadata"]["name"]): d for d in _rendered()}


@pytest.fixture(scope="module")
def policy(objects) -> dict:
    return objects[("ValidatingAdmissionPolicy", "nodeagent-own-node-only")]


def node(name: str = "node-a") -> dict:
    """A control-plane Node as the API server stores it, with our labels and a startup taint."""
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {
            "name": name, "uid": f"uid-{name}", "resourceVersion": "41", "creationTimestamp": "2026-12-01T00:00:00Z",
            "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                       "node-role.kubernetes.io/control-plane": "", "node-restriction.kubernetes.io/zone": "secure",
                       P + "gvisor": "true", P + "state": "ready", P + "team": "blue"},
            "annotations": {"node.alpha.kubernetes.io/ttl": "0", OWNED_ANNOTATION: f"{P}gvisor,{P}state"},
        },
        "spec": {"podCIDR": "10.244.0.0/24", "podCIDRs": ["10.244.0.0/24"], "providerID": f"kind://{name}",
                 "taints": [CONTROL_PLANE, STARTUP]},
        "status": {"nodeInfo": {"kubeletVersion": "v1.31.0"}},
    }


def decide(policy, patch, *, user=AGENT, token_node="node-a", target="node-a", old=None, **req):
    """Apply `patch` to `target` like the API server (merge patch, new resourceVersion), then judge."""
    old = old or node(target)
    new = merge_patch(old, patch)
    new["metadata"]["resourceVersion"] = str(int(old["metadata"]["resourceVersion"]) + 1)
    return evaluate(policy, request(user, node_name=token_node, name=target, **req), new, old)


def assert_denied(decision, reason: str) -> None:
    assert decision.applies, "the policy must apply to the agent's requests"
    assert decision.failures, "this change must be denied"
    assert any(reason in f for f in decision.failures), decision.failures


def labels(**changes):
    return {"metadata": {"labels": changes}}


# --- what the agent does: allowed on its own node -------------------------------------------------

@pytest.mark.parametrize("patch", [
    labels(**{P + "kvm": "true", P + "kata": "true"}),  # add ours
    labels(**{P + "gvisor": None}),  # remove ours (stale)
    labels(**{P + "state": "degraded"}),  # change ours
    labels(**{P + "team": None}),  # even someone else's under the prefix: the API server can't tell
    labels(**{KATA_COMPAT_LABEL: "true"}),  # the optional compatibility label
    {"metadata": {"annotations": {OWNED_ANNOTATION: f"{P}gvisor,{P}kvm,{P}state"}}},
    {"metadata": {"annotations": {P + "note": "x"}}},
    {"spec": {"taints": [CONTROL_PLANE]}},  # the startup taint goes, the rest stays
    {},  # nothing changes
], ids=["add", "remove", "change", "remove-foreign-under-prefix", "compat-label", "owned-annotation",
        "prefixed-annotation", "remove-startup-taint", "no-op"])
def test_own_node_changes_under_the_prefix_are_allowed(policy, patch):
    decision = decide(policy, patch)
    assert decision.applies and decision.allowed, decision.failures


def test_the_patch_nodeagent_really_sends_is_allowed(policy):
    old = node()
    facts = HostFacts.from_json({"virtualization": {"kvm_usable": True, "nested": None, "in_vm": True},
                                 "runtimes": {"gvisor": {"platform": "systrap"}}})
    desired = desired_labels(facts, {"gvisor": READY, "kata": READY}, "ready", kata_compat=True)
    patch = label_patch(old, desired)
    assert patch is not None
    decision = decide(policy, patch, old=old)
    assert decision.applies and decision.allowed, decision.failures
    # and taking every one of them away again (state=removing)
    after = merge_patch(old, patch)
    removing = label_patch(after, desired_labels(facts, {}, "removing"))
    assert decide(policy, removing, old=after).allowed


def test_the_taint_patch_nodeagent_really_sends_is_allowed_and_halted_is_a_state(policy):
    """kube/nodes.py's JSON patch (test + remove of every startup-key taint) on a Node that also
    carries a NoExecute taint of the same key; and the `halted` state label of a halted rollout."""
    from nodeagent.kube.nodes import taint_removal
    from tests.support.fake_apiserver import json_patch

    old = node()
    old["spec"]["taints"].append(dict(STARTUP, effect="NoExecute"))
    new = json_patch(old, taint_removal(old, STARTUP["key"]))
    assert new["spec"]["taints"] == [CONTROL_PLANE]
    assert evaluate(policy, request(AGENT, node_name="node-a", name="node-a"), new, old).allowed
    assert decide(policy, labels(**{P + "state": "halted"})).allowed


def test_a_node_without_spec_is_judged_not_an_error(policy):
    """The API server sends `spec: {}` at least; an absent one must not turn into an evaluation
    error (which `failurePolicy: Fail` would turn into a denial of the agent's own labels)."""
    old = node()
    del old["spec"]
    assert decide(policy, labels(**{P + "kvm": "true"}), old=old).allowed
    assert_denied(decide(policy, {"spec": {"unschedulable": True}}, old=old), "may not cordon")


# --- what one compromised node must not do --------------------------------------------------------

@pytest.mark.parametrize("patch", [
    labels(**{"node-role.kubernetes.io/control-plane": None}),
    labels(**{"node-role.kubernetes.io/worker": ""}),
    labels(**{"node-restriction.kubernetes.io/zone": "public"}),
    labels(**{"node-restriction.kubernetes.io/x": "y"}),
    labels(**{"node-restriction.kubernetes.io/zone": None}),
    labels(**{"kubernetes.io/hostname": "node-b"}),
    labels(**{"sandbox.nodeagent.io.evil.com/gvisor": "true"}),  # a look-alike domain is not our prefix
], ids=["remove-control-plane", "add-role", "change-node-restriction", "add-node-restriction",
        "remove-node-restriction", "hostname", "look-alike-prefix"])
def test_own_node_labels_outside_the_prefix_are_denied(policy, patch):
    assert_denied(decide(policy, patch), "only labels under its prefix")


@pytest.mark.parametrize("patch", [
    {"metadata": {"annotations": {"node.alpha.kubernetes.io/ttl": "3600"}}},
    {"metadata": {"annotations": {"node.alpha.kubernetes.io/ttl": None}}},
    {"metadata": {"annotations": {"cluster-autoscaler.kubernetes.io/scale-down-disabled": "true"}}},
], ids=["change", "remove", "add"])
def test_own_node_annotations_outside_the_prefix_are_denied(policy, patch):
    assert_denied(decide(policy, patch), "only annotations under its prefix")


def test_another_node_is_denied_even_for_our_own_labels(policy):
    """The attack itself: drop gvisor=true from every other node so all gVisor pods land here."""
    decision = decide(policy, labels(**{P + "gvisor": None}), target="node-b", token_node="node-a")
    assert_denied(decision, "only the Node named in its own service-account token")


@pytest.mark.parametrize("extra", [None, {"authentication.kubernetes.io/pod-name": ["nodeagent-x"]},
                                   {"authentication.kubernetes.io/node-name": ["node-a", "node-b"]},
                                   {"authentication.kubernetes.io/node-name": [""]}],
                         ids=["no-extra", "pod-only", "two-nodes", "empty"])
def test_a_token_without_one_node_name_is_denied(policy, extra):
    """Fail closed: a token issued before ServiceAccountTokenPodNodeInfo (or a long-lived Secret
    token) names no node, so it may change no Node, not even the one it runs on."""
    old = node()
    new = merge_patch(old, labels(**{P + "state": "degraded"}))
    decision = evaluate(policy, request(AGENT, extra=extra, name="node-a"), new, old)
    assert_denied(decision, "only the Node named in its own service-account token")


@pytest.mark.parametrize("patch", [
    {"spec": {"taints": [STARTUP]}},  # remove the control-plane taint
    {"spec": {"taints": None}},  # remove all of them
    {"spec": {"taints": [CONTROL_PLANE, STARTUP, {"key": "x", "effect": "NoExecute"}]}},  # add one
    {"spec": {"taints": [CONTROL_PLANE, dict(STARTUP, effect="NoExecute")]}},  # change ours
    {"spec": {"taints": [CONTROL_PLANE, dict(STARTUP, value="false")]}},
], ids=["remove-control-plane", "remove-all", "add", "change-effect", "change-value"])
def test_taint_changes_other_than_removing_the_startup_taint_are_denied(policy, patch):
    assert_denied(decide(policy, patch), "may only remove its startup taint")


def test_adding_the_startup_taint_back_is_denied(policy):
    old = node()
    old["spec"]["taints"] = [CONTROL_PLANE]
    assert_denied(decide(policy, {"spec": {"taints": [CONTROL_PLANE, STARTUP]}}, old=old), "startup taint")


@pytest.mark.parametrize("cordoned_before,patch", [
    (False, {"spec": {"unschedulable": True}}),
    (True, {"spec": {"unschedulable": None}}),
    (True, {"spec": {"unschedulable": False}}),
], ids=["cordon", "uncordon-remove", "uncordon-false"])
def test_cordon_and_uncordon_are_denied(policy, cordoned_before, patch):
    old = node()
    if cordoned_before:
        old["spec"]["unschedulable"] = True
    assert_denied(decide(policy, patch, old=old), "may not cordon")


@pytest.mark.parametrize("patch", [
    {"spec": {"providerID": "aws:///evil"}},
    {"spec": {"podCIDR": "10.0.0.0/8"}},
    {"spec": {"podCIDRs": ["10.0.0.0/8"]}},
    {"spec": {"configSource": {"configMap": {"name": "x", "namespace": "y", "kubeletConfigKey": "k"}}}},
], ids=["providerID", "podCIDR", "podCIDRs", "configSource"])
def test_other_spec_fields_are_denied(policy, patch):
    assert_denied(decide(policy, patch), "may not change a Node's spec")


def test_finalizers_and_owner_references_are_denied(policy):
    assert_denied(decide(policy, {"metadata": {"finalizers": ["example.com/block"]}}), "finalizers")
    owner = {"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "u"}
    assert_denied(decide(policy, {"metadata": {"ownerReferences": [owner]}}), "owner references")


def test_status_subresource_is_denied(policy):
    patch = {"status": {"capacity": {"cpu": "512"}}}
    assert_denied(decide(policy, patch, resource="nodes", sub_resource="status"), "status")


# --- whom the policy leaves alone -----------------------------------------------------------------

@pytest.mark.parametrize("user", ["system:node:node-a", "kubernetes-admin",
                                  "system:serviceaccount:kube-system:node-controller",
                                  "system:serviceaccount:other:nodeagent"])
def test_other_users_are_not_subject_to_the_policy(policy, user):
    # a cordon of another node: forbidden to the agent, not this policy's business for others
    decision = decide(policy, {"spec": {"unschedulable": True}}, user=user, token_node=None, target="node-b")
    assert not decision.applies


def test_only_node_updates_are_matched(policy):
    pod = {"metadata": {"name": "p", "labels": {"a": "b"}}}
    assert not evaluate(policy, request(AGENT, node_name="node-a", resource="pods", kind="Pod"), pod, pod).applies
    assert decide(policy, labels(a="b")).applies


# --- the shipped objects --------------------------------------------------------------------------

def test_policy_is_enforced_fail_closed_and_bound(objects, policy):
    assert policy["apiVersion"] == "admissionregistration.k8s.io/v1"
    assert policy["spec"]["failurePolicy"] == "Fail"
    binding = objects[("ValidatingAdmissionPolicyBinding", "nodeagent-own-node-only")]
    assert binding["apiVersion"] == "admissionregistration.k8s.io/v1"
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    assert "paramRef" not in binding["spec"] and "paramKind" not in policy["spec"]
    # the API server refuses a message with a line break, and a variable name that is no identifier
    assert all("\n" not in v["message"] and v["reason"] == "Forbidden" for v in policy["spec"]["validations"])
    assert all(v["name"].isidentifier() for v in policy["spec"]["variables"])
    (rule,) = policy["spec"]["matchConstraints"]["resourceRules"]
    assert rule["operations"] == ["UPDATE"] and "nodes" in rule["resources"]  # PATCH is an UPDATE here


def test_policy_names_the_shipped_service_account_and_prefix(objects, policy):
    """CEL is not rewritten by kustomize: if deploy/ renames the ServiceAccount, its namespace or
    the label prefix, the policy must follow, or it silently stops protecting anything."""
    (sa,) = [o for (kind, _), o in objects.items() if kind == "ServiceAccount"]
    ds = objects[("DaemonSet", "nodeagent")]
    assert ds["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]
    username = f"system:serviceaccount:{sa['metadata']['namespace']}:{sa['metadata']['name']}"
    assert username == AGENT
    assert decide(policy, labels(a="b"), user=username).applies
    variables = {v["name"]: v["expression"] for v in policy["spec"]["variables"]}
    config = next(o for (kind, _), o in objects.items() if kind == "ConfigMap")
    prefix = tomllib.loads(config["data"]["config.toml"]).get("label_prefix", Settings().label_prefix)
    assert prefix == DEFAULT_PREFIX == P
    assert variables["prefix"] == repr(prefix)
    # the agent removes the taint config.toml names; the policy admits removing exactly that key
    taint = tomllib.loads(config["data"]["config.toml"]).get("startup_taint") or ""
    assert taint == STARTUP["key"] and variables["startupTaintKey"] == repr(taint)


def test_every_validation_denies_something(policy):
    """No dead rule: each validation is the one that fails for at least one forbidden change."""
    forbidden = {
        "own node": decide(policy, labels(**{P + "x": "1"}), target="node-b"),
        "status": decide(policy, {}, sub_resource="status"),
        "labels": decide(policy, labels(x="1")),
        "annotations": decide(policy, {"metadata": {"annotations": {"x": "1"}}}),
        "taints": decide(policy, {"spec": {"taints": None}}),
        "cordon": decide(policy, {"spec": {"unschedulable": True}}),
        "spec": decide(policy, {"spec": {"providerID": "x"}}),
        "metadata": decide(policy, {"metadata": {"finalizers": ["x"]}}),
    }
    messages = [v["message"] for v in policy["spec"]["validations"]]
    for name, decision in forbidden.items():
        assert len(decision.failures) == 1, (name, decision.failures)
    assert sorted(d.failures[0] for d in forbidden.values()) == sorted(messages)

