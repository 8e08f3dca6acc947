"""`nodeagent agent`: the DaemonSet / systemd long-running mode.

Each round: converge (install pipeline; a containerd restart waits for a fleet-wide
restart slot when a Kubernetes API is reachable), then label the Node from what
containerd really serves. Without an API (a host managed by Ansible/systemd) the
agent converges and serves health/metrics only, and never uninstalls on stop.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import structlog

from nodeagent.agent import Agent, ConvergeOutcome
from nodeagent.errors import NodeagentError
from nodeagent.host import HostRoot
from nodeagent.output import Result
from nodeagent.settings import Settings
from nodeagent.dicts import table

log = structlog.get_logger(__name__)
_NO_CLIENT = object()  # converge_round's default: find the API client itself


def _kube_client(settings: Settings):
    """A client when credentials exist (kubeconfig or in-cluster), else None."""
    from nodeagent.kube.client import KubeClient

    try:
        return KubeClient.from_settings(settings)
    except NodeagentError as exc:
        log.info("no Kubernetes API: labels and fleet restart limits are off", reason=exc.message)
        return None


class _Kube:
    """What the agent does with the API: restart slots, the rollout record, labels, the startup
    taint, events, selection."""

    def __init__(self, settings: Settings, api):
        from nodeagent.kube.lease import RestartSlots, lease_namespace
        from nodeagent.kube.nodes import node_name
        from nodeagent.kube.rollout import RolloutRecord, desired_state_hash

        self.settings = settings
        self.api = api
        self.node = node_name(settings)
        namespace = lease_namespace()
        self.slots = RestartSlots(api, self.node, slots=settings.max_concurrent_restarts, namespace=namespace)
        self.record = RolloutRecord(api, namespace, desired_state_hash(settings), settings.rollout_max_failures)

    def restart_guard(self, check_sandbox: Callable[[], str | None]):
        from nodeagent.kube.rollout import guarded_restart

        return guarded_restart(self.record, self.slots, self.node, max(600.0, 4 * self.settings.interval),
                               check_sandbox)

    def label(self, host: HostRoot, state: str | None = None) -> tuple[dict, dict | None, str]:
        """(the Node as read, the label patch sent or None, the state): one GET, a PATCH on change."""
        from nodeagent.kube.nodes import apply_labels, get_node
        from nodeagent.kube.runtime_status import node_labels

        node = get_node(self.api, self.node)
        desired, _, state = node_labels(self.settings, host, state=state)
        return node, apply_labels(self.api, self.node, desired, self.settings.label_prefix, node=node), state

    def halted(self, host: HostRoot, exc: NodeagentError) -> None:
        """State label `halted`; an Event when the label changes to it (not every round)."""
        try:
            _, patch, _ = self.label(host, state="halted")
        except NodeagentError as exc:  # the halt is the news; a label we could not write is not
            log.warning("could not label the node halted", error=exc.message)
            return
        if patch and table(patch, "metadata", "labels").get(self.settings.label_prefix + "state") == "halted":
            self.event("NodeagentRolloutHalted", exc.message, warning=True)

    def release_startup_taint(self, node: dict, host: HostRoot, state: str, verified: bool) -> None:
        """Remove the startup taint once this node is ready and a sandbox check passed.

        Never re-added when the node degrades later: see the module docstring of kube/nodes.py.
        """
        from nodeagent.kube.nodes import has_taint, remove_startup_taint
        from nodeagent.kube.rollout import SandboxCheckFailed

        key = self.settings.startup_taint
        if not key or not has_taint(node, key):
            return
        if state != "ready":
            log.info("keeping the startup taint until the node is ready", taint=key, state=state)
            return
        problem = None if verified else _sandbox_problem(self.settings, host)
        if problem:
            self.event("NodeagentVerifyFailed", f"keeping startup taint {key}: {problem}", warning=True)
            raise SandboxCheckFailed(f"keeping the startup taint {key}: {problem}",
                                     "run `nodeagent verify` on the node; the taint goes once a sandbox starts")
        if remove_startup_taint(self.api, self.node, key, node=node):
            self.event("NodeagentStartupTaintRemoved", f"runtimes converged and verified: removed taint {key}")

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


def _sandbox_problem(settings: Settings, host: HostRoot) -> str | None:
    """`verify`'s checks of what is installed (no image: Kata through CRI is skipped); None = passed."""
    from nodeagent.commands.verify import failed_checks, run_checks

    return failed_checks(run_checks(settings, host, explicit=False))


def converge_round(settings: Settings, api=_NO_CLIENT) -> Callable[[], ConvergeOutcome]:
    """One round: converge, then (with an API) events, labels from what containerd serves, and
    the startup taint. A restart is guarded by the fleet's slots and rollout record."""
    from nodeagent import converge
    from nodeagent.kube.rollout import RolloutHalted

    host = HostRoot(settings.root)
    if api is _NO_CLIENT:
        api = _kube_client(settings)
    kube = _Kube(settings, api) if api is not None else None

    def round_() -> ConvergeOutcome:
        verified: list[bool] = []

        def check_sandbox() -> str | None:  # right after a restart, while the slot is held
            problem = _sandbox_problem(settings, host)
            verified.append(problem is None)
            return problem

        guard = (lambda: kube.restart_guard(check_sandbox)) if kube else contextlib.nullcontext
        try:
            report = converge.install(settings, restart_guard=guard)
        except RolloutHalted as exc:
            kube.halted(host, exc)
            raise
        except NodeagentError as exc:
            if kube:
                kube.event("NodeagentFailed", exc.message, warning=True)
                kube.label(host)  # labels follow what containerd really serves, failure or not
            raise
        if kube:
            if report.changed:
                kube.event("NodeagentInstalled", "runtimes converged: " + ", ".join(report.runtimes))
            node, _, state = kube.label(host)
            kube.release_startup_taint(node, host, state, verified=bool(verified) and all(verified))
        restarted = bool(report.restarted and report.restarted.get("new_pid"))
        return ConvergeOutcome(changed=report.changed, restarted=restarted)

    return round_


class _LazyKube:
    """The API as the resident agent needs it (at stop only): found on first use, so an agent
    whose rounds run in a child never imports the Kubernetes client (requests, yaml: ~9 MB)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._kube: _Kube | None = None
        self._looked = False

    def get(self) -> _Kube | None:
        if not self._looked:
            api = _kube_client(self.settings)
            self._kube = _Kube(self.settings, api) if api is not None else None
            self._looked = True
        return self._kube


def build_agent(settings: Settings, once: bool = False) -> Agent:
    """The agent; a long-running one converges in a child process each round (commands/agent_child.py)."""
    lazy = _LazyKube(settings)
    if once:
        round_ = converge_round(settings)
    else:
        from nodeagent.commands.agent_child import run_in_child

        def round_() -> ConvergeOutcome:
            return run_in_child(settings)

    def should_uninstall() -> bool:
        kube = lazy.get()
        return kube is not None and not kube.still_selected()

    def uninstall() -> None:
        from nodeagent import converge

        kube = lazy.get()
        if kube:
            kube.event("NodeagentRemoving", "node no longer selected by the DaemonSet: uninstalling")
        converge.uninstall(settings)

    return Agent(
        round_,
        interval=settings.interval,
        listen=settings.listen,
        should_uninstall=should_uninstall,
        uninstall=uninstall,
    )


def run(settings: Settings, args) -> Result:
    once = bool(getattr(args, "once", False))
    agent = build_agent(settings, once)
    code = agent.run(once=once)
    if once and code != 0 and agent.last_failure is not None:
        raise agent.last_failure  # the CLI's one error: and one hint: line, with its exit code
    data = {"ready": agent.ready, "error": agent.last_error}
    return Result(data, "converged" if agent.ready else f"not converged: {agent.last_error}", exit_code=code)
