"""Kubernetes-side checks for `doctor`: each returns (status, summary, hint)."""

from __future__ import annotations

from typing import Any, Iterable

from nodeagent.dicts import dig
from nodeagent.errors import KubeError
from nodeagent.kube.client import KubeClient
from nodeagent.kube.nodes import node_name, node_path
from nodeagent.kube.runtimeclass import handler_mismatches

CheckResult = tuple[str, str, "str | None"]


def runtimeclass_check(settings: Any, registered_handlers: Iterable[str], api: KubeClient | None = None) -> CheckResult:
    """Flag RuntimeClasses that would send pods here with a handler containerd does not have.

    `skip` when no credentials are configured, `warn` when the API cannot be asked, `fail` when a
    RuntimeClass selecting this node names an unregistered handler, `warn` for one without a
    nodeSelector (it may be meant for other nodes), else `ok`.
    """
    registered = sorted(set(registered_handlers))
    own = api is None
    try:
        if api is None:
            api = KubeClient.from_settings(settings, retries=1, timeout=(3.0, 10.0))
    except KubeError as exc:
        return "skip", f"Kubernetes API not configured: {exc.message}", None
    try:
        node = api.get(node_path(node_name(settings)))
        node_labels = dig(node, "metadata", "labels") if node else None
        bad = handler_mismatches(api, registered, node_labels)
    except KubeError as exc:
        return "warn", f"could not list RuntimeClasses: {exc.message}", exc.hint
    finally:
        if own:
            api.close()
    have = ", ".join(registered) or "none"
    if not bad:
        return "ok", f"every RuntimeClass that can select this node names a registered handler ({have})", None
    hard = [b for b in bad if b["selects_node"]]
    listed = ", ".join(f"{b['name']} (handler {b['handler']!r})" for b in (hard or bad))
    hint = (f"a RuntimeClass `handler` must be a containerd handler on the node ({have}), not the RuntimeClass "
            "name: fix the handler, or run `nodeagent install` so the handler gets registered")
    if hard:
        return "fail", f"RuntimeClasses selecting this node name unregistered handlers: {listed}", hint
    return "warn", f"RuntimeClasses without a nodeSelector name handlers not registered here: {listed}", hint
