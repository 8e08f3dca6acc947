"""Fleet safety: at most N nodes restart containerd at once, coordinated through Leases.

Hundreds of simulated agents (threads, each with its own client and TLS connection) race against
the loopback HTTPS stand-in API server (a stand-in: no kube-apiserver can be had here). The limit is
checked twice: by the agents themselves (who is inside the "restart" right now) and by the stand-in
(how many unexpired holders the Leases name after every write, and whether a valid holder was ever
overwritten). Time is scaled down (restart 40 ms, poll 0.4 s) to keep the test short; the request
counts scale with wait/poll, so they are reported per node for these settings.
"""

import statistics
import threading
import time

import pytest

from nodeagent.kube.client import KubeClient
from nodeagent.kube.credentials import from_kubeconfig
from nodeagent.kube.lease import LeaseTimeout, RestartSlots, microtime
from nodeagent.kube.nodes import apply_labels
from tests.support.fake_apiserver import apiserver, kc, pki  # noqa: F401 (fixtures)

NS = "nodeagent"
LEASES = f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases"


def run_fleet(kc, agents: int, slots: int, restart_seconds: float, poll: float):
    inside = 0
    max_inside = 0
    lock = threading.Lock()
    requests = [0] * agents
    errors = []
    start = threading.Barrier(agents)

    def agent(i):
        nonlocal inside, max_inside
        try:
            with KubeClient(from_kubeconfig(kc)) as api:
                start.wait()
                with RestartSlots(api, f"node-{i:03d}", slots=slots, namespace=NS, poll=poll,
                                 claim_jitter=poll / 10).hold(timeout=120):
                    with lock:
                        inside += 1
                        max_inside = max(max_inside, inside)
                    time.sleep(restart_seconds)  # "systemctl restart containerd" + health check
                    with lock:
                        inside -= 1
                requests[i] = api.requests_made
        except Exception as exc:  # surfaced below with the agent's number
            errors.append(f"node-{i}: {exc!r}")

    threads = [threading.Thread(target=agent, args=(i,)) for i in range(agents)]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    return max_inside, requests, errors, time.monotonic() - began


@pytest.mark.parametrize("slots", [1, 3])
def test_lease_limit_holds_with_200_agents_racing(apiserver, kc, slots):  # noqa: F811
    agents = 200
    max_inside, requests, errors, took = run_fleet(kc, agents, slots, restart_seconds=0.02, poll=1.0)
    assert errors == []
    assert all(requests), "every agent got its turn"
    assert max_inside <= slots, f"{max_inside} agents restarted at once with {slots} slot(s)"
    assert max_inside == slots, "the slots were actually used in parallel"
    assert apiserver.max_lease_holders <= slots and apiserver.lease_steals == []
    lease_requests = apiserver.count(path_contains="/leases")
    print(f"\n[lease] {agents} agents, {slots} slot(s): rollout {took:.1f}s, "
          f"lease requests per node: mean {lease_requests / agents:.1f}, median {statistics.median(requests)}, "
          f"max {max(requests)}; conflicts (409): {apiserver.count(status=409)}")
    # every slot is free again at the end
    assert all(not (l.get("spec") or {}).get("holderIdentity") for l in apiserver.store.objects[LEASES].values())


def test_a_dead_holder_is_taken_over_only_after_expiry(apiserver, kc):  # noqa: F811
    with KubeClient(from_kubeconfig(kc)) as api:
        dead = RestartSlots(api, "node-dead", slots=1, namespace=NS, lease_duration=1)
        assert dead.try_acquire() == "nodeagent-restart-0"  # ...and then the node dies: no renew, no release
        waiter = RestartSlots(api, "node-next", slots=1, namespace=NS, poll=0.1)
        assert waiter.try_acquire() is None  # still valid
        began = time.monotonic()
        assert waiter.acquire(timeout=10) == "nodeagent-restart-0"
        assert time.monotonic() - began >= 0.5
        lease = apiserver.object(f"{LEASES}/nodeagent-restart-0")
        assert lease["spec"]["holderIdentity"] == "node-next" and lease["spec"]["leaseTransitions"] == 1
        assert apiserver.lease_steals == []
        with pytest.raises(LeaseTimeout) as err:
            RestartSlots(api, "node-late", slots=1, namespace=NS, poll=0.05).acquire(timeout=0.3)
        assert "max_concurrent_restarts" in err.value.hint
        waiter.release()
        assert "holderIdentity" not in apiserver.object(f"{LEASES}/nodeagent-restart-0")["spec"]


def test_renew_keeps_a_long_restart_safe(apiserver, kc):  # noqa: F811
    with KubeClient(from_kubeconfig(kc)) as api:
        slots = RestartSlots(api, "node-slow", slots=1, namespace=NS, lease_duration=1)
        with slots.hold(timeout=5):
            time.sleep(1.6)  # longer than the lease: the background renewer keeps it ours
            other = RestartSlots(api, "node-other", slots=1, namespace=NS)
            assert other.try_acquire() is None
        assert other.try_acquire() == "nodeagent-restart-0"
    assert apiserver.lease_steals == []


def test_a_restarted_agent_finds_its_own_slot(apiserver, kc):  # noqa: F811
    with KubeClient(from_kubeconfig(kc)) as api:
        assert RestartSlots(api, "node-a", slots=2, namespace=NS).try_acquire()
        again = RestartSlots(api, "node-a", slots=2, namespace=NS)
        held = again.try_acquire()
        assert held and sum(1 for l in apiserver.store.objects[LEASES].values()
                            if l["spec"].get("holderIdentity") == "node-a") == 1


def test_at_rest_an_agent_makes_no_lease_requests(apiserver, kc):  # noqa: F811
    """The steady state: one label check (GET node, no PATCH) per agent interval, no Lease traffic."""
    apiserver.put_object("/api/v1/nodes/node-a", {"metadata": {"labels": {}}})
    desired = {"sandbox.nodeagent.io/state": "ready"}
    with KubeClient(from_kubeconfig(kc)) as api:
        apply_labels(api, "node-a", desired)
        apiserver.reset_records()
        checks = 12  # one hour at the default 300 s interval
        for _ in range(checks):
            assert apply_labels(api, "node-a", desired) is None
    assert apiserver.count(path_contains="/leases") == 0
    assert apiserver.count("PATCH") == 0
    per_hour = apiserver.count() / checks * (3600 / 300)
    print(f"\n[lease] at rest: {per_hour:.0f} API requests per node per hour (interval 300 s), 0 of them Lease requests")
    assert per_hour == 12


def test_microtime_roundtrip():
    from nodeagent.kube.lease import parse_microtime

    assert abs(parse_microtime(microtime(1700000000.25)) - 1700000000.25) < 1e-6


def _hold_in_thread(api, identity: str, release: threading.Event, **kw) -> threading.Thread:
    slots = RestartSlots(api, identity, slots=1, namespace=NS, **kw)
    held = threading.Event()

    def run():
        with slots.hold(timeout=30):
            held.set()
            release.wait(30)

    t = threading.Thread(target=run)
    t.start()
    assert held.wait(10)
    return t


def test_a_waiting_agent_watches_instead_of_listing(apiserver, kc):  # noqa: F811
    """One LIST, then one WATCH: the release wakes the waiter, no LIST per poll."""
    release = threading.Event()
    with KubeClient(from_kubeconfig(kc)) as holder_api, KubeClient(from_kubeconfig(kc)) as api:
        holder = _hold_in_thread(holder_api, "node-holder", release)
        apiserver.reset_records()
        got = []
        waiter = threading.Thread(target=lambda: got.append(
            RestartSlots(api, "node-waiter", slots=1, namespace=NS, poll=0.05, claim_jitter=0.01).acquire(30)))
        waiter.start()
        time.sleep(1.5)  # 30 polls' worth of waiting
        assert got == []
        release.set()
        waiter.join(30)
        holder.join(10)
    assert got == ["nodeagent-restart-0"]
    lists = [r for r in apiserver.records if r.method == "GET" and "/leases" in r.path and not r.watch]
    watches = [r for r in apiserver.records if r.watch]
    assert len(lists) == 1, "a waiter LISTs once, then watches"
    assert len(watches) == 1


def test_a_watch_that_expired_lists_again_and_a_broken_one_reconnects(apiserver, kc):  # noqa: F811
    """410 Gone (history compacted while the watch was down) -> LIST again; a cut stream and
    503s on reconnect -> back-off and reconnect; the waiter still gets the slot on release."""
    release = threading.Event()
    with KubeClient(from_kubeconfig(kc)) as holder_api, KubeClient(from_kubeconfig(kc)) as api:
        holder = _hold_in_thread(holder_api, "node-holder", release)
        apiserver.reset_records()
        got, slots = [], RestartSlots(api, "node-waiter", slots=1, namespace=NS, poll=0.05, claim_jitter=0.01)
        waiter = threading.Thread(target=lambda: got.append(slots.acquire(60)))
        waiter.start()
        wait_until = time.monotonic() + 10
        while not any(r.watch for r in apiserver.records) and time.monotonic() < wait_until:
            time.sleep(0.05)
        apiserver.inject(503, times=2, method="GET", path_contains="/leases")
        apiserver.drop_watches()
        with KubeClient(from_kubeconfig(kc)) as other:  # history moves on while the watch is cut...
            other.create(LEASES, {"metadata": {"name": "unrelated"}, "spec": {}})
        apiserver.compact()  # ...and the server forgets it: the waiter's version is too old now
        time.sleep(3)  # back-off after two 503s, then 410, then LIST, then WATCH again
        release.set()
        waiter.join(60)
        holder.join(10)
    assert got == ["nodeagent-restart-0"]
    assert apiserver.count(status=503) == 2
    lists = [r for r in apiserver.records if r.method == "GET" and "/leases" in r.path and not r.watch
             and r.status == 200]
    assert len(lists) == 2, "one LIST at the start, one after 410 Gone"
    assert sum(1 for r in apiserver.records if r.watch and r.status == 200) >= 2


def test_a_view_relists_on_an_http_410_too(apiserver, kc):  # noqa: F811
    """kube-apiserver answers a too-old watch either with an ERROR event (above) or an HTTP 410."""
    from nodeagent.kube.watch import CollectionView

    with KubeClient(from_kubeconfig(kc)) as api, KubeClient(from_kubeconfig(kc)) as other:
        view = CollectionView(api, LEASES, timeout_seconds=30)
        view.relist()
        apiserver.inject(410, times=1, method="GET", path_contains="/leases")
        view.start()
        try:
            other.create(LEASES, {"metadata": {"name": "seen"}, "spec": {}})
            deadline = time.monotonic() + 10
            while "seen" not in view.snapshot() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert "seen" in view.snapshot()
            assert view.relists == 2
        finally:
            view.stop()
    assert apiserver.count(status=410) == 1
