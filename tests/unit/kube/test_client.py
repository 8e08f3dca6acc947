"""The Kubernetes client against a loopback HTTPS stand-in API server (tests/support/fake_apiserver.py).

The stand-in is not Kubernetes — no kube-apiserver can be had on these machines — but it is real
TLS, real HTTP and the API semantics the client relies on (auth, 404, 409, patch types, 429/5xx).
"""

import base64
import json
import time

import pytest

from nodeagent.errors import KubeError
from nodeagent.kube.client import KubeClient, KubeConflict, KubeInvalid, KubeUnauthorized, KubeUnavailable
from nodeagent.kube.credentials import from_kubeconfig, in_cluster
from tests.support.cli import assert_known_error, run_cli
from tests.support.fake_apiserver import TOKEN, apiserver, kubeconfig_text, pki  # noqa: F401 (fixtures)

NODE = "/api/v1/nodes/node-a"


def kubeconfig(tmp_path, server, *, user=None, cluster=None, name="kc"):
    path = tmp_path / name
    path.write_text(kubeconfig_text(server, user=user or {"token": TOKEN}, cluster_extra=cluster or {}))
    return str(path)


def client(tmp_path, apiserver, pki, **kw):  # noqa: F811
    kc = kubeconfig(tmp_path, apiserver.url, cluster={"certificate-authority": str(pki.ca_cert)}, **kw)
    return KubeClient(from_kubeconfig(kc), sleep=lambda s: None)


def seed_node(apiserver, labels=None, annotations=None):  # noqa: F811
    return apiserver.put_object(NODE, {"apiVersion": "v1", "kind": "Node",
                                       "metadata": {"labels": labels or {}, "annotations": annotations or {}}})


def test_wrong_ca_is_refused_even_when_the_environment_trusts_the_server(tmp_path, apiserver, pki, monkeypatch):  # noqa: F811
    seed_node(apiserver)
    # REQUESTS_CA_BUNDLE would make a plain requests.Session trust the stand-in; the client must not.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pki.ca_cert))
    monkeypatch.setenv("CURL_CA_BUNDLE", str(pki.ca_cert))
    kc = kubeconfig(tmp_path, apiserver.url, cluster={"certificate-authority": str(pki.other_ca_cert)})
    with KubeClient(from_kubeconfig(kc)) as api, pytest.raises(KubeError) as err:
        api.get(NODE)
    assert "TLS verification" in err.value.message and "certificate-authority" in err.value.hint
    # no CA configured at all: the system store does not know our CA either
    kc2 = kubeconfig(tmp_path, apiserver.url, name="kc2")
    with KubeClient(from_kubeconfig(kc2)) as api, pytest.raises(KubeError, match="TLS verification"):
        api.get(NODE)
    assert apiserver.count() == 0  # nothing reached the handler
    # the right CA in the kubeconfig works although the environment names another one
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pki.other_ca_cert))
    with client(tmp_path, apiserver, pki) as api:
        assert api.get(NODE)["metadata"]["name"] == "node-a"


def test_wrong_ca_via_cli_is_one_error_and_hint(tmp_path, apiserver, pki):  # noqa: F811
    kc = kubeconfig(tmp_path, apiserver.url, cluster={"certificate-authority": str(pki.other_ca_cert)})
    err = assert_known_error(run_cli("runtimeclasses", "--apply", "--kubeconfig", kc))
    assert "TLS verification" in err


def test_401_is_a_known_error_and_the_token_never_leaks(tmp_path, apiserver, pki):  # noqa: F811
    secret = "not-the-right-token-0123456789"
    kc = kubeconfig(tmp_path, apiserver.url, user={"token": secret}, cluster={"certificate-authority": str(pki.ca_cert)})
    with KubeClient(from_kubeconfig(kc)) as api, pytest.raises(KubeUnauthorized) as err:
        api.get(NODE)
    assert "401" in err.value.message and secret not in err.value.message
    proc = run_cli("runtimeclasses", "--apply", "--kubeconfig", kc, "-vv")
    assert proc.returncode == 2 and "401" in proc.stderr
    assert secret not in proc.stderr and secret not in proc.stdout
    assert_known_error(run_cli("runtimeclasses", "--apply", "--kubeconfig", kc))
    assert apiserver.count(status=401) >= 2


@pytest.mark.parametrize("variant", ["token", "tokenFile", "cert-files", "cert-data+ca-data"])
def test_kubeconfig_variants(tmp_path, apiserver, pki, variant):  # noqa: F811
    seed_node(apiserver)
    b64 = lambda p: base64.b64encode(p.read_bytes()).decode()  # noqa: E731
    cluster = {"certificate-authority": str(pki.ca_cert)}
    if variant == "token":
        user = {"token": TOKEN}
    elif variant == "tokenFile":
        (tmp_path / "tok").write_text(TOKEN + "\n")
        user = {"tokenFile": "tok"}  # relative to the kubeconfig
    elif variant == "cert-files":
        user = {"client-certificate": str(pki.client_cert), "client-key": str(pki.client_key)}
    else:
        user = {"client-certificate-data": b64(pki.client_cert), "client-key-data": b64(pki.client_key)}
        cluster = {"certificate-authority-data": b64(pki.ca_cert)}
    kc = kubeconfig(tmp_path, apiserver.url, user=user, cluster=cluster)
    with KubeClient(from_kubeconfig(kc)) as api:
        assert api.get(NODE)["metadata"]["name"] == "node-a"
    expected_user = "system:node:node-a" if variant.startswith("cert") else "token-user-0"
    assert apiserver.records[-1].user == expected_user


def test_in_cluster_token_is_reread_on_every_request(tmp_path, apiserver, pki):  # noqa: F811
    seed_node(apiserver)
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "ca.crt").write_bytes(pki.ca_cert.read_bytes())
    (sa / "token").write_text("token-one")
    port = apiserver.url.rsplit(":", 1)[1]
    apiserver.tokens = {"token-one"}
    creds = in_cluster({"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": port}, str(sa))
    with KubeClient(creds, retries=0) as api:
        assert api.get(NODE)
        # kubelet rotates the projected token; the old one stops working
        (sa / "token").write_text("token-two")
        apiserver.tokens = {"token-two"}
        assert api.get(NODE)
        apiserver.tokens = {"token-one"}
        with pytest.raises(KubeUnauthorized):
            api.get(NODE)


def test_404_409_and_stale_resource_version(tmp_path, apiserver, pki):  # noqa: F811
    with client(tmp_path, apiserver, pki) as api:
        assert api.get("/api/v1/nodes/nope") is None
        assert api.delete("/apis/node.k8s.io/v1/runtimeclasses/nope") is False
        rc = {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": "x"}, "handler": "runsc"}
        created = api.create("/apis/node.k8s.io/v1/runtimeclasses", rc)
        with pytest.raises(KubeConflict) as err:
            api.create("/apis/node.k8s.io/v1/runtimeclasses", rc)
        assert err.value.reason == "AlreadyExists"
        fresh = dict(created, overhead={"podFixed": {"cpu": "1"}})
        api.update("/apis/node.k8s.io/v1/runtimeclasses/x", fresh)
        with pytest.raises(KubeConflict) as err:  # created's resourceVersion is stale now
            api.update("/apis/node.k8s.io/v1/runtimeclasses/x", dict(created, overhead={"podFixed": {"cpu": "2"}}))
        assert err.value.reason == "Conflict"


def test_merge_patch_and_strategic_merge_patch(tmp_path, apiserver, pki):  # noqa: F811
    seed_node(apiserver, labels={"a": "1", "b": "2"})
    with client(tmp_path, apiserver, pki) as api:
        out = api.patch(NODE, {"metadata": {"labels": {"a": None, "c": "3"}}}, strategy="merge")
        assert out["metadata"]["labels"] == {"b": "2", "c": "3"}
        # strategic merge understands the $patch directive; a merge patch would send it as a label key
        out = api.patch(NODE, {"metadata": {"labels": {"$patch": "replace", "only": "me"}}}, strategy="strategic")
        assert out["metadata"]["labels"] == {"only": "me"}
        with pytest.raises(KubeInvalid):
            api.patch(NODE, {"metadata": {"labels": {"$patch": "replace"}}}, strategy="merge")
        assert [r.content_type for r in apiserver.records if r.method == "PATCH"] == [
            "application/merge-patch+json", "application/strategic-merge-patch+json", "application/merge-patch+json"]


def test_429_with_retry_after_then_success(tmp_path, apiserver, pki):  # noqa: F811
    seed_node(apiserver)
    slept = []
    kc = kubeconfig(tmp_path, apiserver.url, cluster={"certificate-authority": str(pki.ca_cert)})
    apiserver.inject(429, times=2, retry_after="3")
    apiserver.inject(503, times=1)
    with KubeClient(from_kubeconfig(kc), sleep=slept.append, retries=4, max_retry_after=2.5) as api:
        assert api.get(NODE)["metadata"]["name"] == "node-a"
    assert [r.status for r in apiserver.records] == [429, 429, 503, 200]
    assert slept[:2] == [2.5, 2.5]  # Retry-After honoured, capped
    assert 0 < slept[2] <= 2.5  # exponential backoff with jitter for the 503


def test_retries_are_bounded(tmp_path, apiserver, pki):  # noqa: F811
    seed_node(apiserver)
    apiserver.inject(500, times=100)
    with client(tmp_path, apiserver, pki) as api, pytest.raises(KubeUnavailable) as err:
        api.get(NODE)
    assert "gave up after 5 attempts" in err.value.message
    assert apiserver.count() == 5


def test_unreachable_server_is_a_known_error(tmp_path, pki):  # noqa: F811
    from tests.support.fake_apiserver import free_port

    kc = kubeconfig(tmp_path, f"https://127.0.0.1:{free_port()}", cluster={"certificate-authority": str(pki.ca_cert)})
    start = time.monotonic()
    with KubeClient(from_kubeconfig(kc), retries=2, sleep=lambda s: None) as api, pytest.raises(KubeUnavailable) as err:
        api.get(NODE)
    assert "after 3 attempts" in err.value.message and time.monotonic() - start < 5
    proc = run_cli("labels", "--apply", "--kubeconfig", kc, "--root", str(tmp_path))
    assert "cannot reach the API server" in assert_known_error(proc)


def test_proxy_from_environment_is_used_unless_no_proxy(tmp_path, apiserver, pki, monkeypatch):  # noqa: F811
    seed_node(apiserver)
    from tests.support.fake_apiserver import free_port

    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    with client(tmp_path, apiserver, pki, name="p1") as api:
        api.retries = 0
        with pytest.raises(KubeUnavailable):
            api.get(NODE)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with client(tmp_path, apiserver, pki, name="p2") as api:
        assert api.get(NODE)


def test_request_body_is_json(tmp_path, apiserver, pki):  # noqa: F811
    with client(tmp_path, apiserver, pki) as api:
        obj = api.create("/api/v1/namespaces/default/events",
                         {"metadata": {"generateName": "n."}, "reason": "X", "message": json.dumps({"k": 1})})
    assert obj["metadata"]["name"].startswith("n.") and len(obj["metadata"]["name"]) == 7
