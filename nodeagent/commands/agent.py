"""`nodeagent agent`: the DaemonSet / systemd long-running mode.

Each round: converge (install pipeline; a containerd restart waits for a fleet-wide
restart slot when a Kubernetes API is reachable), then label the Node from what
containerd really serves. Without an API (a host managed by Ansible/systemd) the
agent converges and serves health/metrics only, and never uninstalls on stop.
"""

from __future__ import annotations

import contextlib

import structlog

from nodeagent.agent import Agent, ConvergeOutcome
from nodeagent.errors import NodeagentError
from nodeagent.host import HostRoot
from nodeagent.output import Result
from nodeagent.settings import Settings

log = structlog.get_logger(__name__)


def _kube_client(settings: Settings):
    """A client when credentials exist (kubeconfig or in-cluster), else None."""
    from nodeagent.kube.client import KubeClient

    try:
        return KubeClient.from_settings(settings)
    except NodeagentError as exc:
        log.info("no Kubernetes API: labels and fleet restart limits are off", reason=exc.message)
        return None


class _Kube:
    """What the agent does with the API: restart slots, labels, events, selection."""

    def __init__(self, settings: Settings, api):
        from nodeagent.kube.lease import RestartSlots, lease_namespace
        from nodeagent.kube.nodes import node_name

        self.settings = settings
        self.api = api
        self.node = node_name(settings)
        self.slots = RestartSlots(api, self.node, slots=settings.max_concurrent_restarts,
                                  namespace=lease_namespace())

    def restart_guard(self):
        return self.slots.hold(timeout=max(600.0, 4 * self.settings.interval))

    def label(self, host: HostRoot) -> None:
        from nodeagent.kube.nodes import apply_labels
        from nodeagent.kube.runtime_status import node_labels

        desired, _, _ = node_labels(self.settings, host)
        apply_labels(self.api, self.node, desired, self.settings.label_prefix)

    def event(self, reason: str, message: str, warning: bool = False) -> None:
        from nodeagent.kube.events import record

        try:
            record(self.api, self.node, reason, message, event_type="Warning" if warning else "Normal")
        except NodeagentError as exc:  # events are best effort
            log.warning("could not record event", error=exc.message)

    def still_selected(self) -> bool:
        from nodeagent.kube.selection import still_selected

        try:
            return still_selected(self.api, self.node)
        except NodeagentError as exc:
            # cannot tell: keeping the runtimes is the safe side (never break running pods)
            log.warning("cannot tell whether the DaemonSet still selects this node; keeping runtimes",
                        error=exc.message)
            return True


def build_agent(settings: Settings) -> Agent:
    from nodeagent import converge

    host = HostRoot(settings.root)
    api = _kube_client(settings)
    kube = _Kube(settings, api) if api is not None else None

    def converge_round() -> ConvergeOutcome:
        guard = kube.restart_guard if kube else contextlib.nullcontext
        try:
            report = converge.install(settings, restart_guard=guard)
        except NodeagentError as exc:
            if kube:
                kube.event("NodeagentFailed", exc.message, warning=True)
                kube.label(host)  # labels follow what containerd really serves, failure or not
            raise
        if kube:
            if report.changed:
                kube.event("NodeagentInstalled", "runtimes converged: " + ", ".join(report.runtimes))
            kube.label(host)
        restarted = bool(report.restarted and report.restarted.get("new_pid"))
        return ConvergeOutcome(changed=report.changed, restarted=restarted)

    def uninstall() -> None:
        if kube:
            kube.event("NodeagentRemoving", "node no longer selected by the DaemonSet: uninstalling")
        converge.uninstall(settings)

    return Agent(
        converge_round,
        interval=settings.interval,
        listen=settings.listen,
        should_uninstall=(lambda: not kube.still_selected()) if kube else (lambda: False),
        uninstall=uninstall,
    )


def run(settings: Settings, args) -> Result:
    agent = build_agent(settings)
    once = bool(getattr(args, "once", False))
    code = agent.run(once=once)
    if once and code != 0 and agent.last_failure is not None:
        raise agent.last_failure  # the CLI's one error: and one hint: line, with its exit code
    data = {"ready": agent.ready, "error": agent.last_error}
    return Result(data, "converged" if agent.ready else f"not converged: {agent.last_error}", exit_code=code)
