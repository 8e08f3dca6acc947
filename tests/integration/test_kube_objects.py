"""Node labels, RuntimeClasses, Events and the doctor check against the loopback HTTPS stand-in
API server (a stand-in: no kube-apiserver can be had here; see tests/support/fake_apiserver.py)."""

import json
from pathlib import Path

import pytest
import yaml

from nodeagent.kube import events, runtimeclass
from nodeagent.kube.checks import runtimeclass_check
from nodeagent.kube.client import KubeClient
from nodeagent.kube.credentials import from_kubeconfig
from nodeagent.kube.labels import OWNED_ANNOTATION
from nodeagent.kube.nodes import apply_labels
from nodeagent.settings import Settings
from tests.support import admission
from tests.support.cli import assert_known_error, run_cli
from tests.support.fake_apiserver import TOKEN, apiserver, kc, kubeconfig_text, pki  # noqa: F401 (fixtures)
from tests.support.tree import diff_snapshots, snapshot

P = "sandbox.nodeagent.io/"
NODE = "/api/v1/nodes/node-a"
RC = "/apis/node.k8s.io/v1/runtimeclasses"
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
AGENT = "system:serviceaccount:nodeagent:nodeagent"


@pytest.fixture
def api(kc):
    with KubeClient(from_kubeconfig(kc), sleep=lambda s: None) as client:
        yield client


def seed_node(apiserver, labels, annotations=None):  # noqa: F811
    apiserver.put_object(NODE, {"apiVersion": "v1", "kind": "Node",
                                "metadata": {"labels": labels, "annotations": annotations or {}},
                                "status": {"nodeInfo": {"kubeletVersion": "v1.31.0"}}})


def test_label_diff_keeps_foreign_removes_stale_and_second_run_writes_nothing(apiserver, api):  # noqa: F811
    seed_node(apiserver, {P + "kata": "true", P + "team": "blue", "kubernetes.io/os": "linux"},
              {OWNED_ANNOTATION: f"{P}kata,{P}state", "other": "kept"})
    desired = {P + "gvisor": "true", P + "state": "ready", P + "kvm": "true"}
    patch = apply_labels(api, "node-a", desired)
    assert patch is not None
    node = apiserver.object(NODE)
    assert node["metadata"]["labels"] == {P + "gvisor": "true", P + "state": "ready", P + "kvm": "true",
                                          P + "team": "blue", "kubernetes.io/os": "linux"}
    assert node["metadata"]["annotations"] == {OWNED_ANNOTATION: f"{P}gvisor,{P}kvm,{P}state", "other": "kept"}
    assert node["status"] == {"nodeInfo": {"kubeletVersion": "v1.31.0"}}
    apiserver.reset_records()
    assert apply_labels(api, "node-a", desired) is None
    assert apiserver.count("PATCH") == 0 and apiserver.count("GET") == 1
    # labels wiped (e.g. node re-registered by kubelet): the next check puts them back
    apiserver.put_object(NODE, {"metadata": {"labels": {"kubernetes.io/os": "linux"}}})
    assert apply_labels(api, "node-a", desired)["metadata"]["labels"] == desired


def test_labels_command_apply_on_a_fake_root(tmp_path, apiserver, kc):  # noqa: F811
    """`labels --apply` from detect on an empty host root: no KVM, no containerd — honest labels."""
    root = tmp_path / "root"
    root.mkdir()
    seed_node(apiserver, {P + "gvisor": "true", "zone": "a"}, {OWNED_ANNOTATION: P + "gvisor"})
    before = snapshot(root)
    proc = run_cli("-o", "json", "labels", "--apply", "--root", str(root), "--kubeconfig", kc, "--node-name", "node-a")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    want = {P + "kvm": "false", P + "nested-virt": "false", P + "state": "installing"}
    assert out["labels"] == want and out["applied"] is True
    assert out["annotations"] == {OWNED_ANNOTATION: ",".join(sorted(want))}
    assert apiserver.object(NODE)["metadata"]["labels"] == {**want, "zone": "a"}  # stale gvisor=true removed
    apiserver.reset_records()
    again = run_cli("-o", "json", "labels", "--apply", "--root", str(root), "--kubeconfig", kc, "--node-name", "node-a")
    assert json.loads(again.stdout)["applied"] is False
    assert apiserver.count("PATCH") == 0
    assert diff_snapshots(before, snapshot(root)) == []


FOREIGN = {"node-restriction.kubernetes.io/zone": "secure", "node-role.kubernetes.io/control-plane": "",
           "kubernetes.io/hostname": "node-a"}


@pytest.fixture
def policy_enforced(apiserver):  # noqa: F811
    """The stand-in judges every write with deploy/'s ValidatingAdmissionPolicy (real CEL, see
    tests/support/admission.py); TOKEN is the agent's ServiceAccount with a token for node-a."""
    docs = list(yaml.safe_load_all((DEPLOY / "admission-policy.yaml").read_text()))
    policy = next(d for d in docs if d["kind"] == "ValidatingAdmissionPolicy")
    binding = next(d for d in docs if d["kind"] == "ValidatingAdmissionPolicyBinding")
    apiserver.admission = admission.standin_hook(policy, binding["metadata"]["name"], {"token-user-0": (AGENT, "node-a")})
    return apiserver


def test_labels_apply_never_removes_foreign_labels_the_annotation_names(tmp_path, policy_enforced, kc):
    """Attack (security review H2): anyone who can edit the Node writes foreign keys into the
    owned-labels annotation; the agent then deleted `node-restriction.kubernetes.io/*` (labels the
    kubelet itself may not set) or the control-plane role. The annotation is a hint, not an
    authority: only keys under the prefix (or nodeagent's own domain, or the Kata compat label)
    are ever removed, so the patch also passes deploy/'s admission policy."""
    apiserver = policy_enforced
    root = tmp_path / "root"
    root.mkdir()
    owned = sorted([*FOREIGN, P + "gvisor"])
    seed_node(apiserver, {**FOREIGN, P + "gvisor": "true"}, {OWNED_ANNOTATION: ",".join(owned)})
    proc = run_cli("-o", "json", "labels", "--apply", "--root", str(root), "--kubeconfig", kc, "--node-name", "node-a")
    assert proc.returncode == 0, proc.stderr
    assert "outside our prefix" in proc.stderr and "node-restriction.kubernetes.io/zone" in proc.stderr
    after = apiserver.object(NODE)
    for key, value in FOREIGN.items():
        assert after["metadata"]["labels"].get(key) == value, key
    assert P + "gvisor" not in after["metadata"]["labels"]  # ours and stale: removed
    assert json.loads(proc.stdout)["patch"]["metadata"]["labels"].keys() <= {P + "gvisor", P + "kvm", P + "nested-virt",
                                                                             P + "state"}
    assert after["metadata"]["annotations"][OWNED_ANNOTATION] == f"{P}kvm,{P}nested-virt,{P}state"
    assert apiserver.count("PATCH", status=200) == 1


def test_a_token_for_one_node_cannot_relabel_another(tmp_path, policy_enforced, kc):
    """Attack (security review H2): root on node-a takes the agent's token and drops
    `gvisor=true` from node-b. RBAC allows the PATCH; the admission policy refuses it, and the
    CLI says so in one error and one hint, with nothing changed anywhere."""
    apiserver = policy_enforced
    root = tmp_path / "root"
    root.mkdir()
    apiserver.put_object("/api/v1/nodes/node-b", {"apiVersion": "v1", "kind": "Node", "spec": {}, "metadata": {
        "labels": {P + "gvisor": "true"}, "annotations": {OWNED_ANNOTATION: P + "gvisor"}}})
    node_b = apiserver.object("/api/v1/nodes/node-b")
    before = snapshot(root)
    proc = run_cli("labels", "--apply", "--root", str(root), "--kubeconfig", kc, "--node-name", "node-b")
    message = assert_known_error(proc)
    assert "403" in message and "ValidatingAdmissionPolicy 'nodeagent-own-node-only'" in message
    assert "only the Node named in its own service-account token" in message
    assert "admission-policy.yaml" in proc.stderr.split("hint:", 1)[1]
    assert apiserver.object("/api/v1/nodes/node-b") == node_b
    assert apiserver.count("PATCH", status=403) == 1 and apiserver.count("PATCH", status=200) == 0
    assert diff_snapshots(before, snapshot(root)) == []


def test_labels_command_unknown_node_is_a_known_error(tmp_path, apiserver, kc):  # noqa: F811
    proc = run_cli("labels", "--apply", "--root", str(tmp_path), "--kubeconfig", kc, "--node-name", "ghost")
    assert "node 'ghost' does not exist" in assert_known_error(proc)
    assert apiserver.count("PATCH") == 0


def test_node_name_from_environment(tmp_path, apiserver, kc):  # noqa: F811
    seed_node(apiserver, {})
    proc = run_cli("labels", "--apply", "--root", str(tmp_path), "--kubeconfig", kc, env={"NODE_NAME": "node-a"})
    assert proc.returncode == 0, proc.stderr
    assert apiserver.count("PATCH", "/nodes/node-a") == 1


def test_runtimeclasses_converge_idempotently(apiserver, api):  # noqa: F811
    settings = Settings()
    wanted = runtimeclass.manifests(settings)
    assert runtimeclass.converge(api, wanted) == {"gvisor": "created", "kata": "created"}
    gvisor = apiserver.object(RC + "/gvisor")
    assert gvisor["handler"] == "runsc" and gvisor["scheduling"]["nodeSelector"] == {P + "gvisor": "true"}
    assert gvisor["overhead"]["podFixed"] == {"cpu": "100m", "memory": "64Mi"}
    apiserver.reset_records()
    assert runtimeclass.converge(api, wanted) == {"gvisor": "unchanged", "kata": "unchanged"}
    assert apiserver.count("GET") == 2 and apiserver.count() == 2  # no writes
    # someone edited the overhead and added their own label: we fix ours, keep theirs
    edited = apiserver.object(RC + "/gvisor")
    edited["overhead"]["podFixed"]["memory"] = "1Gi"
    edited["metadata"]["labels"]["team"] = "x"
    apiserver.put_object(RC + "/gvisor", edited)
    assert runtimeclass.converge(api, wanted)["gvisor"] == "updated"
    fixed = apiserver.object(RC + "/gvisor")
    assert fixed["overhead"]["podFixed"]["memory"] == "64Mi" and fixed["metadata"]["labels"]["team"] == "x"
    # a handler change cannot be an update (immutable field): the object is replaced
    settings.gvisor_handler = "runsc-new"
    assert runtimeclass.converge(api, runtimeclass.manifests(settings, ["gvisor"])) == {"gvisor": "replaced"}
    assert apiserver.object(RC + "/gvisor")["handler"] == "runsc-new"


def test_foreign_runtimeclass_is_left_alone(apiserver, api):  # noqa: F811
    apiserver.put_object(RC + "/gvisor", {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
                                          "metadata": {"labels": {}}, "handler": "gvisor"})
    assert runtimeclass.converge(api, runtimeclass.manifests(Settings(), ["gvisor"])) == {"gvisor": "foreign"}
    assert apiserver.object(RC + "/gvisor")["handler"] == "gvisor"


def test_create_race_with_another_node(apiserver, api):  # noqa: F811
    """The first create hits 409 (another node won); the next look finds an identical object."""
    wanted = runtimeclass.manifests(Settings(), ["kata"])
    apiserver.put_object(RC + "/kata", wanted[0])
    assert runtimeclass.converge(api, wanted) == {"kata": "unchanged"}


def test_runtimeclasses_command(tmp_path, apiserver, kc):  # noqa: F811
    text = run_cli("runtimeclasses")
    assert text.returncode == 0 and "handler: runsc" in text.stdout and "\n---\n" in text.stdout
    as_json = json.loads(run_cli("-o", "json", "runtimeclasses").stdout)
    assert [i["metadata"]["name"] for i in as_json["items"]] == ["gvisor", "kata"]
    cfg = tmp_path / "na.toml"
    cfg.write_text('gvisor_runtimeclass = "sandboxed"\ngvisor_overhead_memory = "100Mi"\nruntime = "gvisor"\n')
    proc = run_cli("-o", "json", "--config", str(cfg), "runtimeclasses", "--apply", "--kubeconfig", kc)
    assert json.loads(proc.stdout)["applied"] == {"sandboxed": "created"}
    assert apiserver.object(RC + "/sandboxed")["overhead"]["podFixed"]["memory"] == "100Mi"
    again = run_cli("-o", "json", "--config", str(cfg), "runtimeclasses", "--apply", "--kubeconfig", kc)
    assert json.loads(again.stdout)["applied"] == {"sandboxed": "unchanged"}
    assert apiserver.count("POST") == 1 and apiserver.count("PUT") == 0


def test_doctor_check_flags_the_name_vs_handler_mistake(apiserver, api):  # noqa: F811
    seed_node(apiserver, {P + "gvisor": "true"})
    settings = Settings(node_name="node-a")
    assert runtimeclass_check(settings, ["runc", "runsc"], api)[0] == "ok"  # nothing defined yet
    # the classic mistake: handler named after the RuntimeClass
    apiserver.put_object(RC + "/gvisor", {"metadata": {"labels": {}}, "handler": "gvisor",
                                          "scheduling": {"nodeSelector": {P + "gvisor": "true"}}})
    apiserver.put_object(RC + "/gpu", {"metadata": {}, "handler": "nvidia",
                                       "scheduling": {"nodeSelector": {"gpu": "true"}}})  # other nodes: ignored
    status, summary, hint = runtimeclass_check(settings, ["runc", "runsc"], api)
    assert status == "fail" and "gvisor (handler 'gvisor')" in summary and "gpu" not in summary
    assert "runsc" in hint
    apiserver.put_object(RC + "/gvisor", {"metadata": {}, "handler": "runsc",
                                          "scheduling": {"nodeSelector": {P + "gvisor": "true"}}})
    apiserver.put_object(RC + "/wasm", {"metadata": {}, "handler": "spin"})  # no nodeSelector: maybe elsewhere
    status, summary, _ = runtimeclass_check(settings, ["runc", "runsc"], api)
    assert status == "warn" and "wasm" in summary


def test_doctor_check_without_credentials_skips(monkeypatch):
    for var in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST"):
        monkeypatch.delenv(var, raising=False)
    assert runtimeclass_check(Settings(), ["runsc"])[0] == "skip"


def test_node_events(apiserver, api):  # noqa: F811
    created = events.record(api, "node-a", "ContainerdConfigRolledBack", "CRI did not serve runsc; restored config",
                            event_type="Warning")
    assert created["metadata"]["name"].startswith("node-a.nodeagent.")
    stored = apiserver.object("/api/v1/namespaces/default/events/" + created["metadata"]["name"])
    assert stored["involvedObject"] == {"apiVersion": "v1", "kind": "Node", "name": "node-a", "uid": "node-a"}
    assert stored["type"] == "Warning" and stored["source"]["component"] == "nodeagent"
    apiserver.inject(403, times=10)
    assert events.record(api, "node-a", "SandboxRuntimeInstalled", "ok") is None  # best effort, no raise


@pytest.mark.parametrize("case", ["insecure", "missing", "no-context", "exec"])
def test_bad_kubeconfig_is_one_error_and_hint_and_nothing_is_written(tmp_path, apiserver, pki, case):  # noqa: F811
    path = tmp_path / "kc"
    cluster = {"certificate-authority": str(pki.ca_cert)}
    user = {"token": TOKEN}
    if case == "insecure":
        cluster = {"insecure-skip-tls-verify": True}
    elif case == "exec":
        user = {"exec": {"command": "get-token"}}
    if case != "missing":
        path.write_text(kubeconfig_text(apiserver.url, user=user, cluster_extra=cluster))
    if case == "no-context":
        doc = json.loads(path.read_text())
        doc["current-context"] = ""
        path.write_text(json.dumps(doc))
    proc = run_cli("runtimeclasses", "--apply", "--kubeconfig", str(path))
    message = assert_known_error(proc)
    assert {"insecure": "insecure-skip-tls-verify", "missing": "does not exist", "no-context": "no current-context",
            "exec": "exec apiVersion None is not supported"}[case] in message
    assert apiserver.count() == 0


def test_label_patch_survives_throttling_and_a_5xx(apiserver, api):  # noqa: F811
    seed_node(apiserver, {"zone": "a"})
    apiserver.inject(429, times=1, method="PATCH", retry_after="0")
    apiserver.inject(503, times=1, method="PATCH")
    assert apply_labels(api, "node-a", {P + "state": "ready"})
    assert [r.status for r in apiserver.records if r.method == "PATCH"] == [429, 503, 200]
    assert apiserver.object(NODE)["metadata"]["labels"] == {"zone": "a", P + "state": "ready"}


def _measure_report(gvisor: dict | None) -> dict:
    """The shape `verify --measure -o json` writes (tests/integration/test_verify.py makes a real one)."""
    measured = {"kata": {"runtime": "kata", "method": "cri", "skipped": True, "reason": "Kata is not installed"}}
    if gvisor is not None:
        measured["gvisor"] = gvisor
    return {"ok": True, "runtimes": {}, "measure": measured}


def test_runtimeclasses_take_the_measured_overhead(tmp_path, apiserver, kc):  # noqa: F811
    report = tmp_path / "measured.json"
    report.write_text(json.dumps(_measure_report({"runtime": "gvisor", "skipped": False, "sandboxes": 3,
                                                  "recommended": {"memory": "55Mi", "cpu": "10m"}})))
    proc = run_cli("-o", "json", "runtimeclasses", "--overhead-from", str(report), "--apply", "--kubeconfig", kc)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["overhead_from"] == {"file": str(report), "runtimes": {"gvisor": {"memory": "55Mi", "cpu": "10m"}}}
    assert apiserver.object(RC + "/gvisor")["overhead"]["podFixed"] == {"cpu": "10m", "memory": "55Mi"}
    # Kata was not measured: it keeps its configured overhead
    assert apiserver.object(RC + "/kata")["overhead"]["podFixed"] == {"cpu": "250m", "memory": "160Mi"}
    # the settings key does the same
    cfg = tmp_path / "na.toml"
    cfg.write_text(f'overhead_from = "{report}"\nruntime = "gvisor"\n')
    shown = json.loads(run_cli("-o", "json", "--config", str(cfg), "runtimeclasses").stdout)
    assert shown["items"][0]["overhead"]["podFixed"] == {"cpu": "10m", "memory": "55Mi"}


OVERHEAD_FILE_CASES = {
    "missing": (None, "cannot read the overhead file"),
    "not-json": (b"overhead: 55Mi\n", "is not JSON"),
    "binary": (b"\xff\xfe\x00garbage", "is not JSON"),
    "no-measure-key": (b'{"ok": true, "runtimes": {}}', "no 'measure' object"),
    "a-list": (b"[1, 2]", "no 'measure' object"),
    "only-skipped": (json.dumps(_measure_report(None)).encode(), "holds no measured recommendation"),
    "bad-memory-unit": (json.dumps(_measure_report({"recommended": {"memory": "55MB", "cpu": "10m"}})).encode(),
                        "expected memory like '64Mi'"),
    "negative-cpu": (json.dumps(_measure_report({"recommended": {"memory": "55Mi", "cpu": "-10m"}})).encode(),
                     "expected memory like '64Mi'"),
    "injection": (json.dumps(_measure_report({"recommended": {"memory": "55Mi\nhandler: runc", "cpu": "10m"}})).encode(),
                  "expected memory like '64Mi'"),
    "huge": (b'{"measure": {}, "pad": "' + b"x" * (4 << 20) + b'"}', "larger than 4 MiB"),
}


@pytest.mark.parametrize("case", sorted(OVERHEAD_FILE_CASES))
def test_bad_overhead_file_is_one_error_and_nothing_is_written(tmp_path, apiserver, kc, case):  # noqa: F811
    content, expected = OVERHEAD_FILE_CASES[case]
    root = tmp_path / "root"
    root.mkdir()
    report = root / "measured.json"
    if content is not None:
        report.write_bytes(content)
    before = snapshot(root)
    proc = run_cli("--root", str(root), "runtimeclasses", "--overhead-from", str(report), "--apply", "--kubeconfig", kc)
    assert expected in assert_known_error(proc)
    assert "verify --measure" in proc.stderr
    assert diff_snapshots(before, snapshot(root)) == []
    assert apiserver.count() == 0


# -- Kata shims (issue 15 item 1) ------------------------------------------------------------------
def test_runtimeclasses_for_kata_shims(tmp_path, apiserver, kc):  # noqa: F811
    """One RuntimeClass per shim: name = handler = kata-<shim>, its own label, kata-deploy's overhead
    unless kata_shim_overheads says otherwise."""
    out = json.loads(run_cli("-o", "json", "runtimeclasses", "--kata-shims", "qemu,clh").stdout)
    got = {i["metadata"]["name"]: (i["handler"], i["scheduling"]["nodeSelector"], i["overhead"]["podFixed"])
           for i in out["items"]}
    assert list(got) == ["gvisor", "kata", "kata-qemu", "kata-clh"]
    assert got["kata-qemu"] == ("kata-qemu", {P + "kata-qemu": "true"}, {"cpu": "250m", "memory": "160Mi"})
    assert got["kata-clh"] == ("kata-clh", {P + "kata-clh": "true"}, {"cpu": "250m", "memory": "130Mi"})
    cfg = tmp_path / "na.toml"
    cfg.write_text('runtime = "kata"\nkata_shims = ["qemu", "dragonball"]\n'
                   'kata_shim_overheads = ["dragonball=200Mi/300m", "qemu=180Mi"]\n')
    proc = run_cli("-o", "json", "--config", str(cfg), "runtimeclasses", "--apply", "--kubeconfig", kc)
    assert json.loads(proc.stdout)["applied"] == {"kata": "created", "kata-qemu": "created", "kata-dragonball": "created"}
    assert apiserver.object(RC + "/kata-dragonball")["overhead"]["podFixed"] == {"cpu": "300m", "memory": "200Mi"}
    assert apiserver.object(RC + "/kata-qemu")["overhead"]["podFixed"] == {"cpu": "250m", "memory": "180Mi"}


BAD_SHIM_SETTINGS = {
    "unknown-shim": (["--kata-shims", "qemu,hyperv"], "unknown Kata shim 'hyperv'"),
    "overhead-no-equals": (["--kata-shims", "qemu", "--kata-shim-overheads", "qemu"], "invalid kata_shim_overheads entry 'qemu'"),
    "overhead-bad-memory": (["--kata-shims", "qemu", "--kata-shim-overheads", "qemu=lots"], "'qemu=lots'"),
    "overhead-bad-cpu": (["--kata-shims", "qemu", "--kata-shim-overheads", "qemu=100Mi/-1"], "'qemu=100Mi/-1'"),
    "overhead-unknown-shim": (["--kata-shims", "qemu", "--kata-shim-overheads", "nope=1Gi"], "'nope=1Gi'"),
    "overhead-injection": (["--kata-shims", "qemu", "--kata-shim-overheads", "qemu=1Gi\nhandler: runc"], "invalid kata_shim_overheads"),
}


@pytest.mark.parametrize("case", sorted(BAD_SHIM_SETTINGS))
def test_bad_kata_shim_settings_are_one_error_and_nothing_is_written(tmp_path, apiserver, kc, case):  # noqa: F811
    args, expected = BAD_SHIM_SETTINGS[case]
    root = tmp_path / "root"
    root.mkdir()
    before = snapshot(root)
    proc = run_cli("--root", str(root), "runtimeclasses", *args, "--apply", "--kubeconfig", kc)
    assert expected in assert_known_error(proc, 64)
    assert diff_snapshots(before, snapshot(root)) == []
    assert apiserver.count() == 0
