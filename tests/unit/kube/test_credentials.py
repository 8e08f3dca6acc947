"""Kubeconfig / in-cluster credential loading: what is accepted, what is refused, and why."""

import base64
import json
import os
import stat
import tempfile

import pytest

from nodeagent.errors import KubeError
from nodeagent.kube.credentials import from_kubeconfig, in_cluster, load_credentials


def write_kc(path, server="https://127.0.0.1:6443", cluster=None, user=None, extra=None):
    doc = {
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": server, **(cluster or {})}}],
        "users": [{"name": "u", "user": user or {"token": "abc"}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u", "namespace": "ns1"}}],
    }
    doc.update(extra or {})
    path.write_text(json.dumps(doc))
    return str(path)


def test_yaml_kubeconfig_with_relative_paths(tmp_path):
    (tmp_path / "ca.crt").write_text("CA")
    (tmp_path / "tok").write_text("from-file\n")
    kc = tmp_path / "config"
    kc.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters:\n- name: k\n  cluster:\n    server: https://10.0.0.1:6443\n    certificate-authority: ca.crt\n"
        "users:\n- name: u\n  user:\n    tokenFile: tok\n"
        "contexts:\n- name: c\n  context: {cluster: k, user: u}\n")
    creds = from_kubeconfig(str(kc))
    assert creds.server == "https://10.0.0.1:6443"
    assert creds.ca_file == str(tmp_path / "ca.crt")
    assert creds.bearer_token() == "from-file"


def test_data_fields_become_private_temp_files_removed_on_close(tmp_path):
    b64 = lambda s: base64.b64encode(s.encode()).decode()  # noqa: E731
    kc = write_kc(tmp_path / "kc", cluster={"certificate-authority-data": b64("CA")},
                  user={"client-certificate-data": b64("CERT"), "client-key-data": b64("KEY")})
    creds = from_kubeconfig(kc)
    files = [creds.ca_file, creds.cert_file, creds.key_file]
    for path, content in zip(files, ("CA", "CERT", "KEY")):
        assert open(path).read() == content
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert creds.client_cert == (creds.cert_file, creds.key_file)
    creds.close()
    assert not any(os.path.exists(p) for p in files)


@pytest.mark.parametrize("cluster,user,expect", [
    ({"insecure-skip-tls-verify": True}, None, "insecure-skip-tls-verify"),
    ({}, {"exec": {"command": "aws"}}, "exec apiVersion None is not supported"),
    ({}, {"exec": {"command": "aws", "apiVersion": "client.authentication.k8s.io/v1alpha1"}}, "removed in Kubernetes 1.24"),
    ({}, {"exec": {"command": "aws", "apiVersion": "client.authentication.k8s.io/v1", "interactiveMode": "Always"}},
     "needs a terminal"),
    ({}, {"exec": {"command": "aws", "apiVersion": "client.authentication.k8s.io/v1", "args": "get-token"}},
     "args must be a list"),
    ({}, {"exec": {"command": "aws", "apiVersion": "client.authentication.k8s.io/v1", "env": [{"value": "x"}]}},
     "env must be a list"),
    ({"certificate-authority-data": "Q0E="}, {"token": "t", "exec": {"command": "aws", "apiVersion": "client.authentication.k8s.io/v1"}},
     "both an exec plugin and a static token"),
    ({}, {"username": "a", "password": "b"}, "`username` credentials"),
    ({}, {"auth-provider": {"name": "gcp"}}, "`auth-provider` credentials"),
    ({"certificate-authority-data": "!!notbase64"}, None, "not valid base64"),
    ({"certificate-authority": "/nonexistent/ca.crt"}, None, "does not exist"),
    ({}, {"client-certificate-data": "Q0VSVA=="}, "without its key"),
])
def test_refused_kubeconfigs(tmp_path, cluster, user, expect):
    before = _temp_copies()
    with pytest.raises(KubeError) as err:
        from_kubeconfig(write_kc(tmp_path / "kc", cluster=cluster, user=user))
    assert expect in err.value.message
    assert err.value.hint
    assert _temp_copies() <= before  # private copies of *-data of a refused config are removed


def _temp_copies():
    return {p for p in os.listdir(tempfile.gettempdir()) if p.startswith("nodeagent-kube-")}


def test_plain_http_server_refused(tmp_path):
    with pytest.raises(KubeError, match="not an https"):
        from_kubeconfig(write_kc(tmp_path / "kc", server="http://127.0.0.1:8080"))


def test_missing_context_and_files(tmp_path):
    with pytest.raises(KubeError, match="does not exist"):
        from_kubeconfig(str(tmp_path / "nope"))
    kc = write_kc(tmp_path / "kc", extra={"current-context": "other"})
    with pytest.raises(KubeError, match="context 'other' is not defined"):
        from_kubeconfig(kc)
    (tmp_path / "bad").write_text("clusters: [unclosed")
    with pytest.raises(KubeError, match="not valid YAML"):
        from_kubeconfig(str(tmp_path / "bad"))


def test_kubeconfig_list_first_file_wins_and_missing_entries_skipped(tmp_path):
    a = write_kc(tmp_path / "a", server="https://first:1")
    b = write_kc(tmp_path / "b", server="https://second:2")
    creds = from_kubeconfig(os.pathsep.join([str(tmp_path / "missing"), a, b]))
    assert creds.server == "https://first:1"


def test_in_cluster_needs_env_and_files(tmp_path):
    assert in_cluster({}, str(tmp_path)) is None
    env = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}
    with pytest.raises(KubeError, match="token"):
        in_cluster(env, str(tmp_path))
    (tmp_path / "token").write_text("t1")
    (tmp_path / "ca.crt").write_text("CA")
    (tmp_path / "namespace").write_text("nodeagent")
    creds = in_cluster(env, str(tmp_path))
    assert creds.server == "https://[fd00::1]:443" and creds.namespace == "nodeagent"
    assert creds.bearer_token() == "t1"
    (tmp_path / "token").write_text("t2")
    assert creds.bearer_token() == "t2"


def test_no_credentials_at_all_is_a_known_error(tmp_path):
    with pytest.raises(KubeError) as err:
        load_credentials(None, environ={}, sa_dir=str(tmp_path))
    assert "--kubeconfig" in err.value.hint
