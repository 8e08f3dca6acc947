"""`kubectl kustomize deploy/` renders, and the rendered objects say what the DaemonSet needs.

kubectl (client only) comes with this machine kind's image, not from Debian; the test skips
with that reason only when it is absent.
"""

import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from nodeagent import settings as settings_mod
from nodeagent.kube import runtimeclass
from nodeagent.settings import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
KUBECTL = shutil.which("kubectl")


@pytest.fixture(scope="module")
def objects():
    if KUBECTL is None:
        pytest.skip("kubectl is not installed (it ships with this machine image, not with Debian)")
    out = subprocess.run([KUBECTL, "kustomize", str(DEPLOY)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def rules(role):
    return {(g, r): set(rule["verbs"]) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}


def test_rbac_is_least_privilege(objects):
    cluster = rules(objects[("ClusterRole", "nodeagent")])
    assert cluster == {
        ("", "nodes"): {"get", "patch"},
        ("node.k8s.io", "runtimeclasses"): {"get", "list"},
        ("", "events"): {"create", "patch"},
    }
    role = objects[("Role", "nodeagent")]
    assert role["metadata"]["namespace"] == "nodeagent"
    assert rules(role) == {("coordination.k8s.io", "leases"): {"get", "list", "watch", "create", "update"},
                           ("", "configmaps"): {"create"},  # the rule without resourceNames
                           ("apps", "daemonsets"): {"get"}}
    cm_rules = [r for r in role["rules"] if "configmaps" in r["resources"]]
    assert [(r.get("resourceNames"), sorted(r["verbs"])) for r in cm_rules] == [
        (["nodeagent-rollout"], ["get", "update"]), (None, ["create"])]
    ds_rule = next(r for r in role["rules"] if "daemonsets" in r["resources"])
    assert ds_rule["resourceNames"] == ["nodeagent"]
    for kind in ("ClusterRoleBinding", "RoleBinding"):
        binding = objects[(kind, "nodeagent")]
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "nodeagent", "namespace": "nodeagent"}]
    assert objects[("ServiceAccount", "nodeagent")]["metadata"]["namespace"] == "nodeagent"


def test_daemonset_downward_api_mounts_probes_and_scheduling(objects):
    ds = objects[("DaemonSet", "nodeagent")]
    spec = ds["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    env = {e["name"]: e for e in c["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert c["args"][:1] == ["agent"] and c["args"][c["args"].index("--root") + 1] == "/host"
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert mounts["host-root"]["mountPath"] == "/host" and volumes["host-root"]["hostPath"]["path"] == "/"
    assert mounts["config"]["mountPath"] == "/etc/nodeagent"
    config_map = volumes["config"]["configMap"]["name"]
    assert config_map.startswith("nodeagent-config-")  # hashed by the generator: a change rolls the pods
    port = {p["name"]: p["containerPort"] for p in c["ports"]}["http-metrics"]
    assert port == 9101
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http-metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http-metrics"}
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    assert c["securityContext"]["privileged"] is True
    assert spec.get("hostPID") is False  # restart goes through systemd's private socket
    assert spec["serviceAccountName"] == "nodeagent"
    assert {"operator": "Exists"} in spec["tolerations"]
    assert ds["spec"]["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}
    assert c["image"] == "localhost/nodeagent:0.1.0"
    # the agent listens where the probes look
    cm = next(o for (k, n), o in objects.items() if k == "ConfigMap" and n == config_map)
    listen = tomllib.loads(cm["data"]["config.toml"])["listen"]
    assert listen.endswith(f":{port}")
    # the kubelet dials the pod IP: the loopback default of systemd hosts would fail every probe
    assert not listen.startswith(("127.", "[::1]", "localhost")), listen
    assert settings_mod.Settings().listen.startswith("127.0.0.1:")


def test_config_map_is_valid_nodeagent_settings(objects, tmp_path):
    cm = next(o for (k, _), o in objects.items() if k == "ConfigMap")
    path = tmp_path / "config.toml"
    path.write_text(cm["data"]["config.toml"])
    loaded = settings_mod.load({"config": str(path)}, environ={})
    assert loaded.max_concurrent_restarts >= 1


def test_runtimeclasses_match_what_nodeagent_prints(objects):
    want = {m["metadata"]["name"]: m for m in runtimeclass.manifests(Settings())}
    shipped = {n: o for (k, n), o in objects.items() if k == "RuntimeClass"}
    assert set(shipped) == set(want)
    for name, obj in shipped.items():
        for field in ("apiVersion", "handler", "overhead", "scheduling"):
            assert obj[field] == want[name][field], (name, field)
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "nodeagent"


def test_namespace_allows_privileged_pods(objects):
    ns = objects[("Namespace", "nodeagent")]
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"


def test_admission_policy_ships_with_its_binding(objects):
    """RBAC alone lets every node's token patch every Node; the policy (judged for real in
    tests/unit/kube/test_admission_policy.py) is what limits it to the agent's own Node."""
    policy = objects[("ValidatingAdmissionPolicy", "nodeagent-own-node-only")]
    binding = objects[("ValidatingAdmissionPolicyBinding", "nodeagent-own-node-only")]
    assert policy["apiVersion"] == binding["apiVersion"] == "admissionregistration.k8s.io/v1"
    assert binding["spec"] == {"policyName": "nodeagent-own-node-only", "validationActions": ["Deny"]}
    assert policy["spec"]["failurePolicy"] == "Fail"


def test_kata_shim_runtimeclasses_come_with_a_component_not_by_default(objects, tmp_path):
    """The base ships gvisor and kata only; an overlay with components/kata-shims adds one
    RuntimeClass per shim, equal to what `nodeagent runtimeclasses --kata-shims ...` prints, and
    gives the agent the same list (NODEAGENT_KATA_SHIMS)."""
    assert {n for (k, n) in objects if k == "RuntimeClass"} == {"gvisor", "kata"}
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    rel = lambda p: os.path.relpath(p, overlay)  # kustomize wants relative paths
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - {rel(DEPLOY)}\ncomponents:\n  - {rel(DEPLOY / 'components/kata-shims')}\n")
    out = subprocess.run([KUBECTL, "kustomize", str(overlay)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(out.stdout) if d}
    (c,) = docs[("DaemonSet", "nodeagent")]["spec"]["template"]["spec"]["containers"]
    shims = {e["name"]: e.get("value") for e in c["env"]}["NODEAGENT_KATA_SHIMS"]
    settings = settings_mod.load({}, {"NODEAGENT_KATA_SHIMS": shims})
    want = {m["metadata"]["name"]: m for m in runtimeclass.manifests(settings)}
    shipped = {n: o for (k, n), o in docs.items() if k == "RuntimeClass"}
    assert set(shipped) == set(want) == {"gvisor", "kata", "kata-qemu", "kata-clh", "kata-dragonball",
                                         "kata-qemu-runtime-rs"}
    for name, obj in shipped.items():
        for field in ("apiVersion", "handler", "overhead", "scheduling"):
            assert obj[field] == want[name][field], (name, field)
