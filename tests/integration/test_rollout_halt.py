"""A rollout that halts itself (issue 16, item 2), against the loopback STAND-IN API server.

No kube-apiserver can be had here: tests/support/fake_apiserver.py is a stand-in enforcing what
the real one does for these calls (resourceVersion conflicts, AlreadyExists, WATCH). 50 agents
(threads, each with its own client and TLS connection) roll out a desired state that fails on
every node: the "restart" records the node as having touched containerd, then fails like a
rollback does. The guard is the agent's own (kube/rollout.py guarded_restart, RestartSlots,
RolloutRecord); only containerd is simulated. Time is scaled down as in test_kube_lease.py.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from nodeagent.errors import NodeagentError
from nodeagent.kube.client import KubeClient
from nodeagent.kube.credentials import from_kubeconfig
from nodeagent.kube.lease import RestartSlots
from nodeagent.kube.rollout import (RECORD_NAME, RolloutHalted, RolloutRecord, SandboxCheckFailed,
                                    desired_state_hash, guarded_restart)
from nodeagent.settings import Settings
from tests.support.cli import assert_known_error, run_cli
from tests.support.fake_apiserver import TOKEN, apiserver, kc, kubeconfig_text, pki  # noqa: F401 (fixtures)

NS = "nodeagent"
RECORD = f"/api/v1/namespaces/{NS}/configmaps/{RECORD_NAME}"


class FakeRollback(NodeagentError):
    """What converge.RolledBack looks like to the guard (a rollback after a failed health check)."""

    rolled_back = True



def roll_out(kc: str, agents: int, slots: int, max_failures: int, desired: str, fails: bool = True,
             rounds: int = 2):
    """Every agent tries `rounds` times (a failed agent retries, as the real one does after back-off)."""
    touched: list[str] = []
    halted: set[str] = set()
    failed: set[str] = set()
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(agents)

    def restart(node: str) -> None:  # "systemctl restart containerd" + health check
        with lock:
            touched.append(node)
        time.sleep(0.03)
        if fails:
            raise FakeRollback(f"{node}: containerd did not become healthy; rolled back")

    def agent(i: int) -> None:
        node = f"node-{i:03d}"
        try:
            with KubeClient(from_kubeconfig(kc)) as api:
                record = RolloutRecord(api, NS, desired, max_failures)
                slots_ = RestartSlots(api, node, slots=slots, namespace=NS, poll=0.5, claim_jitter=0.02)
                barrier.wait()
                for _ in range(rounds):
                    try:
                        with guarded_restart(record, slots_, node, 120, check_sandbox=lambda: None):
                            restart(node)
                        return
                    except RolloutHalted:
                        with lock:
                            halted.add(node)
                        return
                    except FakeRollback:
                        with lock:
                            failed.add(node)
        except Exception as exc:  # surfaced with the agent's name below
            errors.append(f"{node}: {exc!r}")

    threads = [threading.Thread(target=agent, args=(i,)) for i in range(agents)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    return touched, halted, failed, errors


def test_a_rollout_failing_everywhere_halts_after_max_failures(apiserver, kc):  # noqa: F811
    agents, slots, max_failures = 50, 2, 3
    touched, halted, failed, errors = roll_out(kc, agents, slots, max_failures, "aaaa000011112222")
    assert errors == []
    restarted = set(touched)
    print(f"\n[rollout] {agents} agents, {slots} slots, max_failures {max_failures}: "
          f"{len(restarted)} nodes restarted containerd ({len(touched)} restarts), {len(halted)} halted")
    assert len(restarted) <= slots + max_failures
    assert len(restarted) >= max_failures  # it did halt because of failures, not by accident
    assert restarted == failed
    everyone = {f"node-{i:03d}" for i in range(agents)}
    assert everyone - restarted <= halted, "the rest never touched containerd: they stopped at the record"
    assert restarted & halted, "a failed node that retries is halted too (no second restart)"
    entry = json.loads(apiserver.object(RECORD)["data"]["aaaa000011112222"])
    assert set(entry["failures"]) == restarted
    assert all("rolled back" in f["reason"] for f in entry["failures"].values())
    assert apiserver.max_lease_holders <= slots and apiserver.lease_steals == []


def test_a_new_desired_state_counts_anew_and_resume_clears_the_record(apiserver, kc):  # noqa: F811
    with KubeClient(from_kubeconfig(kc)) as api:
        for node in ("node-a", "node-b"):
            RolloutRecord(api, NS, "old0000000000000", 2).record_failure(node, "rolled back: x")
        old = RolloutRecord(api, NS, "old0000000000000", 2)
        with pytest.raises(RolloutHalted) as err:
            old.check()
        assert "node-a, node-b" in err.value.message and "rollout resume" in err.value.hint
        RolloutRecord(api, NS, "new0000000000000", 2).check()  # a changed desired state: not halted
        RolloutRecord(api, NS, "old0000000000000", 0).check()  # 0: never halts
    # the good rollout goes on, converged nodes stay: restart succeeds, nothing is recorded
    touched, halted, failed, errors = roll_out(kc, 6, 2, 2, "new0000000000000", fails=False, rounds=1)
    assert errors == [] and len(set(touched)) == 6 and not halted and not failed
    env = {"KUBECONFIG": kc, "POD_NAMESPACE": NS}
    status = run_cli("rollout", "status", "-o", "json", env={**env, "NODEAGENT_ROLLOUT_MAX_FAILURES": "2"})
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)["desired_states"]
    assert data["old0000000000000"]["halted"] is True and set(data["old0000000000000"]["failures"]) == {"node-a", "node-b"}
    assert "new0000000000000" not in data
    resumed = run_cli("rollout", "resume", env=env)
    assert resumed.returncode == 0 and "rollout resumed" in resumed.stdout, resumed.stderr
    assert apiserver.object(RECORD) is None
    with KubeClient(from_kubeconfig(kc)) as api:
        RolloutRecord(api, NS, "old0000000000000", 2).check()  # resumed
    again = run_cli("rollout", "resume", env=env)
    assert again.returncode == 0 and "nothing to resume" in again.stdout


def test_a_failed_sandbox_check_after_the_restart_counts_and_is_recorded_before_the_slot_goes(apiserver, kc):  # noqa: F811
    seen_holder = []
    with KubeClient(from_kubeconfig(kc)) as api:
        record = RolloutRecord(api, NS, "cafe000000000000", 3)
        slots = RestartSlots(api, "node-a", slots=1, namespace=NS)

        def check() -> str:
            lease = apiserver.object(f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/nodeagent-restart-0")
            seen_holder.append(lease["spec"].get("holderIdentity"))
            return "gvisor: the sandbox reports the host's own kernel"

        with pytest.raises(SandboxCheckFailed):
            with guarded_restart(record, slots, "node-a", 10, check_sandbox=check):
                pass
        assert seen_holder == ["node-a"]  # checked while the slot was still held
        assert "host's own kernel" in record.failures()["node-a"]["reason"]
        assert "holderIdentity" not in apiserver.object(
            f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/nodeagent-restart-0")["spec"]


def test_concurrent_failures_are_all_recorded(apiserver, kc):  # noqa: F811
    """resourceVersion conflicts (and AlreadyExists on the first create) are retried, none lost."""
    barrier = threading.Barrier(20)

    def fail(i: int) -> None:
        with KubeClient(from_kubeconfig(kc)) as api:
            barrier.wait()
            RolloutRecord(api, NS, "beef000000000000", 3).record_failure(f"node-{i:02d}", "rolled back")

    threads = [threading.Thread(target=fail, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    entry = json.loads(apiserver.object(RECORD)["data"]["beef000000000000"])
    assert len(entry["failures"]) == 20
    assert apiserver.count(status=409) > 0, "the writers really raced"


def test_the_desired_state_hash_follows_what_is_installed_not_where():
    base = Settings()
    assert desired_state_hash(base) == desired_state_hash(Settings(node_name="x", root="/host", interval=5))
    assert desired_state_hash(base) != desired_state_hash(Settings(gvisor_version="20240729.0"))
    assert desired_state_hash(base) != desired_state_hash(Settings(runtime="gvisor"))


@pytest.mark.parametrize("args, says", [
    (["agent", "--once", "--rollout-max-failures", "-1"], "invalid rollout-max-failures -1"),
    (["agent", "--once", "--startup-taint", "sandbox.nodeagent.io/not-ready:NoSchedule"], "not a taint key"),
    (["agent", "--once", "--startup-taint", "bad key"], "not a taint key"),
    (["rollout", "pause"], "invalid choice: 'pause'"),
])
def test_bad_fleet_settings_are_usage_errors_and_change_nothing(tmp_path, args, says):
    from tests.support.tree import diff_snapshots, snapshot

    root = tmp_path / "root"
    (root / "etc/containerd").mkdir(parents=True)
    (root / "etc/containerd/config.toml").write_text('version = 2\n')
    before = snapshot(root)
    proc = run_cli(*args, "--root", str(root), env={"KUBECONFIG": str(tmp_path / "none")})
    assert says in assert_known_error(proc, exit_code=64)
    assert diff_snapshots(before, snapshot(root)) == []
