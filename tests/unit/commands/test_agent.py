"""commands.agent: what one agent round does with the Kubernetes API around a converge (an event and
labels on failure, events best effort), when the agent would uninstall, and `agent --once`'s error.
Against the loopback HTTPS STAND-IN API server (no kube-apiserver here; tests/support/fake_apiserver.py)
and an empty fake root under tmp_path, on which every converge fails (a mirror that does not exist);
the whole agent on a booted node is tests/integration/test_agent_node.py."""

from __future__ import annotations

import argparse

import pytest

from nodeagent.commands import agent as agent_cmd
from nodeagent.errors import NodeagentError
from nodeagent.kube.client import KubeClient
from nodeagent.kube.credentials import from_kubeconfig
from nodeagent.settings import Settings
from tests.support.fake_apiserver import apiserver, kc, pki  # noqa: F401 (fixtures)

NODE = "/api/v1/nodes/node-a"
DS = "/apis/apps/v1/namespaces/nodeagent/daemonsets/nodeagent"
EVENTS = "/api/v1/namespaces/default/events"
STATE = "sandbox.nodeagent.io/state"


@pytest.fixture
def api(kc):  # noqa: F811
    with KubeClient(from_kubeconfig(kc), retries=0, sleep=lambda s: None) as client:
        yield client


@pytest.fixture
def node(apiserver, monkeypatch):  # noqa: F811
    for var in ("POD_NAMESPACE", "NODEAGENT_DAEMONSET"):
        monkeypatch.delenv(var, raising=False)  # the defaults: DaemonSet nodeagent/nodeagent
    apiserver.put_object(NODE, {"metadata": {"labels": {"kubernetes.io/os": "linux"}}})


def settings(tmp_path, **kw) -> Settings:
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    kw.setdefault("kubeconfig", str(tmp_path / "no-kubeconfig"))
    return Settings(root=str(root), node_name="node-a", runtime="gvisor", restart="none", skip_eligibility=True,
                    mirror=str(tmp_path / "no-mirror"), listen="127.0.0.1:0", **kw)


def recorded_events(apiserver) -> list[dict]:  # noqa: F811
    return list(apiserver.store.objects.get(EVENTS, {}).values())


def test_a_failed_round_records_a_warning_labels_the_node_and_raises_the_failure(tmp_path, apiserver, api, node):  # noqa: F811
    with pytest.raises(NodeagentError) as err:
        agent_cmd.converge_round(settings(tmp_path), api)()
    [event] = recorded_events(apiserver)
    assert (event["reason"], event["type"], event["message"]) == ("NodeagentFailed", "Warning", err.value.message)
    labels = apiserver.object(NODE)["metadata"]["labels"]
    assert labels["kubernetes.io/os"] == "linux" and STATE in labels, "labels follow containerd, failure or not"


def test_a_refused_event_neither_hides_the_rounds_failure_nor_stops_the_labels(tmp_path, apiserver, api, node):  # noqa: F811
    apiserver.inject(403, times=10, method="POST", path_contains="events")
    with pytest.raises(NodeagentError) as err:
        agent_cmd.converge_round(settings(tmp_path), api)()
    assert err.value.message.startswith("mirror dir") and "403" not in err.value.message
    assert recorded_events(apiserver) == [] and apiserver.count("POST", "events", 403) == 1
    assert STATE in apiserver.object(NODE)["metadata"]["labels"]


def test_without_an_api_a_round_only_converges(tmp_path, apiserver):  # noqa: F811
    with pytest.raises(NodeagentError):
        agent_cmd.converge_round(settings(tmp_path))()  # the kubeconfig does not exist: no API
    assert apiserver.count() == 0


@pytest.mark.parametrize(("daemonset", "fault", "uninstall"), [
    ({"spec": {"template": {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"}}}}}, None, False),
    ({"spec": {"template": {"spec": {"nodeSelector": {"kubernetes.io/os": "windows"}}}}}, None, True),
    (None, None, True),
    ({"spec": {"template": {"spec": {"nodeSelector": {"kubernetes.io/os": "windows"}}}}}, 403, False),
])
def test_the_agent_uninstalls_only_when_the_daemonset_surely_no_longer_selects_the_node(
        tmp_path, apiserver, kc, node, daemonset, fault, uninstall):  # noqa: F811
    if daemonset is not None:
        apiserver.put_object(DS, {"apiVersion": "apps/v1", "kind": "DaemonSet", **daemonset})
    if fault:
        apiserver.inject(fault, times=10, path_contains="daemonsets")  # cannot tell: keep the runtimes
    agent = agent_cmd.build_agent(settings(tmp_path, kubeconfig=kc))
    assert agent.should_uninstall() is uninstall


def test_no_api_means_never_uninstalling(tmp_path, apiserver):  # noqa: F811
    assert agent_cmd.build_agent(settings(tmp_path)).should_uninstall() is False
    assert apiserver.count() == 0


def test_agent_once_raises_the_rounds_failure_for_the_clis_error_and_hint(tmp_path, apiserver):  # noqa: F811
    with pytest.raises(NodeagentError) as err:
        agent_cmd.run(settings(tmp_path), argparse.Namespace(once=True))
    assert err.value.exit_code == 2 and err.value.hint
