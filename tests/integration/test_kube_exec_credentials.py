"""kubeconfig `exec` credential plugins, run for real against the loopback HTTPS STAND-IN API server.

The stand-in (tests/support/fake_apiserver.py) is not Kubernetes — no kube-apiserver can be had
here — but it checks the bearer token (or client certificate) of every request. The plugin is a
real executable the test writes, run by nodeagent the way kubectl runs `aws eks get-token`,
`gke-gcloud-auth-plugin` or `kubelogin`: it records what it was given (argv, KUBERNETES_EXEC_INFO,
environment) and prints an ExecCredential whose token is `exec-tok-<n>` for its n-th run.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import sys
import time

import pytest

from nodeagent.errors import KubeError
from nodeagent.kube.client import KubeClient, KubeUnauthorized
from nodeagent.kube.credentials import from_kubeconfig
from tests.support.cli import assert_known_error, run_cli
from tests.support.fake_apiserver import apiserver, kubeconfig_text, pki  # noqa: F401 (fixtures)
from tests.support.tree import diff_snapshots, snapshot

V1 = "client.authentication.k8s.io/v1"
V1BETA1 = "client.authentication.k8s.io/v1beta1"
NODE = "/api/v1/nodes/node-a"
RC = "/apis/node.k8s.io/v1/runtimeclasses"

PLUGIN = """#!{python}
import datetime as dt, json, os, sys
state = os.environ["PLUGIN_STATE"]
runs = os.path.join(state, "runs.jsonl")
n = (sum(1 for _ in open(runs)) if os.path.exists(runs) else 0) + 1
with open(runs, "a") as fh:
    fh.write(json.dumps({{"argv": sys.argv[1:], "info": os.environ.get("KUBERNETES_EXEC_INFO"),
                         "path": os.environ.get("PATH"), "region": os.environ.get("AWS_REGION")}}) + "\\n")
mode = open(os.path.join(state, "mode")).read().strip() if os.path.exists(os.path.join(state, "mode")) else "token"
version = os.environ.get("PLUGIN_API_VERSION", "{v1}")
status = {{"token": "exec-tok-%d" % n}}
if os.environ.get("PLUGIN_EXPIRES_IN"):
    when = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=int(os.environ["PLUGIN_EXPIRES_IN"]))
    status["expirationTimestamp"] = when.strftime("%Y-%m-%dT%H:%M:%SZ")
if mode == "fail":
    print("error: token has expired, run `aws sso login`", file=sys.stderr)
    sys.exit(3)
if mode == "garbage":
    print("exec-tok-%d is not JSON" % n)
    sys.exit(0)
if mode == "wrong-version":
    version = "{v1beta1}" if version == "{v1}" else "{v1}"
if mode == "no-token":
    status = {{}}
if mode == "cert":
    status = {{"clientCertificateData": open(os.environ["PLUGIN_CERT"]).read(),
              "clientKeyData": open(os.environ["PLUGIN_KEY"]).read()}}
print(json.dumps({{"apiVersion": version, "kind": "ExecCredential", "status": status}}))
"""


@pytest.fixture
def plugin(tmp_path):
    """The plugin executable and its state dir (runs.jsonl: one line per run; mode: how to misbehave)."""
    state = tmp_path / "plugin-state"
    state.mkdir()
    path = tmp_path / "bin" / "fake-get-token"
    path.parent.mkdir()
    path.write_text(PLUGIN.format(python=sys.executable, v1=V1, v1beta1=V1BETA1))
    path.chmod(0o755)
    return path, state


def runs(state) -> list[dict]:
    f = state / "runs.jsonl"
    return [json.loads(line) for line in f.read_text().splitlines()] if f.exists() else []


def exec_kubeconfig(tmp_path, apiserver, pki, plugin, *, api_version=V1, env=None, cluster=None, **exec_extra):  # noqa: F811
    path, state = plugin
    user = {"exec": {"apiVersion": api_version, "command": str(path), "args": ["token", "--cluster", "standin"],
                     "env": [{"name": "PLUGIN_STATE", "value": str(state)}, {"name": "AWS_REGION", "value": "eu-west-1"},
                             *({"name": k, "value": v} for k, v in (env or {}).items())],
                     "interactiveMode": "IfAvailable", **exec_extra}}
    kc = tmp_path / "kubeconfig"
    kc.write_text(kubeconfig_text(apiserver.url, user=user,
                                  cluster_extra=cluster or {"certificate-authority": str(pki.ca_cert)}))
    return str(kc)


def seed(apiserver):  # noqa: F811
    apiserver.put_object(NODE, {"apiVersion": "v1", "kind": "Node", "metadata": {"labels": {}}})


def test_token_is_cached_until_expiry_then_the_plugin_runs_again(tmp_path, apiserver, pki, plugin):  # noqa: F811
    seed(apiserver)
    apiserver.tokens = {"exec-tok-1", "exec-tok-2"}
    kc = exec_kubeconfig(tmp_path, apiserver, pki, plugin, env={"PLUGIN_EXPIRES_IN": "3600"})
    creds = from_kubeconfig(kc)
    now = [time.time()]
    creds.exec_plugin.clock = lambda: now[0]  # the plugin's clock stays real: it stamps now + 1 h
    with KubeClient(creds, retries=0) as api:
        assert api.get(NODE) and api.get(NODE) and api.get("/api/v1/nodes")
        assert len(runs(plugin[1])) == 1  # one run, three requests
        assert {r.user for r in apiserver.records} == {"token-user-0"}  # exec-tok-1
        now[0] += 3600 - 5  # inside the renewal margin before expirationTimestamp
        assert api.get(NODE)
        assert len(runs(plugin[1])) == 2 and apiserver.records[-1].user == "token-user-1"  # exec-tok-2
    first = runs(plugin[1])[0]
    assert first["argv"] == ["token", "--cluster", "standin"]
    assert json.loads(first["info"]) == {"apiVersion": V1, "kind": "ExecCredential", "spec": {"interactive": False}}
    assert first["region"] == "eu-west-1" and first["path"] == os.environ["PATH"]  # env merged onto ours


def test_an_already_expired_credential_runs_the_plugin_for_every_request(tmp_path, apiserver, pki, plugin):  # noqa: F811
    seed(apiserver)
    apiserver.tokens = {f"exec-tok-{i}" for i in range(1, 4)}
    kc = exec_kubeconfig(tmp_path, apiserver, pki, plugin, env={"PLUGIN_EXPIRES_IN": "-60"})
    with KubeClient(from_kubeconfig(kc), retries=0) as api:
        for _ in range(3):
            assert api.get(NODE)
    assert len(runs(plugin[1])) == 3
    assert [r.user for r in apiserver.records] == ["token-user-0", "token-user-1", "token-user-2"]


def test_a_401_runs_the_plugin_again_once(tmp_path, apiserver, pki, plugin):  # noqa: F811
    seed(apiserver)
    apiserver.tokens = {"exec-tok-1"}
    kc = exec_kubeconfig(tmp_path, apiserver, pki, plugin)  # no expirationTimestamp: kept for the process
    with KubeClient(from_kubeconfig(kc), retries=0) as api:
        assert api.get(NODE)
        apiserver.tokens = {"exec-tok-2"}  # the cloud revoked the first token early
        assert api.get(NODE)
        assert len(runs(plugin[1])) == 2
        apiserver.tokens = {"never-issued"}
        with pytest.raises(KubeUnauthorized) as err:
            api.get(NODE)
    assert len(runs(plugin[1])) == 3  # one fresh try per request, not a loop
    assert "exec plugin fake-get-token" in err.value.message and "exec-tok" not in err.value.message
    assert "credential plugin's fresh token was refused" in err.value.hint
    assert apiserver.count(status=401) == 3


def test_cluster_info_only_with_provide_cluster_info(tmp_path, apiserver, pki, plugin):  # noqa: F811
    seed(apiserver)
    apiserver.tokens = {"exec-tok-1"}
    ca_data = base64.b64encode(pki.ca_cert.read_bytes()).decode()
    cluster = {"certificate-authority-data": ca_data,
               "extensions": [{"name": "client.authentication.k8s.io/exec", "extension": {"audience": "standin"}}]}
    kc = exec_kubeconfig(tmp_path, apiserver, pki, plugin, api_version=V1BETA1, env={"PLUGIN_API_VERSION": V1BETA1},
                         cluster=cluster, provideClusterInfo=True)
    with KubeClient(from_kubeconfig(kc), retries=0) as api:
        assert api.get(NODE)
    info = json.loads(runs(plugin[1])[0]["info"])
    assert info == {"apiVersion": V1BETA1, "kind": "ExecCredential", "spec": {"interactive": False, "cluster": {
        "server": apiserver.url, "certificate-authority-data": ca_data, "config": {"audience": "standin"}}}}


def test_client_certificate_from_the_plugin(tmp_path, apiserver, pki, plugin):  # noqa: F811
    seed(apiserver)
    (plugin[1] / "mode").write_text("cert")
    kc = exec_kubeconfig(tmp_path, apiserver, pki, plugin,
                         env={"PLUGIN_CERT": str(pki.client_cert), "PLUGIN_KEY": str(pki.client_key)})
    creds = from_kubeconfig(kc)
    with KubeClient(creds, retries=0) as api:
        assert api.get(NODE)
        cert, key = creds.client_cert
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert apiserver.records[-1].user == "system:node:node-a"
    assert not os.path.exists(cert) and not os.path.exists(key)  # private copies removed on close


def test_admin_commands_and_doctor_use_the_plugin(tmp_path, apiserver, pki, plugin):  # noqa: F811
    seed(apiserver)
    apiserver.tokens = {f"exec-tok-{i}" for i in range(1, 4)}
    kc = exec_kubeconfig(tmp_path, apiserver, pki, plugin, env={"PLUGIN_EXPIRES_IN": "3600"})
    root = tmp_path / "root"
    root.mkdir()
    proc = run_cli("-o", "json", "runtimeclasses", "--apply", "--kubeconfig", kc, "-vv")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["applied"] == {"gvisor": "created", "kata": "created"}
    assert "exec-tok" not in proc.stderr + proc.stdout  # the token is never logged
    proc = run_cli("-o", "json", "labels", "--apply", "--root", str(root), "--kubeconfig", kc, "--node-name", "node-a")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["applied"] is True
    proc = run_cli("-o", "json", "doctor", "--root", str(root), "--kubeconfig", kc, "--node-name", "node-a")
    check = {c["id"]: c for c in json.loads(proc.stdout)["checks"]}["runtimeclasses"]
    assert check["status"] != "skip" and "could not" not in check["summary"], check
    assert len(runs(plugin[1])) == 3  # one run per command: every command is its own process
    assert {r.user for r in apiserver.records} == {"token-user-0", "token-user-1", "token-user-2"}


# --- bad input: one error: and one hint: line, exit 2, no request reaches the API, the root unchanged ---

BAD = {
    # case: (plugin mode, exec fields, expected in the error, expected in the hint)
    "exec-plugin-missing": (None, {"command": "no-such-get-token", "installHint": "Install it with:\n  brew install x"},
                            "'no-such-get-token', which is not on PATH", "Install it with: brew install x"),
    "exec-plugin-exits-non-zero": ("fail", {}, "exited with code 3: error: token has expired", "by hand"),
    "exec-plugin-prints-no-json": ("garbage", {}, "not JSON", "update the credential plugin"),
    "exec-plugin-wrong-api-version": ("wrong-version", {}, f"apiVersion '{V1BETA1}', but the kubeconfig asks for '{V1}'",
                                      "apiVersion"),
    "exec-plugin-returns-no-token": ("no-token", {}, "neither a token nor a client certificate", "update"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_exec_plugin_is_one_error_and_hint(tmp_path, apiserver, pki, plugin, case):  # noqa: F811
    mode, fields, in_error, in_hint = BAD[case]
    if mode:
        (plugin[1] / "mode").write_text(mode)
    kc = exec_kubeconfig(tmp_path, apiserver, pki, plugin, **fields)
    root = tmp_path / "root"
    root.mkdir()
    before = snapshot(root)
    proc = run_cli("runtimeclasses", "--apply", "--root", str(root), "--kubeconfig", kc)
    message = assert_known_error(proc)
    assert in_error in message
    assert in_hint in next(l for l in proc.stderr.splitlines() if l.startswith("hint:"))
    assert "exec-tok" not in proc.stderr + proc.stdout
    assert apiserver.count() == 0
    assert diff_snapshots(before, snapshot(root)) == []


def test_plugin_that_hangs_is_cut_off(tmp_path, apiserver, pki, plugin):  # noqa: F811
    hang = tmp_path / "bin" / "hang"
    hang.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(60)\n")
    hang.chmod(0o755)
    kc = exec_kubeconfig(tmp_path, apiserver, pki, plugin, command=str(hang))
    creds = from_kubeconfig(kc)
    creds.exec_plugin.timeout = 0.5
    with KubeClient(creds, retries=0) as api, pytest.raises(KubeError, match="did not answer within"):
        api.get(NODE)
    assert apiserver.count() == 0


# --- the real cloud plugins, where this machine has them (neither is a nodeagent dependency) -----

AWS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"  # AWS's documented example key pair: signs, reaches nothing
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def eks_token_review(token: str) -> str | None:
    """What the stand-in accepts as an EKS token: `k8s-aws-v1.` + base64url of an STS
    GetCallerIdentity URL presigned with our key and the signed `x-k8s-aws-id` (cluster) header.
    EKS hands that URL to STS, which checks the signature; the stand-in checks the shape only."""
    from urllib.parse import parse_qs, urlsplit

    if not token.startswith("k8s-aws-v1."):
        return None
    raw = token[len("k8s-aws-v1."):]
    url = urlsplit(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode())
    q = parse_qs(url.query)
    if url.scheme != "https" or not (url.hostname or "").startswith("sts.") or q.get("Action") != ["GetCallerIdentity"]:
        return None
    if "x-k8s-aws-id" not in q.get("X-Amz-SignedHeaders", [""])[0].split(";"):
        return None
    if not q.get("X-Amz-Credential", [""])[0].startswith(AWS_KEY_ID + "/"):
        return None
    return f"arn:aws:iam::000000000000:user/{AWS_KEY_ID}"


def cloud_kubeconfig(tmp_path, apiserver, pki, user: dict) -> str:  # noqa: F811
    kc = tmp_path / "kubeconfig"
    kc.write_text(kubeconfig_text(apiserver.url, user=user, cluster_extra={"certificate-authority": str(pki.ca_cert)}))
    return str(kc)


@pytest.mark.skipif(shutil.which("aws") is None, reason="the AWS CLI (`aws`, PyPI awscli) is not installed here")
def test_real_aws_eks_get_token(tmp_path, apiserver, pki):  # noqa: F811
    """The kubeconfig `aws eks update-kubeconfig` writes, with the real AWS CLI minting the token
    offline (a presigned URL), an isolated HOME and AWS's example key pair."""
    seed(apiserver)
    apiserver.token_review = eks_token_review
    home = tmp_path / "home"
    home.mkdir()
    user = {"exec": {"apiVersion": V1BETA1, "command": "aws",
                     "args": ["--region", "eu-west-1", "eks", "get-token", "--cluster-name", "prod", "--output", "json"],
                     "env": [{"name": "HOME", "value": str(home)}, {"name": "AWS_ACCESS_KEY_ID", "value": AWS_KEY_ID},
                             {"name": "AWS_SECRET_ACCESS_KEY", "value": AWS_SECRET},
                             {"name": "AWS_EC2_METADATA_DISABLED", "value": "true"}]}}
    kc = cloud_kubeconfig(tmp_path, apiserver, pki, user)
    creds = from_kubeconfig(kc)
    with KubeClient(creds, retries=0) as api:
        assert api.get(NODE) and api.get(NODE)
        assert creds.exec_plugin.runs == 1  # aws says the token is good for ~14 minutes
    assert {r.user for r in apiserver.records} == {f"arn:aws:iam::000000000000:user/{AWS_KEY_ID}"}
    proc = run_cli("-o", "json", "runtimeclasses", "--apply", "--kubeconfig", kc, "-vv")
    assert proc.returncode == 0, proc.stderr
    assert "k8s-aws-v1." not in proc.stderr + proc.stdout  # the token is never logged


@pytest.mark.skipif(shutil.which("gke-gcloud-auth-plugin") is None,
                    reason="gke-gcloud-auth-plugin (Google Cloud CLI's Debian package) is not installed here")
def test_real_gke_plugin_without_a_login_is_one_error_and_hint(tmp_path, apiserver, pki):  # noqa: F811
    """The kubeconfig `gcloud container clusters get-credentials` writes, on a machine with no
    gcloud login (a private CLOUDSDK_CONFIG): the plugin's own reason, nothing sent, root unchanged."""
    user = {"exec": {"apiVersion": V1BETA1, "command": "gke-gcloud-auth-plugin", "provideClusterInfo": True,
                     "interactiveMode": "IfAvailable",
                     "installHint": "Install gke-gcloud-auth-plugin for use with kubectl by following "
                                    "https://cloud.google.com/kubernetes-engine/docs/how-to/cluster-access-for-kubectl#install_plugin",
                     "env": [{"name": "CLOUDSDK_CONFIG", "value": str(tmp_path / "gcloud")},
                             {"name": "HOME", "value": str(tmp_path)}]}}
    kc = cloud_kubeconfig(tmp_path, apiserver, pki, user)
    root = tmp_path / "root"
    root.mkdir()
    before = snapshot(root)
    message = assert_known_error(run_cli("runtimeclasses", "--apply", "--root", str(root), "--kubeconfig", kc))
    assert "gke-gcloud-auth-plugin exited with code 1" in message and "active account" in message
    assert apiserver.count() == 0
    assert diff_snapshots(before, snapshot(root)) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="the check applies when nodeagent runs as root")
@pytest.mark.parametrize("case", ["exec-kubeconfig-world-writable", "exec-kubeconfig-owned-by-another-user"])
def test_root_runs_no_plugin_from_a_kubeconfig_others_can_write(tmp_path, apiserver, pki, plugin, case):  # noqa: F811
    """A kubeconfig someone else could have written would be a way to root: refused before any run."""
    kc = exec_kubeconfig(tmp_path, apiserver, pki, plugin)
    if case == "exec-kubeconfig-world-writable":
        os.chmod(kc, 0o666)
    else:
        os.chown(kc, 65534, 65534)
    root = tmp_path / "root"
    root.mkdir()
    before = snapshot(root)
    message = assert_known_error(run_cli("runtimeclasses", "--apply", "--root", str(root), "--kubeconfig", kc))
    assert "names a credential plugin to run as root" in message
    assert runs(plugin[1]) == []  # the plugin never ran
    assert apiserver.count() == 0
    assert diff_snapshots(before, snapshot(root)) == []
