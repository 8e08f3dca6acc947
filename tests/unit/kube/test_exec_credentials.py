"""`kube.exec_credentials`: a kubeconfig's `exec` section checked, and the plugin run for real.

The plugins here are real executables the tests write (shell scripts): nodeagent runs them the way
kubectl runs `aws eks get-token`. The clock is the plugin object's own parameter, so expiry is
tested without waiting. Requests to an API server with these credentials:
tests/integration/test_kube_exec_credentials.py.
"""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from nodeagent.errors import KubeError
from nodeagent.kube.exec_credentials import (CLUSTER_EXTENSION, EXPIRY_SKEW, V1, V1BETA1, ExecConfig, ExecPlugin,
                                             exec_info, parse_exec_config, parse_output)

CLUSTER = {"server": "https://10.0.0.1:6443"}


def parse(entry, *, cluster=CLUSTER, ca=None, kubeconfig=Path("/home/op/.kube/config")) -> ExecConfig:
    return parse_exec_config(entry, user="op", kubeconfig=kubeconfig, cluster=cluster, ca_pem=ca)


# -- the exec section -------------------------------------------------------------------------------


def test_a_full_exec_section():
    cfg = parse({"apiVersion": V1, "command": "aws", "args": ["eks", "get-token"],
                 "env": [{"name": "AWS_REGION", "value": "eu-west-1"}, {"name": "EMPTY"}],
                 "installHint": "install the\n  AWS CLI", "interactiveMode": "IfAvailable"})
    assert (cfg.command, cfg.args, cfg.env, cfg.api_version, cfg.user) == (
        "aws", ("eks", "get-token"), (("AWS_REGION", "eu-west-1"), ("EMPTY", "")), V1, "op")
    assert cfg.install_hint == "install the AWS CLI" and cfg.cluster is None


def test_commands_resolve_like_kubectl(tmp_path):
    assert parse({"apiVersion": V1, "command": "bin/plugin"}, kubeconfig=tmp_path / "kc").command == str(tmp_path / "bin/plugin")
    assert parse({"apiVersion": V1, "command": "~/p"}).command == os.path.expanduser("~/p")
    assert parse({"apiVersion": V1, "command": "/abs/p"}).command == "/abs/p"


@pytest.mark.parametrize("entry, says", [
    ({"apiVersion": V1}, "exec needs a command"),
    ("aws", "exec needs a command"),
    ({"apiVersion": V1, "command": ""}, "exec needs a command"),
    ({"command": "aws"}, "exec apiVersion None is not supported"),
    ({"command": "aws", "apiVersion": "client.authentication.k8s.io/v1alpha1"}, "v1alpha1 was removed"),
    ({"command": "aws", "apiVersion": V1, "interactiveMode": "Always"}, "needs a terminal"),
    ({"command": "aws", "apiVersion": V1, "args": "eks get-token"}, "args must be a list of strings"),
    ({"command": "aws", "apiVersion": V1, "args": ["eks", 1]}, "args must be a list of strings"),
    ({"command": "aws", "apiVersion": V1, "env": {"A": "b"}}, "env must be a list"),
    ({"command": "aws", "apiVersion": V1, "env": [{"value": "b"}]}, "env must be a list"),
    ({"command": "aws", "apiVersion": V1, "env": [{"name": "A", "value": 3}]}, "env must be a list"),
])
def test_bad_exec_sections_are_refused_with_a_hint(entry, says):
    with pytest.raises(KubeError, match=says) as e:
        parse(entry)
    assert e.value.hint


def test_cluster_info_only_when_asked_for():
    cluster = {"server": "https://k", "tls-server-name": "k.internal", "proxy-url": "", "extensions": [
        {"name": "other", "extension": {"x": 1}}, {"name": CLUSTER_EXTENSION, "extension": {"audience": "a"}}]}
    cfg = parse({"apiVersion": V1BETA1, "command": "p", "provideClusterInfo": True}, cluster=cluster, ca=b"PEM")
    assert cfg.cluster == {"server": "https://k", "tls-server-name": "k.internal",
                           "certificate-authority-data": base64.b64encode(b"PEM").decode(), "config": {"audience": "a"}}
    assert json.loads(exec_info(cfg)) == {"apiVersion": V1BETA1, "kind": "ExecCredential",
                                          "spec": {"interactive": False, "cluster": cfg.cluster}}
    plain = parse({"apiVersion": V1, "command": "p"}, cluster=cluster, ca=b"PEM")
    assert json.loads(exec_info(plain))["spec"] == {"interactive": False}


# -- the plugin's answer ----------------------------------------------------------------------------


CFG = ExecConfig("/usr/bin/aws", (), (), V1, "op")


def answer(status, version=V1, kind="ExecCredential") -> bytes:
    return json.dumps({"apiVersion": version, "kind": kind, "status": status}).encode()


def test_a_token_with_an_expiry():
    cred = parse_output(answer({"token": "t0k", "expirationTimestamp": "2030-01-02T03:04:05Z"}), CFG)
    assert (cred.token, cred.cert_pem, cred.client_cert) == ("t0k", None, None)
    assert cred.expires == 1893553445.0


def test_a_client_certificate_without_expiry():
    cred = parse_output(answer({"clientCertificateData": "CERT", "clientKeyData": "KEY"}), CFG)
    assert (cred.token, cred.cert_pem, cred.key_pem, cred.expires) == (None, "CERT", "KEY", None)


@pytest.mark.parametrize("stdout, says", [
    (b"the-secret-token", "not JSON"),
    (answer({"token": "the-secret-token"}, kind="Other"), "not an ExecCredential"),
    (b"[1]", "not an ExecCredential"),
    (answer({"token": "the-secret-token"}, version=V1BETA1), "apiVersion 'client.authentication.k8s.io/v1beta1'"),
    (answer({}), "neither a token nor a client certificate"),
    (answer({"token": ""}), "neither a token nor a client certificate"),
    (answer({"clientCertificateData": "the-secret-token"}), "without its key"),
    (answer({"clientKeyData": "the-secret-token"}), "without its key"),
    (answer({"token": "the-secret-token", "expirationTimestamp": "tomorrow"}), "not RFC 3339"),
], ids=lambda v: "answer" if isinstance(v, bytes) else v)
def test_bad_answers_are_refused_without_quoting_the_secret(stdout, says):
    with pytest.raises(KubeError, match=says) as e:
        parse_output(stdout, CFG)
    assert "the-secret-token" not in e.value.message + (e.value.hint or "")
    assert "aws" in e.value.message


# -- running the plugin -------------------------------------------------------------------------------


def plugin(tmp_path: Path, body: str) -> Path:
    """A real executable: counts its runs in runs/ and runs `body` (a shell script)."""
    path = tmp_path / "plugin"
    (tmp_path / "runs").mkdir(exist_ok=True)
    path.write_text(f"#!/bin/sh\nmktemp -p {tmp_path}/runs >/dev/null\n{body}\n")
    path.chmod(0o755)
    return path


def token_plugin(tmp_path, expires="") -> Path:
    status = '"token": "tok-$(ls ' + str(tmp_path) + '/runs | wc -l)"'
    if expires:
        status += f', "expirationTimestamp": "{expires}"'
    return plugin(tmp_path, "echo '{\"apiVersion\": \"" + V1 + "\", \"kind\": \"ExecCredential\", \"status\": {'\""
                  + status.replace('"', '\\"') + "\"'}}'")


def config(path: Path, **kw) -> ExecConfig:
    return ExecConfig(str(path), kw.pop("args", ()), kw.pop("env", ()), V1, "op", **kw)


def test_the_credential_is_kept_until_it_nearly_expires(tmp_path):
    expiry = 1893553445.0  # 2030-01-02T03:04:05Z
    now = [expiry - EXPIRY_SKEW - 1]
    p = ExecPlugin(config(token_plugin(tmp_path, "2030-01-02T03:04:05Z")), clock=lambda: now[0])
    assert p.credential().token == "tok-1" and p.credential().token == "tok-1" and p.runs == 1
    assert p.cached_token() == "tok-1"
    now[0] += 1  # within the skew: fetched again before it can expire in flight
    assert p.credential().token == "tok-2" and p.runs == 2


def test_invalidate_runs_the_plugin_again(tmp_path):
    p = ExecPlugin(config(token_plugin(tmp_path)))
    assert p.credential().token == "tok-1" and p.credential().token == "tok-1"
    p.invalidate()
    assert p.cached_token() is None
    assert p.credential().token == "tok-2"


def test_the_plugin_gets_its_env_and_args_and_exec_info(tmp_path):
    out = tmp_path / "seen.json"
    body = (f'printf "%s|%s|%s" "$*" "$REGION" "$KUBERNETES_EXEC_INFO" > {out}\n'
            f"echo '{{\"apiVersion\": \"{V1}\", \"kind\": \"ExecCredential\", \"status\": {{\"token\": \"t\"}}}}'")
    cfg = config(plugin(tmp_path, body), args=("eks", "get-token"), env=(("REGION", "eu-west-1"),))
    ExecPlugin(cfg).credential()
    args, region, info = out.read_text().split("|", 2)
    assert (args, region) == ("eks get-token", "eu-west-1")
    assert json.loads(info) == {"apiVersion": V1, "kind": "ExecCredential", "spec": {"interactive": False}}


def test_a_certificate_is_copied_to_private_files_removed_on_invalidate(tmp_path):
    body = (f"echo '{{\"apiVersion\": \"{V1}\", \"kind\": \"ExecCredential\", "
            f"\"status\": {{\"clientCertificateData\": \"CERT\", \"clientKeyData\": \"KEY\"}}}}'")
    p = ExecPlugin(config(plugin(tmp_path, body)))
    cert, key = p.credential().client_cert
    assert Path(cert).read_text() == "CERT" and Path(key).read_text() == "KEY"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    p.close()
    assert not os.path.exists(cert) and not os.path.exists(key)


def test_a_failing_plugin_says_why_from_its_stderr(tmp_path):
    body = 'echo "starting" >&2; echo "Error: token has expired, run aws sso login" >&2; echo "bye" >&2; exit 3'
    with pytest.raises(KubeError, match="plugin exited with code 3: Error: token has expired, run aws sso login") as e:
        ExecPlugin(config(plugin(tmp_path, body))).credential()
    assert "run `plugin` by hand" in e.value.hint


def test_a_long_stderr_line_is_cut_to_its_end(tmp_path):
    body = f'echo "{"x" * 300}the reason" >&2; exit 1'
    with pytest.raises(KubeError) as e:
        ExecPlugin(config(plugin(tmp_path, body))).credential()
    line = "x" * 300 + "the reason"
    assert e.value.message.endswith(": ..." + line[-200:])


def test_a_plugin_that_hangs_is_stopped(tmp_path):
    with pytest.raises(KubeError, match="did not answer within 1 s"):
        ExecPlugin(config(plugin(tmp_path, "sleep 30")), timeout=1).credential()


def test_a_missing_plugin_names_the_install_hint(tmp_path, monkeypatch):
    with pytest.raises(KubeError, match="does not exist or is not executable") as e:
        ExecPlugin(config(tmp_path / "nope", install_hint="install kubelogin")).credential()
    assert e.value.hint == "install kubelogin"
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(KubeError, match="'kubelogin', which is not on PATH"):
        ExecPlugin(ExecConfig("kubelogin", (), (), V1, "op")).credential()
    (tmp_path / "noexec").write_text("#!/bin/sh\n")
    with pytest.raises(KubeError, match="not executable"):
        ExecPlugin(config(tmp_path / "noexec")).credential()


def test_a_plugin_found_on_path_runs(tmp_path, monkeypatch):
    token_plugin(tmp_path)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    assert ExecPlugin(ExecConfig("plugin", (), (), V1, "op")).credential().token == "tok-1"
