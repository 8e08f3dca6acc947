"""Node labels as a pure function of facts, and the patch that gets a Node there.

Like node-feature-discovery, the labels we manage are recorded in one annotation
(`sandbox.nodeagent.io/owned-labels`, full keys, comma-separated, sorted). The patch removes
owned labels that are no longer desired and never touches anyone else's, even under our prefix.
A runtime label (`gvisor=true`, `kata=true`) exists only while that runtime is registered in
containerd, served by CRI and its shim is on containerd's PATH; otherwise it is absent, never
"false" (so `nodeSelector: {gvisor: "true"}` is the one way to ask for it).
"""

from __future__ import annotations

from typing import Any, Mapping

from nodeagent.dicts import table
from nodeagent.facts import HostFacts, Virtualization
from nodeagent.runtimes import NAMES

DEFAULT_PREFIX = "sandbox.nodeagent.io/"
# Fixed (not derived from the prefix) so a prefix change still finds and removes the old labels.
OWNED_ANNOTATION = "sandbox.nodeagent.io/owned-labels"
KATA_COMPAT_LABEL = "katacontainers.io/kata-runtime"
STATES = ("installing", "ready", "degraded", "removing", "halted")  # halted: kube/rollout.py
RUNTIMES = NAMES


def runtime_ready(status: Mapping[str, Any] | None) -> bool:
    """Registered in containerd, served by CRI, and the shim is present: all three."""
    status = status or {}
    return bool(status.get("registered")) and bool(status.get("served")) and bool(status.get("shim_present"))


def infer_state(runtimes: Mapping[str, Mapping[str, Any]]) -> str:
    """`degraded` if a registered runtime is not ready, `ready` if some runtime is, else `installing`."""
    registered = [name for name, st in runtimes.items() if (st or {}).get("registered")]
    if any(not runtime_ready(runtimes[name]) for name in registered):
        return "degraded"
    return "ready" if registered else "installing"


def _bool(value: Any) -> str:
    return "true" if value else "false"


def nested_virt(virt: Virtualization) -> bool:
    """The vendor module's `nested` parameter when it has one; otherwise KVM usable inside a VM
    is nested virtualization by definition (e.g. kvm_pvm, which has no `nested` parameter)."""
    if virt.nested is not None:
        return bool(virt.nested)
    return bool(virt.in_vm) and bool(virt.kvm_usable)


def desired_labels(
    facts: HostFacts,
    runtimes: Mapping[str, Mapping[str, Any]],
    state: str,
    *,
    prefix: str = DEFAULT_PREFIX,
    kata_compat: bool = False,
    gvisor_platform: str | None = None,
) -> dict[str, str]:
    """The full set of labels nodeagent wants on this node (keys with prefix)."""
    if state not in STATES:
        raise ValueError(f"state must be one of {STATES}, not {state!r}")
    virt = facts.virtualization
    labels = {
        f"{prefix}kvm": _bool(virt.kvm_usable),
        f"{prefix}nested-virt": _bool(nested_virt(virt)),
        f"{prefix}state": state,
    }
    if state != "removing":
        # every runtime, then each further labelled handler the status names (kata-qemu, ...)
        for runtime in [*RUNTIMES, *(k for k in runtimes if k not in RUNTIMES)]:
            if runtime_ready(runtimes.get(runtime)):
                labels[f"{prefix}{runtime}"] = "true"
    if f"{prefix}gvisor" in labels:
        verdict = facts.verdict("gvisor")
        platform = gvisor_platform or (verdict.platform if verdict else None)
        if platform:
            labels[f"{prefix}gvisor-platform"] = str(platform)
    if kata_compat and f"{prefix}kata" in labels:
        labels[KATA_COMPAT_LABEL] = "true"
    return labels


def owned_annotation_value(labels: Mapping[str, str]) -> str:
    return ",".join(sorted(labels))


def owned_labels(node: Mapping[str, Any]) -> set[str]:
    """Label keys a previous run recorded as ours (a claim anyone who can edit the Node can write)."""
    annotations = table(node, "metadata", "annotations")
    return {k.strip() for k in str(annotations.get(OWNED_ANNOTATION, "")).split(",") if k.strip()}


def manageable(key: str, prefix: str = DEFAULT_PREFIX) -> bool:
    """May nodeagent ever set or remove this label? Only under the prefix, under its own domain
    (where the owned-labels annotation lives, so labels of an earlier prefix can be cleaned up),
    or the Kata compatibility label. deploy/admission-policy.yaml allows the same keys."""
    return (bool(prefix) and key.startswith(prefix)) or key.startswith(DEFAULT_PREFIX) or key == KATA_COMPAT_LABEL


def label_patch(node: Mapping[str, Any], desired: Mapping[str, str],
                prefix: str = DEFAULT_PREFIX) -> dict[str, Any] | None:
    """A JSON merge patch taking `node` to `desired`, or None when nothing would change.

    Sets desired labels that differ, deletes (null) owned labels no longer desired, updates the
    owned-labels annotation; every other label and annotation is left out of the patch. The
    annotation never widens what is removed: a key outside `manageable()` listed there (say
    `node-restriction.kubernetes.io/zone`, planted by whoever could edit the Node) is left alone.
    """
    foreign = sorted(k for k in desired if not manageable(k, prefix))
    if foreign:
        raise ValueError(f"labels outside the prefix {prefix!r} are not ours to set: {foreign}")
    current = table(node, "metadata", "labels")
    annotations = table(node, "metadata", "annotations")
    labels_patch: dict[str, str | None] = {k: v for k, v in desired.items() if current.get(k) != v}
    for stale in sorted(owned_labels(node) - set(desired)):
        if stale in current and manageable(stale, prefix):
            labels_patch[stale] = None
    want_annotation = owned_annotation_value(desired) if desired else None
    annotations_patch: dict[str, str | None] = {}
    if annotations.get(OWNED_ANNOTATION) != want_annotation:
        annotations_patch[OWNED_ANNOTATION] = want_annotation
    if not labels_patch and not annotations_patch:
        return None
    patch_meta: dict[str, Any] = {}
    if labels_patch:
        patch_meta["labels"] = labels_patch
    if annotations_patch:
        patch_meta["annotations"] = annotations_patch
    return {"metadata": patch_meta}


def labels_view(desired: Mapping[str, str]) -> dict[str, Any]:
    """The `labels` command's contract shape: {"labels": ..., "annotations": ...}."""
    return {
        "labels": dict(sorted(desired.items())),
        "annotations": {OWNED_ANNOTATION: owned_annotation_value(desired)} if desired else {},
    }
