"""Per-runtime status for labels: registered in containerd's config, served by CRI, shim present.

All three must hold before a node advertises `gvisor=true` / `kata=true`: registered-but-not-
served means containerd was not restarted (or rejected the config); served-but-no-shim means
every pod would fail at sandbox start.
"""

from __future__ import annotations

from typing import Any, Mapping

import structlog

from nodeagent.containerd.cri import socket_for
from nodeagent.containerd.observer import observe
from nodeagent.facts import HostFacts
from nodeagent.host import HostRoot
from nodeagent.runtimes import NAMES

log = structlog.get_logger(__name__)


def runtime_status(host: HostRoot, facts: HostFacts, handlers: Mapping[str, str], *,
                   configured_socket: str | None = None, cri_timeout: float = 5.0) -> dict[str, dict[str, Any]]:
    """{"gvisor": {"handler", "registered", "served", "shim_present", "reason"}, "kata": {...}}
    for `handlers` (runtime -> its handler name), from one look at what containerd serves."""
    socket = socket_for(host, configured_socket, facts.containerd.socket)
    view = observe(host, facts.containerd, socket, cri_timeout=cri_timeout)
    return {runtime: view.status(handler).to_json() for runtime, handler in handlers.items()}


def handler_names(settings: Any) -> dict[str, str]:
    """label -> handler: each runtime's own handler (under the runtime's name), then every further
    handler with a label of its own (each chosen Kata shim: "kata-qemu" -> "kata-qemu")."""
    out = {runtime: getattr(settings, f"{runtime}_handler") for runtime in NAMES}
    for extra_label, handler in _labelled_handlers(settings):
        out.setdefault(extra_label, handler)
    return out


def _labelled_handlers(settings: Any) -> list[tuple[str, str]]:
    """(label suffix, handler) of every RuntimeClass beyond the runtimes' own ones."""
    from nodeagent import runtimes as runtime_plugins
    from nodeagent.errors import NodeagentError

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
                facts: HostFacts | None = None) -> tuple[dict[str, str], dict[str, dict[str, Any]], str]:
    """(desired labels, per-runtime status, state) for this node from detect + containerd + CRI.

    `state` overrides the inferred one (the agent says `installing` / `removing` while it works).
    """
    from nodeagent.detect import usable_facts  # labels act on the facts: never on an unreadable host
    from nodeagent.kube.labels import desired_labels, infer_state

    host = host or HostRoot(settings.root)
    facts = facts if facts is not None else usable_facts(host, settings)
    runtimes = runtime_status(host, facts, handler_names(settings), configured_socket=settings.containerd_socket)
    state = state or infer_state(runtimes)
    desired = desired_labels(
        facts, runtimes, state, prefix=settings.label_prefix, kata_compat=settings.kata_compat_label,
        gvisor_platform=settings.gvisor_platform,
    )
    return desired, runtimes, state
