"""Per-runtime status for labels: registered in containerd's config, served by CRI, shim present.

All three must hold before a node advertises `gvisor=true` / `kata=true`: registered-but-not-
served means containerd was not restarted (or rejected the config); served-but-no-shim means
every pod would fail at sandbox start.
"""

from __future__ import annotations

from typing import Any

import structlog

from nodeagent.containerd import model
from nodeagent.errors import NodeagentError
from nodeagent.host import HostRoot
from nodeagent.runtimes import NAMES

log = structlog.get_logger(__name__)

def daemon_path(facts: dict[str, Any]) -> str:
    """Where containerd looks for shims (detected from its own environment)."""
    from nodeagent.detect.containerd import DEFAULT_DAEMON_PATH

    dirs = (facts.get("containerd") or {}).get("daemon_path")
    return ":".join(dirs) if dirs else DEFAULT_DAEMON_PATH


def served_handlers(socket: str | None, timeout: float = 5.0) -> tuple[set[str], str | None]:
    """Handlers the running containerd serves through CRI, and why none if it cannot be asked."""
    if not socket:
        return set(), "no containerd socket"
    from nodeagent.containerd.cri import cri_status

    try:
        status = cri_status(socket, timeout)
    except NodeagentError as exc:
        return set(), exc.message
    if not status.ok:
        return set(), status.reason or "CRI not ready"
    return set(status.handlers), None


def runtime_status(host: HostRoot, settings: Any, facts: dict[str, Any], *, cri_timeout: float = 5.0) -> dict[str, dict[str, Any]]:
    """{"gvisor": {"handler", "registered", "served", "shim_present", "reason"}, "kata": {...}}, plus one
    entry per further labelled handler (each chosen Kata shim: "kata-qemu": {...})."""
    ctd = facts.get("containerd") or {}
    handlers: dict[str, dict[str, Any]] = {}
    reason = None
    if ctd.get("config_exists") and ctd.get("config_path"):
        from nodeagent.containerd.inspect import registered_handlers

        try:
            handlers = registered_handlers(host, ctd["config_path"], ctd.get("version"))
        except NodeagentError as exc:
            reason = f"cannot read containerd's handlers: {exc.message}"
    else:
        reason = "no containerd config"
    from nodeagent.containerd.cri import socket_for

    served, served_reason = served_handlers(socket_for(host, settings, facts), cri_timeout)
    search = daemon_path(facts)

    def status(handler: str) -> dict[str, Any]:
        table = handlers.get(handler)
        shim_present = False
        why = reason
        if table is not None:
            runtime_type = table.get("runtime_type")
            try:
                shim_present = isinstance(runtime_type, str) and host.which(model.shim_binary_for(runtime_type), search) is not None
            except NodeagentError:
                shim_present = False
            if not shim_present:
                why = f"shim for {runtime_type} not on containerd's PATH"
            elif handler not in served:
                why = f"not served by CRI ({served_reason or 'containerd does not list it; restart pending?'})"
            else:
                why = None
        elif why is None:
            why = f"handler {handler!r} not registered"
        return {"handler": handler, "registered": table is not None, "served": handler in served,
                "shim_present": shim_present, "reason": why}

    out = {runtime: status(getattr(settings, f"{runtime}_handler")) for runtime in NAMES}
    # a runtime's further handlers with a label of their own (each Kata shim: kata-qemu=true)
    for extra_label, handler in _labelled_handlers(settings):
        out.setdefault(extra_label, status(handler))
    return out


def _labelled_handlers(settings: Any) -> list[tuple[str, str]]:
    """(label suffix, handler) of every RuntimeClass beyond the runtimes' own ones."""
    from nodeagent import runtimes as runtime_plugins

    out = []
    for rt in runtime_plugins.ALL:
        try:
            classes = rt.runtime_classes(rt.options(settings))
        except NodeagentError as exc:  # a bad setting: the runtime's own label still stands
            log.warning("cannot tell the runtime's extra handlers", runtime=rt.name, error=exc.message)
            continue
        out += [(rc.label, rc.handler) for rc in classes if rc.label not in NAMES]
    return out


def node_labels(settings: Any, host: HostRoot | None = None, *, state: str | None = None,
                facts: dict[str, Any] | None = None) -> tuple[dict[str, str], dict[str, dict[str, Any]], str]:
    """(desired labels, per-runtime status, state) for this node from detect + containerd + CRI.

    `state` overrides the inferred one (the agent says `installing` / `removing` while it works).
    """
    from nodeagent.detect import usable_facts  # labels act on the facts: never on an unreadable host
    from nodeagent.kube.labels import desired_labels, infer_state

    host = host or HostRoot(settings.root)
    facts = facts if facts is not None else usable_facts(host, settings)
    runtimes = runtime_status(host, settings, facts)
    state = state or infer_state(runtimes)
    desired = desired_labels(
        facts, runtimes, state, prefix=settings.label_prefix, kata_compat=settings.kata_compat_label,
        gvisor_platform=settings.gvisor_platform,
    )
    return desired, runtimes, state
