"""RuntimeClass manifests (node.k8s.io/v1) and converging them idempotently.

A RuntimeClass's `handler` must name a handler registered in containerd on the node
(`runsc`, `kata`), not the RuntimeClass name — mixing the two up is the classic mistake
that leaves pods stuck in ContainerCreating with `no runtime for "gvisor" is configured`.
We only ever change RuntimeClasses labelled as managed by nodeagent.
"""

from __future__ import annotations

import copy
from typing import Any, Iterable, Mapping
from urllib.parse import quote

import structlog

from nodeagent.dicts import dig, items, table
from nodeagent.errors import KubeError
from nodeagent.kube.client import KubeClient, KubeConflict
from nodeagent.kube.labels import DEFAULT_PREFIX
from nodeagent import runtimes as runtime_plugins
from nodeagent.runtimes import NAMES

log = structlog.get_logger(__name__)

API_VERSION = "node.k8s.io/v1"
COLLECTION = "/apis/node.k8s.io/v1/runtimeclasses"
MANAGED_BY = {"app.kubernetes.io/managed-by": "nodeagent"}
# The fields we own; anything else on the object (status-ish metadata, others' labels) is ignored.
_SPEC_FIELDS = ("handler", "overhead", "scheduling")


def _path(name: str) -> str:
    return f"{COLLECTION}/{quote(name, safe='')}"


def manifest(name: str, handler: str, *, node_label: str, memory: str | None, cpu: str | None,
             tolerations: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """One RuntimeClass scheduling onto nodes that carry `node_label=true`."""
    obj: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": "RuntimeClass",
        "metadata": {"name": name, "labels": dict(MANAGED_BY)},
        "handler": handler,
    }
    pod_fixed = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v}
    if pod_fixed:
        obj["overhead"] = {"podFixed": pod_fixed}
    scheduling: dict[str, Any] = {"nodeSelector": {node_label: "true"}}
    if tolerations:
        scheduling["tolerations"] = copy.deepcopy(tolerations)
    obj["scheduling"] = scheduling
    return obj


def manifests(settings: Any, runtimes: Iterable[str] = NAMES) -> list[dict[str, Any]]:
    """The RuntimeClasses for the given runtimes, shaped by settings (names, handlers, overhead)."""
    prefix = getattr(settings, "label_prefix", DEFAULT_PREFIX)
    out = []
    for runtime in runtimes:
        plugin = runtime_plugins.get(runtime)
        for rc in plugin.runtime_classes(plugin.options(settings)):
            out.append(manifest(rc.name, rc.handler, node_label=f"{prefix}{rc.label}", memory=rc.memory,
                                cpu=rc.cpu, tolerations=rc.tolerations))
    return out


def _is_managed(obj: Mapping[str, Any]) -> bool:
    labels = table(obj, "metadata", "labels")
    return all(labels.get(k) == v for k, v in MANAGED_BY.items())


def _differs(current: Mapping[str, Any], want: Mapping[str, Any]) -> bool:
    return any(current.get(f) != want.get(f) for f in _SPEC_FIELDS)


def _merged(current: Mapping[str, Any], want: Mapping[str, Any]) -> dict[str, Any]:
    """The current object with our fields replaced; keeps others' labels and the resourceVersion."""
    obj = copy.deepcopy(dict(current))
    for f in _SPEC_FIELDS:
        if f in want:
            obj[f] = copy.deepcopy(want[f])
        else:
            obj.pop(f, None)
    obj.setdefault("metadata", {}).setdefault("labels", {}).update(MANAGED_BY)
    return obj


def converge_one(api: KubeClient, want: Mapping[str, Any]) -> str:
    """Create, update, replace or leave one RuntimeClass; returns what happened.

    `created` | `updated` | `replaced` (handler is immutable, so delete + create) | `unchanged` |
    `foreign` (same name, not ours: left alone).
    """
    name = want["metadata"]["name"]
    for _attempt in range(3):
        current = api.get(_path(name))
        if current is None:
            try:
                api.create(COLLECTION, want)
                return "created"
            except KubeConflict:
                continue  # another node created it first: compare with theirs
        if not _is_managed(current):
            log.warning("RuntimeClass exists and is not managed by nodeagent; leaving it alone", name=name,
                        handler=current.get("handler"))
            return "foreign"
        if not _differs(current, want):
            return "unchanged"
        if current.get("handler") != want.get("handler"):
            # The API server rejects handler changes (immutable field): replace the object.
            api.delete(_path(name))
            try:
                api.create(COLLECTION, want)
            except KubeConflict:
                continue
            return "replaced"
        try:
            api.update(_path(name), _merged(current, want))  # carries resourceVersion: stale → 409
            return "updated"
        except KubeConflict:
            continue
    raise KubeError(f"RuntimeClass {name} kept changing while nodeagent converged it",
                    "another controller is fighting over it; check who manages it (`kubectl get runtimeclass -o yaml`)")


def converge(api: KubeClient, wanted: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Converge every wanted RuntimeClass; {name: action}."""
    return {w["metadata"]["name"]: converge_one(api, w) for w in wanted}


def selects_node(obj: Mapping[str, Any], node_labels: Mapping[str, str] | None) -> bool | None:
    """True/False whether the RuntimeClass's nodeSelector matches; None if it has none (any node)."""
    selector = table(obj, "scheduling", "nodeSelector")
    if not selector:
        return None
    if node_labels is None:
        return None
    return all(node_labels.get(k) == v for k, v in selector.items())


def handler_mismatches(api: KubeClient, registered_handlers: Iterable[str],
                       node_labels: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """RuntimeClasses that can send pods here but whose handler is not registered in containerd.

    Each entry: {"name", "handler", "selects_node": True (nodeSelector matches this node) |
    None (no nodeSelector, or node labels unknown)}. RuntimeClasses selecting other nodes are skipped.
    """
    registered = set(registered_handlers)
    found = []
    for obj in items(api.get(COLLECTION), "items"):
        selects = selects_node(obj, node_labels)
        if selects is False:
            continue
        handler = obj.get("handler")
        if handler not in registered:
            found.append({"name": dig(obj, "metadata", "name"), "handler": handler, "selects_node": selects})
    return found
