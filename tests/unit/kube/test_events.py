"""kube.events: Node events as kubelet writes them, and best effort: a refused event is logged,
never raised. Against the loopback HTTPS STAND-IN API server (no kube-apiserver can be had here)."""

from __future__ import annotations

import pytest

from nodeagent.kube import events
from nodeagent.kube.client import KubeClient
from nodeagent.kube.credentials import from_kubeconfig
from tests.support.fake_apiserver import apiserver, kc, pki  # noqa: F401 (fixtures)

EVENTS = "/api/v1/namespaces/default/events"


@pytest.fixture
def api(kc):  # noqa: F811
    with KubeClient(from_kubeconfig(kc), retries=0, sleep=lambda s: None) as client:
        yield client


def test_an_event_is_about_the_node_with_whole_second_times_and_a_bounded_message():
    event = events.node_event("node-a", "RolledBack", "x" * 5000, event_type="Warning", now=1764921600.987654)
    assert event["involvedObject"] == {"apiVersion": "v1", "kind": "Node", "name": "node-a", "uid": "node-a"}
    assert event["metadata"] == {"generateName": "node-a.nodeagent.", "namespace": "default"}
    assert event["firstTimestamp"] == event["lastTimestamp"] == "2025-12-05T08:00:00Z"
    assert len(event["message"]) == 1024 and event["type"] == "Warning" and event["count"] == 1


def test_record_posts_the_event(apiserver, api):  # noqa: F811
    created = events.record(api, "node-a", "Installed", "gvisor 20240729.0")
    assert created["reason"] == "Installed" and created["metadata"]["name"].startswith("node-a.nodeagent.")
    assert apiserver.count(method="POST", path_contains=EVENTS) == 1


def test_a_refused_event_is_logged_not_raised(apiserver, api):  # noqa: F811
    apiserver.inject(403, times=5, method="POST", path_contains=EVENTS)
    assert events.record(api, "node-a", "Installed", "gvisor") is None
    assert apiserver.count(method="POST", path_contains=EVENTS, status=403) == 1
