"""Reading this node and converging its labels (the side-effecting half of labels.py)."""

from __future__ import annotations

import os
import socket
from typing import Any, Mapping
from urllib.parse import quote

import structlog

from nodeagent.errors import KubeError
from nodeagent.kube.client import KubeClient
from nodeagent.kube.labels import DEFAULT_PREFIX, label_patch, manageable, owned_labels

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
                 prefix: str = DEFAULT_PREFIX) -> dict[str, Any] | None:
    """GET the node, PATCH only if the labels differ; returns the patch sent (None: nothing to do).

    No resourceVersion precondition: kubelet updates the Node's status all the time, which
    would make a precondition fail for no reason, and our patch only names keys we own.
    """
    node = get_node(api, name)
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
