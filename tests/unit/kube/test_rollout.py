"""`kube.rollout`: the desired-state hash, the `nodeagent-rollout` record and the guard around a
restart, each alone against the stand-in API server (tests/support/fake_apiserver.py: not
Kubernetes, no kube-apiserver can be had here, but real HTTPS with resourceVersion conflicts).
The fleet race (50 agents) is tests/integration/test_rollout_halt.py.
"""

from __future__ import annotations

import contextlib
import json

import pytest

from nodeagent.errors import NodeagentError
from nodeagent.kube.client import KubeClient
from nodeagent.kube.credentials import from_kubeconfig
from nodeagent.kube.lease import RestartSlots
from nodeagent.kube.rollout import (KEEP_ROLLOUTS, MAX_NODES, RECORD_NAME, RolloutHalted, RolloutRecord,
                                    SandboxCheckFailed, desired_state_hash, guarded_restart, resume, status)
from nodeagent.settings import Settings
from tests.support.fake_apiserver import apiserver, kc, pki  # noqa: F401 (fixtures)

NS = "nodeagent"
RECORD = f"/api/v1/namespaces/{NS}/configmaps/{RECORD_NAME}"
LEASES = f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases"


class RolledBack(NodeagentError):
    """What converge's rollback error looks like to the guard."""

    rolled_back = True


@pytest.fixture
def api(kc):  # noqa: F811
    with KubeClient(from_kubeconfig(kc), sleep=lambda s: None) as client:
        yield client


def record(api, desired="d1", max_failures=2) -> RolloutRecord:
    return RolloutRecord(api, NS, desired, max_failures, sleep=lambda s: None)


# -- desired state --------------------------------------------------------------------------------


def test_the_hash_follows_what_is_installed_not_how_the_node_runs():
    base = desired_state_hash(Settings())
    assert base == desired_state_hash(Settings()) and len(base) == 16
    assert desired_state_hash(Settings(kata_version="3.11.0")) != base
    assert desired_state_hash(Settings(gvisor_handler="runsc-2")) != base
    for per_node in (dict(node_name="node-7"), dict(health_timeout=5.0), dict(dry_run=True),
                     dict(rollout_max_failures=9), dict(max_concurrent_restarts=4)):
        assert desired_state_hash(Settings(**per_node)) == base, per_node


# -- the record -----------------------------------------------------------------------------------


def test_no_record_means_no_failures_and_no_halt(api):
    r = record(api)
    assert r.failures() == {}
    r.check()


def test_failures_are_counted_per_distinct_node_and_halt_at_the_limit(apiserver, api):  # noqa: F811
    r = record(api, max_failures=2)
    assert r.record_failure("node-a", "rolled back: health timeout") == 1
    cm = apiserver.object(RECORD)
    assert cm["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "nodeagent"}
    assert json.loads(cm["data"]["d1"])["failures"]["node-a"]["reason"] == "rolled back: health timeout"
    assert r.record_failure("node-a", "again") == 1  # one flaky node retrying does not halt the fleet
    r.check()
    assert r.record_failure("node-b", "x" * 1000) == 2
    assert len(r.failures()["node-b"]["reason"]) == 300
    with pytest.raises(RolloutHalted, match="2 node\\(s\\) failed desired state d1 .*node-a, node-b") as e:
        r.check()
    assert "nodeagent rollout resume" in e.value.hint


def test_another_desired_state_starts_a_new_count_and_zero_never_halts(api):
    record(api, "d1").record_failure("node-a", "r")
    record(api, "d1").record_failure("node-b", "r")
    record(api, "d2").check()
    assert record(api, "d2").failures() == {}
    record(api, "d1", max_failures=0).check()


def test_a_conflicting_write_is_read_again_and_retried(apiserver, api):  # noqa: F811
    record(api).record_failure("node-a", "first")
    apiserver.inject(409, times=2, method="PUT", path_contains=RECORD_NAME)
    assert record(api).record_failure("node-b", "second") == 2
    assert set(record(api).failures()) == {"node-a", "node-b"}
    assert apiserver.count("PUT", RECORD_NAME, status=409) == 2


def test_only_the_newest_desired_states_are_kept(apiserver, api):  # noqa: F811
    for i in range(KEEP_ROLLOUTS + 2):
        record(api, f"d{i}").record_failure("node-a", "r")
    data = apiserver.object(RECORD)["data"]
    assert len(data) == KEEP_ROLLOUTS and f"d{KEEP_ROLLOUTS + 1}" in data


def test_a_full_entry_takes_no_new_nodes(apiserver, api):  # noqa: F811
    failures = {f"n{i}": {"reason": "r", "at": "2026-01-01T00:00:00Z"} for i in range(MAX_NODES)}
    apiserver.put_object(RECORD, {"apiVersion": "v1", "kind": "ConfigMap",
                                  "data": {"d1": json.dumps({"failures": failures})}})
    assert record(api).record_failure("node-new", "r") == MAX_NODES
    assert "node-new" not in record(api).failures()


def test_an_unreadable_entry_counts_as_no_failures(apiserver, api):  # noqa: F811
    apiserver.put_object(RECORD, {"apiVersion": "v1", "kind": "ConfigMap",
                                  "data": {"d1": "{not json", "d2": json.dumps({"failures": ["x"]})}})
    assert record(api, "d1").failures() == {} and record(api, "d2").failures() == {}
    assert record(api, "d1").record_failure("node-a", "r") == 1


def test_status_and_resume(apiserver, api):  # noqa: F811
    assert status(api, NS) == {} and resume(api, NS) is False
    record(api, "d1").record_failure("node-a", "why")
    assert list(status(api, NS)) == ["d1"] and status(api, NS)["d1"]["node-a"]["reason"] == "why"
    assert resume(api, NS) is True
    assert apiserver.object(RECORD) is None and status(api, NS) == {}


# -- the guard around a restart ---------------------------------------------------------------


def slots(api, node="node-a") -> RestartSlots:
    return RestartSlots(api, node, slots=1, namespace=NS, poll=0.1, claim_jitter=0.0)


def test_a_good_restart_records_nothing_and_frees_its_slot(apiserver, api):  # noqa: F811
    ran = []
    with guarded_restart(record(api), slots(api), "node-a", 10, check_sandbox=lambda: None):
        ran.append(1)
    assert ran == [1] and apiserver.object(RECORD) is None
    leases = (apiserver.store.objects.get(LEASES) or {}).values()
    assert all(not (le.get("spec") or {}).get("holderIdentity") for le in leases)


def test_a_rollback_is_recorded_and_raised(apiserver, api):  # noqa: F811
    with pytest.raises(RolledBack):
        with guarded_restart(record(api), slots(api), "node-a", 10, check_sandbox=lambda: None):
            raise RolledBack("health check timed out")
    assert record(api).failures()["node-a"]["reason"] == "rolled back: health check timed out"


def test_other_errors_are_not_failures_of_the_desired_state(api):
    with pytest.raises(NodeagentError):
        with guarded_restart(record(api), slots(api), "node-a", 10, check_sandbox=lambda: None):
            raise NodeagentError("the download failed")
    assert record(api).failures() == {}


def test_a_failed_sandbox_check_is_recorded(api):
    with pytest.raises(SandboxCheckFailed, match="containerd restarted and is healthy, but no sandbox"):
        with guarded_restart(record(api), slots(api), "node-a", 10, check_sandbox=lambda: "no sandbox"):
            pass
    assert record(api).failures()["node-a"]["reason"] == "sandbox check failed after the restart: no sandbox"


def test_a_halted_rollout_touches_nothing(apiserver, api):  # noqa: F811
    record(api).record_failure("node-x", "r")
    record(api).record_failure("node-y", "r")
    ran = []
    with pytest.raises(RolloutHalted):
        with guarded_restart(record(api), slots(api), "node-a", 10, check_sandbox=lambda: None):
            ran.append(1)
    assert ran == [] and apiserver.count(path_contains="/leases") == 0  # no slot was even asked for


class HaltWhileWaiting:
    """Real restart slots; while this node "waits" for one, two other nodes fail the rollout."""

    def __init__(self, api, inner: RestartSlots):
        self.api, self.inner = api, inner

    @contextlib.contextmanager
    def hold(self, timeout):
        record(self.api).record_failure("node-x", "r")
        record(self.api).record_failure("node-y", "r")
        with self.inner.hold(timeout) as name:
            yield name


def test_the_record_is_read_again_once_the_slot_is_held(api):
    ran = []
    with pytest.raises(RolloutHalted):
        with guarded_restart(record(api), HaltWhileWaiting(api, slots(api)), "node-a", 10, check_sandbox=lambda: None):
            ran.append(1)
    assert ran == []
