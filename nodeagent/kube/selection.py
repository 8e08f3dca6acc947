"""Does our DaemonSet still select this node? Decides whether SIGTERM means "uninstall".

A rolling update or a drain also stops the agent's pod; uninstalling then would restart
containerd and drop handlers running pods rely on. Only when the DaemonSet is gone, being
deleted, or its node selection no longer matches this node, is the node being given up.
Taints are not evaluated: our DaemonSet tolerates everything (deploy/daemonset.yaml).
"""

from __future__ import annotations

import os
from typing import Any, Mapping
from urllib.parse import quote

from nodeagent.dicts import dig, table
from nodeagent.kube.client import KubeClient
from nodeagent.kube.nodes import get_node


def _expression_matches(expr: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
    if op == "In":
        return key in labels and labels[key] in values
    if op == "NotIn":
        return key not in labels or labels[key] not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    if op in ("Gt", "Lt"):
        try:
            have, want = int(labels[key]), int(values[0])
        except (KeyError, ValueError, IndexError):
            return False
        return have > want if op == "Gt" else have < want
    return False


def pod_spec_selects(spec: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    """nodeSelector AND required node affinity (terms OR-ed, expressions AND-ed) against a Node."""
    labels = table(node, "metadata", "labels")
    name = dig(node, "metadata", "name")
    for key, value in table(spec, "nodeSelector").items():
        if labels.get(key) != value:
            return False
    required = table(spec, "affinity", "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution")
    terms = required.get("nodeSelectorTerms") or []
    if not terms:
        return True
    for term in terms:
        exprs_ok = all(_expression_matches(e, labels) for e in term.get("matchExpressions") or [])
        fields_ok = all(
            _expression_matches({**f, "key": "metadata.name"}, {"metadata.name": name})
            for f in term.get("matchFields") or []
        )
        if exprs_ok and fields_ok and (term.get("matchExpressions") or term.get("matchFields")):
            return True
    return False


def still_selected(api: KubeClient, node_name: str, *, namespace: str | None = None,
                   daemonset: str | None = None) -> bool:
    """True while our DaemonSet exists, is not being deleted and selects this node."""
    namespace = namespace or os.environ.get("POD_NAMESPACE") or "nodeagent"
    daemonset = daemonset or os.environ.get("NODEAGENT_DAEMONSET") or "nodeagent"
    ds = api.get(f"/apis/apps/v1/namespaces/{quote(namespace, safe='')}/daemonsets/{quote(daemonset, safe='')}")
    if ds is None or dig(ds, "metadata", "deletionTimestamp"):
        return False
    spec = table(ds, "spec", "template", "spec")
    return pod_spec_selects(spec, get_node(api, node_name))
