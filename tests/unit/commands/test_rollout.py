"""`nodeagent rollout status|resume` (commands/rollout.py): what it prints, in JSON and text, and
which namespace it reads, against the stand-in API server (tests/support/fake_apiserver.py; no
kube-apiserver can be had here). The CLI wiring is run for real in tests/integration/test_rollout_halt.py.
"""

from __future__ import annotations

import argparse

import pytest

from nodeagent.commands import rollout as command
from nodeagent.kube.client import KubeClient
from nodeagent.kube.credentials import from_kubeconfig
from nodeagent.kube.rollout import RECORD_NAME, RolloutRecord
from nodeagent.settings import Settings
from tests.support.fake_apiserver import apiserver, kc, pki  # noqa: F401 (fixtures)


def fail(kc, namespace, desired, *nodes):  # noqa: F811
    with KubeClient(from_kubeconfig(kc)) as api:
        for node in nodes:
            RolloutRecord(api, namespace, desired, 2).record_failure(node, f"rolled back on {node}")


def run(kc, action, namespace=None, max_failures=2):  # noqa: F811
    return command.run(Settings(kubeconfig=kc, rollout_max_failures=max_failures),
                       argparse.Namespace(action=action, namespace=namespace))


def test_status_marks_the_halted_desired_state(kc):  # noqa: F811
    fail(kc, "ops", "aaaa", "node-a", "node-b")
    fail(kc, "ops", "bbbb", "node-c")
    result = run(kc, "status", "ops")
    assert result.data["namespace"] == "ops" and result.data["rollout_max_failures"] == 2
    states = result.data["desired_states"]
    assert states["aaaa"]["halted"] is True and states["bbbb"]["halted"] is False
    assert set(states["aaaa"]["failures"]) == {"node-a", "node-b"}
    lines = result.text.splitlines()
    assert lines[0] == "desired state aaaa: 2 failed node(s) - HALTED"
    assert lines[1].startswith("  node-a  ") and lines[1].endswith("rolled back on node-a")
    assert "desired state bbbb: 1 failed node(s)" in lines


def test_zero_max_failures_never_shows_halted(kc):  # noqa: F811
    fail(kc, "ops", "aaaa", "node-a", "node-b")
    assert run(kc, "status", "ops", max_failures=0).data["desired_states"]["aaaa"]["halted"] is False


def test_status_without_a_record(kc):  # noqa: F811
    result = run(kc, "status", "ops")
    assert result.data["desired_states"] == {} and result.exit_code == 0
    assert result.text == f"no failed converges recorded in ops/{RECORD_NAME}"


def test_the_namespace_defaults_to_the_pods_own(kc, monkeypatch):  # noqa: F811
    monkeypatch.setenv("POD_NAMESPACE", "agents")
    fail(kc, "agents", "aaaa", "node-a")
    assert run(kc, "status").data["namespace"] == "agents"
    assert "aaaa" in run(kc, "status").data["desired_states"]
    assert run(kc, "status", "other").data["desired_states"] == {}


def test_resume_clears_the_record_once(kc, apiserver):  # noqa: F811
    fail(kc, "ops", "aaaa", "node-a")
    first = run(kc, "resume", "ops")
    assert first.data == {"namespace": "ops", "resumed": True}
    assert first.text == f"rollout resumed: cleared configmap ops/{RECORD_NAME}"
    assert apiserver.object(f"/api/v1/namespaces/ops/configmaps/{RECORD_NAME}") is None
    again = run(kc, "resume", "ops")
    assert again.data["resumed"] is False and again.text.startswith("nothing to resume")
