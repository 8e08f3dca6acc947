"""kube.checks: doctor's RuntimeClass check. ok / warn / fail from what the API server holds, and
`warn` (never a crash) when it cannot be asked. Against the loopback HTTPS STAND-IN API server
(no kube-apiserver can be had here; see tests/support/fake_apiserver.py)."""

from __future__ import annotations

import pytest

from nodeagent.kube.checks import runtimeclass_check
from nodeagent.kube.client import KubeClient
from nodeagent.kube.credentials import from_kubeconfig
from nodeagent.settings import Settings
from tests.support.fake_apiserver import apiserver, kc, pki  # noqa: F401 (fixtures)

P = "sandbox.nodeagent.io/"
RC = "/apis/node.k8s.io/v1/runtimeclasses"
SETTINGS = Settings(node_name="node-a")


@pytest.fixture
def api(kc):  # noqa: F811
    with KubeClient(from_kubeconfig(kc), retries=0, sleep=lambda s: None) as client:
        yield client


def runtimeclass(apiserver, name, handler, selector=None):  # noqa: F811
    apiserver.put_object(f"{RC}/{name}", {"metadata": {}, "handler": handler,
                                          **({"scheduling": {"nodeSelector": selector}} if selector else {})})


def test_a_class_selecting_this_node_with_an_unregistered_handler_fails(apiserver, api):  # noqa: F811
    apiserver.put_object("/api/v1/nodes/node-a", {"metadata": {"labels": {P + "gvisor": "true"}}})
    runtimeclass(apiserver, "gvisor", "runsc", {P + "gvisor": "true"})
    status, summary, hint = runtimeclass_check(SETTINGS, ["runc", "runsc", "runsc"], api)
    assert status == "ok" and summary.endswith("names a registered handler (runc, runsc)") and hint is None
    runtimeclass(apiserver, "kata", "kata-qemu", {P + "gvisor": "true"})
    status, summary, hint = runtimeclass_check(SETTINGS, ["runc", "runsc"], api)
    assert (status, summary) == ("fail", "RuntimeClasses selecting this node name unregistered handlers: "
                                         "kata (handler 'kata-qemu')")
    assert "(runc, runsc)" in hint


def test_when_the_node_is_unknown_a_selecting_class_is_only_a_warning(apiserver, api):  # noqa: F811
    """No Node object (or no labels): whether a nodeSelector matches cannot be told."""
    runtimeclass(apiserver, "kata", "kata", {P + "kata": "true"})
    status, summary, _ = runtimeclass_check(SETTINGS, [], api)
    assert status == "warn" and "kata (handler 'kata')" in summary and "registered handler (none)" not in summary


def test_an_api_server_that_refuses_is_a_warning_with_its_hint(apiserver, api):  # noqa: F811
    apiserver.inject(403, times=10, path_contains="runtimeclasses")
    status, summary, hint = runtimeclass_check(SETTINGS, ["runsc"], api)
    assert status == "warn" and summary.startswith("could not list RuntimeClasses:") and hint
