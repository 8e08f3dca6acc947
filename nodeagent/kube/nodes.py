"""Reading this node, converging its labels (the side-effecting half of labels.py), and removing
its startup taint.

The startup taint (`startup_taint`, e.g. `sandbox.nodeagent.io/not-ready:NoSchedule`) is put on a
new Node by its provisioner (Karpenter's startupTaints, a cluster-autoscaler node template) so
nothing that needs the sandbox runtime lands before it is installed. The agent removes it once,
when the node converged and a sandbox check passed, and never puts it back: a NoSchedule taint
evicts nothing, so re-adding it on a later degradation would not protect running pods, would
keep new pods of every kind off the node (not just sandboxed ones: the runtime labels already
do that), and would fight the provisioner, which treats a node whose startup taint returns as
not initialized. A degraded node says so in its state label (`state=degraded`) and loses its
runtime labels, so sandboxed pods stop landing there; deploy/admission-policy.yaml lets the agent
remove that one taint and add none.
"""

from __future__ import annotations

import os
import socket
from typing import Any, Mapping
from urllib.parse import quote

import structlog

from nodeagent.errors import KubeError
from nodeagent.kube.client import KubeClient, KubeInvalid
from nodeagent.kube.labels import DEFAULT_PREFIX, label_patch, manageable, owned_labels
from nodeagent.dicts import items

log = structlog.get_logger(__name__)


def node_name(settings: Any = None, environ: Mapping[str, str] | None = None) -> str:
    """--node-name / settings.node_name, else NODE_NAME (downward API), else the hostname."""
    environ = os.environ if environ is None else environ
    return (getattr(settings, "node_name", None) or environ.get("NODE_NAME") or socket.gethostname()).strip()


def node_path(name: str) -> str:
    return f"/api/v1/nodes/{quote(name, safe='')}"


def get_node(api: KubeClient, name: str) -> dict[str, Any]:
    node = api.get(node_path(name))
    if node is None:
        raise KubeError(f"node {name!r} does not exist in the cluster",
                        "pass --node-name (or set NODE_NAME) to this node's name as `kubectl get nodes` shows it")
    return node


def apply_labels(api: KubeClient, name: str, desired: Mapping[str, str],
                 prefix: str = DEFAULT_PREFIX, node: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """GET the node, PATCH only if the labels differ; returns the patch sent (None: nothing to do).

    No resourceVersion precondition: kubelet updates the Node's status all the time, which
    would make a precondition fail for no reason, and our patch only names keys we own.
    """
    node = node if node is not None else get_node(api, name)
    foreign = sorted(k for k in owned_labels(node) if not manageable(k, prefix))
    if foreign:  # someone who can edit the Node wrote them there: say so, touch nothing
        log.warning("owned-labels annotation names labels outside our prefix; left alone", node=name, labels=foreign)
    patch = label_patch(node, desired, prefix)
    if patch is None:
        log.debug("node labels up to date", node=name)
        return None
    api.patch(node_path(name), patch, strategy="merge")
    log.info("node labels patched", node=name, labels=patch["metadata"].get("labels", {}))
    return patch


def has_taint(node: Mapping[str, Any], key: str) -> bool:
    return any(t.get("key") == key for t in items(node, "spec", "taints"))


def taint_removal(node: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    """A JSON patch removing every taint with `key` (one per effect) and nothing else.

    Each removal is preceded by a `test` of that exact taint at that index, so a concurrent edit
    of the taints (the provisioner, an operator, another controller) makes the API server refuse
    the whole patch (422) instead of removing the wrong entry. Highest index first, so the
    indices of the remaining removals stay valid. Other edits of the Node do not conflict
    (unlike a resourceVersion precondition, which the kubelet's status updates break all the time).
    """
    taints = items(node, "spec", "taints")
    ops: list[dict[str, Any]] = []
    for index in reversed(range(len(taints))):
        if taints[index].get("key") == key:
            ops.append({"op": "test", "path": f"/spec/taints/{index}", "value": taints[index]})
            ops.append({"op": "remove", "path": f"/spec/taints/{index}"})
    return ops


def remove_startup_taint(api: KubeClient, name: str, key: str, node: Mapping[str, Any] | None = None,
                         attempts: int = 5) -> bool:
    """Remove the startup taint `key` from the Node; True if it was there. Never adds a taint."""
    for _attempt in range(attempts):
        node = node if node is not None else get_node(api, name)
        ops = taint_removal(node, key)
        if not ops:
            return False
        try:
            api.patch(node_path(name), ops, strategy="json")
        except KubeInvalid:  # a `test` failed: the taints changed since we read them
            node = None
            continue
        log.info("startup taint removed", node=name, taint=key)
        return True
    raise KubeError(f"could not remove the startup taint {key} from node {name}: its taints kept changing",
                    "the agent tries again next round; check who else edits the Node's taints")
