"""`nodeagent labels` and `nodeagent runtimeclasses`: print what the scheduler needs, or --apply it."""

from __future__ import annotations

from typing import Any

import yaml

from nodeagent.kube import labels as labels_mod
from nodeagent.kube import runtimeclass
from nodeagent.kube.client import KubeClient
from nodeagent.kube.nodes import apply_labels, node_name
from nodeagent.kube.runtime_status import node_labels
from nodeagent.output import Result
from nodeagent.runtimes import selected

# A person at a shell would rather see the error than wait out the agent's longer retry budget.
_CLI_RETRIES = 2


def labels(settings: Any, args: Any) -> Result:
    desired, runtimes, state = node_labels(settings)
    data: dict[str, Any] = labels_mod.labels_view(desired)
    data["state"] = state
    data["runtimes"] = runtimes
    lines = [f"{k}={v}" for k, v in data["labels"].items()]
    lines += [f"annotation {k}={v}" for k, v in data["annotations"].items()]
    for runtime, st in runtimes.items():
        if st["reason"]:
            lines.append(f"# {runtime}: no label: {st['reason']}")
    if getattr(args, "apply", False):
        name = node_name(settings)
        with KubeClient.from_settings(settings, retries=_CLI_RETRIES) as api:
            patch = apply_labels(api, name, desired, settings.label_prefix)
        data.update(node=name, applied=patch is not None, patch=patch)
        lines.append(f"node {name}: " + ("labels patched" if patch else "labels already up to date"))
    return Result(data, "\n".join(lines))


def _measured_overhead(settings: Any, wanted: tuple[str, ...]) -> tuple[Any, dict[str, Any] | None]:
    """Settings with the overheads `--overhead-from FILE` recommends (runtimes it did not measure
    keep their configured ones), and what was taken from where."""
    if not settings.overhead_from:
        return settings, None
    import dataclasses

    from nodeagent.measure import load_recommendations

    measured = load_recommendations(settings.overhead_from, wanted)
    changes = {f"{runtime}_overhead_{kind}": value for runtime, rec in measured.items() for kind, value in rec.items()}
    return dataclasses.replace(settings, **changes), {"file": settings.overhead_from, "runtimes": measured}


def runtimeclasses(settings: Any, args: Any) -> Result:
    wanted = tuple(selected(settings.runtime))
    settings, measured = _measured_overhead(settings, wanted)
    items = runtimeclass.manifests(settings, wanted)
    data: dict[str, Any] = {"items": items}
    if measured:
        data["overhead_from"] = measured
    text = yaml.safe_dump_all(items, sort_keys=False, default_flow_style=False).rstrip()
    if getattr(args, "apply", False):
        with KubeClient.from_settings(settings, retries=_CLI_RETRIES) as api:
            actions = runtimeclass.converge(api, items)
        data["applied"] = actions
        text = "\n".join(f"runtimeclass {name}: {action}" for name, action in actions.items())
    return Result(data, text)
