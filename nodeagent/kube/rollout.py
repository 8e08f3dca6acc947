"""A rollout that halts itself: after `rollout_max_failures` nodes failed one desired state, no
agent restarts containerd for it any more.

kata-deploy keeps going when nodes fail; with restart slots alone a bad config (a runtime that
does not start on this kernel, a handler containerd rejects) still walks through the whole fleet,
one rollback at a time. Here every agent records its failed converge (a rollback, which includes
a health timeout after the restart, or a failed sandbox check right after it) in one ConfigMap
in its namespace, `nodeagent-rollout`, keyed by the desired-state hash: the settings that shape
what is installed, plus nodeagent's version. Before taking a restart slot, and again once it
holds one, an agent reads the record; with `rollout_max_failures` distinct nodes in it for its
desired state it stops there (RolloutHalted) and touches nothing. Failures are recorded while
the failing node still holds its slot, so at most `slots + max_failures - 1` nodes ever restart
for a desired state that fails everywhere. Nodes already converged are left as they are.

Distinct nodes, not attempts: one flaky node retrying must not halt the fleet on its own.
A changed desired state is a new key, so it starts a new count; the record keeps the last few.
`nodeagent rollout resume` (or `kubectl delete configmap nodeagent-rollout`) clears the record.
Writes carry the resourceVersion read; a 409 re-reads and retries.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import random
import time
from typing import Any, Callable, Iterator
from urllib.parse import quote

import structlog

from nodeagent import __version__
from nodeagent.errors import KubeError, NodeagentError
from nodeagent.kube.client import KubeClient, KubeConflict
from nodeagent.dicts import table

log = structlog.get_logger(__name__)

RECORD_NAME = "nodeagent-rollout"
KEEP_ROLLOUTS = 5  # desired states kept in the record (the newest by last failure)
MAX_NODES = 100  # failures kept per desired state: far above any sane rollout_max_failures
# Settings that differ per node or only say how to run, not what the node should end up with.
NOT_DESIRED_STATE = frozenset({
    "root", "config", "output", "log_format", "verbosity", "kubeconfig", "node_name", "containerd_config",
    "containerd_socket", "force", "dry_run", "health_timeout", "download_timeout", "download_retries",
    "download_backoff", "max_download_size", "label_prefix", "kata_compat_label", "gvisor_runtimeclass",
    "kata_runtimeclass", "gvisor_overhead_memory", "gvisor_overhead_cpu", "kata_overhead_memory",
    "kata_overhead_cpu", "max_concurrent_restarts", "interval", "listen", "rollout_max_failures",
    "startup_taint",
})


class RolloutHalted(NodeagentError):
    """Too many nodes failed this desired state: this node does not restart containerd for it."""

    rollout_halted = True
    default_hint = ("fix the settings (or the nodes) that failed, then `nodeagent rollout resume` "
                    "(or `kubectl -n <namespace> delete configmap nodeagent-rollout`); "
                    "`nodeagent rollout status` lists the failed nodes and why")


class SandboxCheckFailed(NodeagentError):
    """containerd came back healthy, but a sandbox did not start or was not isolated."""

    default_hint = "run `nodeagent verify` on the node to see why; the failure counts towards halting the rollout"


def desired_state_hash(settings: Any) -> str:
    """What the fleet converges to: every setting that shapes the install, and our version."""
    fields = {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)
              if f.name not in NOT_DESIRED_STATE}
    text = json.dumps({"nodeagent": __version__, "settings": fields}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _entry(data: dict[str, str], key: str) -> dict[str, Any]:
    try:
        entry = json.loads(data.get(key) or "{}")
    except ValueError:
        entry = {}
    failures = entry.get("failures") if isinstance(entry, dict) else None
    return {"failures": failures if isinstance(failures, dict) else {}}


def _prune(data: dict[str, str], keep: str) -> dict[str, str]:
    """The newest KEEP_ROLLOUTS desired states (by their last failure), always including `keep`."""
    def last(key: str) -> str:
        return max((f.get("at") or "" for f in _entry(data, key)["failures"].values()), default="")

    newest = sorted((k for k in data if k != keep), key=last, reverse=True)[:KEEP_ROLLOUTS - 1]
    return {k: v for k, v in data.items() if k == keep or k in newest}


class RolloutRecord:
    """The `nodeagent-rollout` ConfigMap, as one desired state sees it."""

    def __init__(self, api: KubeClient, namespace: str, desired: str, max_failures: int,
                 sleep: Callable[[float], None] = time.sleep):
        self.api = api
        self.namespace = namespace
        self.desired = desired
        self.max_failures = max_failures
        self._sleep = sleep

    @property
    def collection(self) -> str:
        return f"/api/v1/namespaces/{quote(self.namespace, safe='')}/configmaps"

    @property
    def path(self) -> str:
        return f"{self.collection}/{RECORD_NAME}"

    def failures(self) -> dict[str, dict[str, str]]:
        """Node -> {"reason", "at"} for this desired state (one GET)."""
        return _entry(dict(table(self.api.get(self.path), "data")), self.desired)["failures"]

    def check(self) -> None:
        """RolloutHalted when `max_failures` nodes failed this desired state (0: never halts)."""
        if self.max_failures <= 0:
            return
        failed = self.failures()
        if len(failed) >= self.max_failures:
            names = ", ".join(sorted(failed)[:5]) + (", ..." if len(failed) > 5 else "")
            raise RolloutHalted(f"rollout halted: {len(failed)} node(s) failed desired state {self.desired} "
                                f"(rollout_max_failures {self.max_failures}): {names}; containerd is not restarted")

    def record_failure(self, node: str, reason: str) -> int:
        """Add this node's failure; returns how many nodes failed this desired state."""
        for _attempt in range(12):
            record = self.api.get(self.path)
            data = dict(table(record, "data"))
            entry = _entry(data, self.desired)
            if node in entry["failures"] or len(entry["failures"]) < MAX_NODES:
                entry["failures"][node] = {"reason": reason[:300], "at": _now()}
            data[self.desired] = json.dumps(entry, sort_keys=True)
            data = _prune(data, self.desired)
            try:
                if record is None:
                    self.api.create(self.collection, {
                        "apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": RECORD_NAME, "namespace": self.namespace,
                                     "labels": {"app.kubernetes.io/managed-by": "nodeagent"}},
                        "data": data})
                else:
                    self.api.update(self.path, dict(record, data=data))  # carries its resourceVersion
            except KubeConflict:
                self._sleep(random.random() * 0.2)  # another node wrote first: read again
                continue
            log.warning("rollout failure recorded", node=node, desired_state=self.desired,
                        failed_nodes=len(entry["failures"]), max_failures=self.max_failures)
            return len(entry["failures"])
        raise KubeError(f"could not record this node's failure in configmap {RECORD_NAME}: too many concurrent writers")


@contextlib.contextmanager
def guarded_restart(record: RolloutRecord, slots: Any, node: str, timeout: float,
                    check_sandbox: Callable[[], str | None]) -> Iterator[None]:
    """Around a containerd restart: refuse when halted, hold a restart slot, and record a
    rollback or a failed sandbox check (`check_sandbox()` -> None or the problem) before the
    slot is released, so that the next node to take the slot sees it."""
    record.check()
    with slots.hold(timeout):
        record.check()  # the rollout may have halted while we waited for the slot
        try:
            yield
        except NodeagentError as exc:
            if getattr(exc, "rolled_back", False):
                _record(record, node, f"rolled back: {exc.message}")
            raise
        problem = check_sandbox()
        if problem:
            _record(record, node, f"sandbox check failed after the restart: {problem}")
            raise SandboxCheckFailed(f"containerd restarted and is healthy, but {problem}")


def _record(record: RolloutRecord, node: str, reason: str) -> None:
    try:
        record.record_failure(node, reason)
    except KubeError as exc:  # the node's own failure is what the operator must see
        log.error("could not record the failure for halting the rollout", error=exc.message)


def status(api: KubeClient, namespace: str) -> dict[str, Any]:
    """Every desired state in the record: its failed nodes with reasons."""
    record = api.get(f"/api/v1/namespaces/{quote(namespace, safe='')}/configmaps/{RECORD_NAME}")
    data = dict(table(record, "data"))
    return {key: _entry(data, key)["failures"] for key in sorted(data)}


def resume(api: KubeClient, namespace: str) -> bool:
    """Clear the record (every desired state); True if there was one."""
    return api.delete(f"/api/v1/namespaces/{quote(namespace, safe='')}/configmaps/{RECORD_NAME}")
