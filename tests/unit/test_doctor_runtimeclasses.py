"""doctor's RuntimeClass check end to end, against the loopback HTTPS STAND-IN API server
(no kube-apiserver can be had here; see tests/support/fake_apiserver.py)."""

import json

from tests.support.cli import run_cli
from tests.support.fake_apiserver import apiserver, kc, pki  # noqa: F401 (fixtures)
from tests.support.hosttrees import HOSTS

P = "sandbox.nodeagent.io/"
RC = "/apis/node.k8s.io/v1/runtimeclasses"


def _check(root, kubeconfig):
    proc = run_cli("doctor", "--root", str(root), "-o", "json", "--kubeconfig", kubeconfig, "--node-name", "node-a")
    assert "Traceback" not in proc.stderr, proc.stderr
    return {c["id"]: c for c in json.loads(proc.stdout)["checks"]}["runtimeclasses"]


def test_runtimeclass_naming_the_class_instead_of_the_handler_fails(apiserver, kc):  # noqa: F811
    apiserver.put_object("/api/v1/nodes/node-a", {"apiVersion": "v1", "kind": "Node",
                                                  "metadata": {"labels": {P + "gvisor": "true"}}})
    root = HOSTS / "containerd-v2"  # registers runc and runsc
    apiserver.put_object(RC + "/gvisor", {"metadata": {}, "handler": "runsc",
                                          "scheduling": {"nodeSelector": {P + "gvisor": "true"}}})
    assert _check(root, kc)["status"] == "ok"
    apiserver.put_object(RC + "/gvisor", {"metadata": {}, "handler": "gvisor",
                                          "scheduling": {"nodeSelector": {P + "gvisor": "true"}}})
    check = _check(root, kc)
    assert check["status"] == "fail" and "gvisor (handler 'gvisor')" in check["summary"]
    assert "runsc" in check["hint"]
