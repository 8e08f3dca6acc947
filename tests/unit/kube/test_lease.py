"""`kube.lease`: restart slots as Leases, one agent at a time against the stand-in API server
(tests/support/fake_apiserver.py: not Kubernetes, no kube-apiserver can be had here, but real HTTPS,
resourceVersion conflicts and WATCH). The fleet race is tests/integration/test_kube_lease.py.
"""

from __future__ import annotations

import threading
import time

import pytest

from nodeagent.errors import KubeError
from nodeagent.kube.client import KubeClient, KubeConflict
from nodeagent.kube.credentials import from_kubeconfig
from nodeagent.kube.lease import (LeaseTimeout, RestartSlots, is_free, lease_namespace, microtime,
                                  parse_microtime)
from tests.support.fake_apiserver import apiserver, kc, pki  # noqa: F401 (fixtures)
from tests.support.wait import wait_for

NS = "nodeagent"
LEASES = f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases"


@pytest.fixture
def api(kc):  # noqa: F811
    with KubeClient(from_kubeconfig(kc)) as client:
        yield client


def slots(api, identity, n=1, **kw) -> RestartSlots:
    kw.setdefault("poll", 0.2)
    kw.setdefault("claim_jitter", 0.0)
    return RestartSlots(api, identity, slots=n, namespace=NS, **kw)


def holder(apiserver, name="nodeagent-restart-0"):  # noqa: F811
    return ((apiserver.object(f"{LEASES}/{name}") or {}).get("spec") or {}).get("holderIdentity")


def seed(apiserver, name, holder_id, renewed, duration=120, transitions=0):  # noqa: F811
    return apiserver.put_object(f"{LEASES}/{name}", {
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "spec": {"holderIdentity": holder_id, "leaseDurationSeconds": duration, "renewTime": microtime(renewed),
                 "acquireTime": microtime(renewed), "leaseTransitions": transitions}})


# -- pure helpers ---------------------------------------------------------------------------------


def test_microtime_round_trips_and_reads_seconds_too():
    assert microtime(1700000000.25) == "2023-11-14T22:13:20.250000Z"
    assert parse_microtime("2023-11-14T22:13:20.250000Z") == 1700000000.25
    assert parse_microtime("2023-11-14T22:13:20Z") == 1700000000.0
    assert parse_microtime("yesterday") is None and parse_microtime("") is None and parse_microtime(None) is None


def test_the_namespace_comes_from_the_downward_api():
    assert lease_namespace({"POD_NAMESPACE": "ops"}) == "ops"
    assert lease_namespace({}) == "nodeagent" and lease_namespace({"POD_NAMESPACE": ""}) == "nodeagent"


def test_a_lease_is_free_without_a_holder_or_after_its_duration():
    now = 1_000_000.0
    held = {"spec": {"holderIdentity": "n", "leaseDurationSeconds": 10, "renewTime": microtime(now - 5)}}
    assert not is_free(held, now)
    assert is_free(held, now + 6)
    assert is_free({"spec": {}}, now) and is_free({}, now)
    acquired_only = {"spec": {"holderIdentity": "n", "leaseDurationSeconds": 10, "acquireTime": microtime(now - 5)}}
    assert not is_free(acquired_only, now)
    assert is_free({"spec": {"holderIdentity": "n", "renewTime": "garbage"}}, now)  # unreadable: not a live holder


def test_zero_slots_is_refused(api):
    with pytest.raises(KubeError, match="at least 1, not 0") as e:
        RestartSlots(api, "n", slots=0)
    assert "max_concurrent_restarts" in e.value.hint


# -- one look, one claim --------------------------------------------------------------------------


def test_try_acquire_creates_the_lease_and_a_second_node_finds_none(apiserver, api):  # noqa: F811
    a = slots(api, "node-a", lease_duration=77)
    assert a.try_acquire() == "nodeagent-restart-0"
    lease = apiserver.object(f"{LEASES}/nodeagent-restart-0")
    assert lease["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "nodeagent"}
    assert (lease["spec"]["holderIdentity"], lease["spec"]["leaseDurationSeconds"]) == ("node-a", 77)
    assert slots(api, "node-b").try_acquire() is None
    assert slots(api, "node-b", n=2).try_acquire() == "nodeagent-restart-1"


def test_an_expired_holder_is_taken_over_and_counted(apiserver, api):  # noqa: F811
    seed(apiserver, "nodeagent-restart-0", "node-dead", time.time() - 300, duration=60, transitions=4)
    assert slots(api, "node-a").try_acquire() == "nodeagent-restart-0"
    spec = apiserver.object(f"{LEASES}/nodeagent-restart-0")["spec"]
    assert (spec["holderIdentity"], spec["leaseTransitions"]) == ("node-a", 5)


def test_a_live_holder_is_left_alone(apiserver, api):  # noqa: F811
    seed(apiserver, "nodeagent-restart-0", "node-busy", time.time(), duration=60)
    assert slots(api, "node-a").try_acquire() is None
    assert holder(apiserver) == "node-busy"


def test_a_node_that_restarted_mid_hold_gets_its_own_slot_back(apiserver, api):  # noqa: F811
    seed(apiserver, "nodeagent-restart-1", "node-a", time.time(), duration=60, transitions=2)
    assert slots(api, "node-a", n=3).try_acquire() == "nodeagent-restart-1"
    assert apiserver.object(f"{LEASES}/nodeagent-restart-1")["spec"]["leaseTransitions"] == 2


def test_a_lost_race_is_a_conflict_not_a_double_hold(apiserver, api):  # noqa: F811
    seed(apiserver, "nodeagent-restart-0", "", time.time())
    apiserver.inject(409, method="PUT", path_contains="nodeagent-restart-0")
    a = slots(api, "node-a")
    assert a.try_acquire() is None and a.races_lost == 1


# -- renew and release ------------------------------------------------------------------------------


def test_renew_moves_renew_time_with_our_clock_and_release_clears_the_holder(apiserver, api):  # noqa: F811
    now = [1_900_000_000.0]
    a = slots(api, "node-a", clock=lambda: now[0])
    a.try_acquire()
    now[0] += 30
    a.renew()
    spec = apiserver.object(f"{LEASES}/nodeagent-restart-0")["spec"]
    assert spec["renewTime"] == microtime(now[0]) and spec["acquireTime"] == microtime(now[0] - 30)
    a.release()
    spec = apiserver.object(f"{LEASES}/nodeagent-restart-0")["spec"]
    assert "holderIdentity" not in spec and "renewTime" not in spec and a.held is None
    a.renew()
    a.release()  # nothing held: no requests
    assert apiserver.object(f"{LEASES}/nodeagent-restart-0")["spec"] == spec


def test_renew_after_someone_took_the_slot_is_a_conflict(apiserver, api):  # noqa: F811
    a = slots(api, "node-a")
    a.try_acquire()
    seed(apiserver, "nodeagent-restart-0", "node-thief", time.time())
    with pytest.raises(KubeConflict):
        a.renew()


def test_release_leaves_a_slot_that_is_no_longer_ours(apiserver, api):  # noqa: F811
    a = slots(api, "node-a")
    a.try_acquire()
    seed(apiserver, "nodeagent-restart-0", "node-b", time.time())
    a.release()  # 409 with our stale copy, re-read: node-b's now
    assert holder(apiserver) == "node-b" and a.held is None


# -- waiting ----------------------------------------------------------------------------------------


def test_acquire_times_out_with_a_hint(apiserver, api):  # noqa: F811
    seed(apiserver, "nodeagent-restart-0", "node-busy", time.time(), duration=600)
    with pytest.raises(LeaseTimeout, match="no restart slot free in namespace nodeagent after 1s") as e:
        slots(api, "node-a").acquire(timeout=1)
    assert "max_concurrent_restarts" in e.value.hint
    assert holder(apiserver) == "node-busy"


def test_a_waiter_takes_the_slot_when_the_holder_releases(apiserver, api, kc):  # noqa: F811
    with KubeClient(from_kubeconfig(kc)) as other:
        b = slots(other, "node-b")
        b.try_acquire()
        got = []
        waiter = threading.Thread(target=lambda: got.append(slots(api, "node-a").acquire(timeout=30)))
        waiter.start()
        wait_for(lambda: apiserver.count("GET", "/leases", status=200) >= 2, 10, "the waiter's LIST and WATCH")
        assert got == []
        b.release()
        waiter.join(30)
    assert got == ["nodeagent-restart-0"] and holder(apiserver) == "node-a"


def test_a_waiter_takes_the_slot_when_the_holder_expires(apiserver, api):  # noqa: F811
    """The holder never writes again: only the lease's own expiry can wake the waiter."""
    seed(apiserver, "nodeagent-restart-0", "node-dead", time.time(), duration=1)
    assert slots(api, "node-a").acquire(timeout=30) == "nodeagent-restart-0"
    assert holder(apiserver) == "node-a"


def test_hold_renews_in_the_background_and_always_releases(apiserver, api):  # noqa: F811
    a = slots(api, "node-a", lease_duration=1)  # renewed every 1/3 s
    with pytest.raises(RuntimeError):
        with a.hold(timeout=10) as name:
            first = apiserver.object(f"{LEASES}/{name}")["spec"]["renewTime"]
            wait_for(lambda: apiserver.object(f"{LEASES}/{name}")["spec"]["renewTime"] != first, 10, "a renewal")
            raise RuntimeError("the restart failed")
    assert holder(apiserver) is None
    assert not [t for t in threading.enumerate() if t.name == "lease-nodeagent-restart-0"]
