"""The install and uninstall pipelines: the one place that ties the steps together.

install:   lock -> detect -> plan (pure; refuses bad input before anything is written)
           -> config test (validate the candidate config with the real containerd)
           -> save (fetch + install + link artifacts, write config and state: every change
              registered in one undo journal before it is made)
           -> restart containerd only if what it loads changed (or it does not yet serve
              handlers its config already has) -> wait until CRI is healthy and serves the
              handlers -> else roll back ALL of the journal (config, runsc.toml, state, artifact
              links and versions), restart, confirm health. Old versions are pruned only once
              the run is accepted: a rollback needs them.
uninstall: lock -> restore/remove config -> restart -> healthy -> remove artifacts no shim
           uses -> forget state. Artifacts go only after containerd stopped referring to them.

Signals and clean-up are handled in one place (error_handler.ErrorHandler): SIGTERM/SIGINT are
held back while files are switched and containerd restarted, so an interrupted run leaves the
node in the old or the new state, never in between; an interruption before that rolls the
journal back. SIGKILL cannot be held back, which is why a re-run also restarts containerd when
its config already names handlers that CRI does not serve.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager

import structlog

from nodeagent import state as state_mod
from nodeagent.containerd import apply
from nodeagent.containerd.cri import CriStatus, socket_for
from nodeagent.containerd.observer import ask_cri
from nodeagent.containerd.plan import FileChange, plan_uninstall
from nodeagent.dicts import dig
from nodeagent.error_handler import ErrorHandler
from nodeagent.errors import ConfigError, NodeagentError
from nodeagent.facts import HostFacts
from nodeagent.host import HostReadError, HostRoot
from nodeagent.journal import Journal
from nodeagent.runtimes import selected
from nodeagent.settings import Settings

log = structlog.get_logger(__name__)

NOT_RUNNING_NOTE = "containerd is not running: the handlers take effect when it starts"


class RolledBack(NodeagentError):
    """containerd did not become healthy on the new config; the old one is back in effect."""

    default_hint = "see the reason above; the node runs its previous configuration"
    rolled_back = True


@dataclass
class Report:
    """What a converge did: the contract's plan/install JSON plus restart/health details."""

    changed: bool = False
    restart: bool = False
    files: list[FileChange] = field(default_factory=list)
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    restarted: dict[str, Any] | None = None
    restart_pending: bool = False
    health: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    runtimes: list[str] = field(default_factory=list)
    handlers: list[str] = field(default_factory=list)
    restart_impact: Any = None  # containerd.impact.RestartImpact: what a restart touches

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "changed": self.changed,
            "restart": self.restart,
            "files": [f.to_json() for f in self.files if f.action != "none"],
            "artifacts": self.artifacts,
            "runtimes": self.runtimes,
            "handlers": self.handlers,
            "restart_pending": self.restart_pending,
        }
        for key in ("restarted", "health"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        if self.warnings:
            data["warnings"] = self.warnings
        if self.notes:
            data["notes"] = self.notes
        if self.restart_impact is not None:
            data["restart_impact"] = self.restart_impact.as_dict()
        return data

    def render_text(self) -> str:
        out = [f.diff.rstrip("\n") for f in self.files if f.action != "none"]
        for f in self.files:
            if f.action != "none":
                out.append(f"  {f.action:7} {f.path}")
        for a in self.artifacts:
            out.append(f"  {a['action']:9} {a['runtime']} {a['version']}")
        restart = "pending (--restart none)" if self.restart_pending else ("yes" if self.restart else "no")
        out.append(f"changed: {'yes' if self.changed else 'no'}; containerd restart: {restart}")
        if self.restarted and self.restarted.get("unit"):
            r = self.restarted
            out.append(f"restarted {r['unit']} via {r['method']}: pid {r.get('old_pid')} -> {r.get('new_pid')}")
        if self.health is not None:
            out.append("containerd healthy; CRI serves: " + ", ".join(self.health.get("served", [])))
        if self.restart_impact is not None:
            from nodeagent.containerd.impact import render

            out += render(self.restart_impact)
        out += [f"note: {n}" for n in self.notes]
        out += [f"warning: {w}" for w in self.warnings]
        return "\n".join(line for line in out if line)


def _flavor(facts: HostFacts) -> str:
    return facts.containerd.flavor or "containerd"


def _socket(host: HostRoot, settings: Settings, facts: HostFacts) -> str:
    return socket_for(host, settings.containerd_socket, facts.containerd.socket)


@dataclass
class Containerd:
    """The containerd a converge restarts and judges (certbot's Installer `restart` and
    `rollback` steps): the few values those steps need, not the whole Settings."""

    host: HostRoot
    flavor: str
    socket: str
    mode: str  # --restart: auto | systemd | none
    timeout: float  # --health-timeout, seconds

    def restart(self, handlers: list[str], report: Report) -> None:
        """Restart containerd (per --restart) and wait for CRI health with `handlers` served."""
        from nodeagent import service
        from nodeagent.containerd.health import wait_healthy

        result = service.restart_containerd(self.host, self.flavor, self.mode, self.timeout)
        report.restarted = result.as_dict()
        if result.pending:
            report.restart_pending = True
            report.notes.append(result.reason or "containerd must be restarted for the change to take effect")
            return
        if result.method == "none":  # k0s: its containerd reloads drop-ins by itself
            report.notes.append(result.reason or "no restart needed")
        health = wait_healthy(self.socket, handlers, timeout=self.timeout)
        if not health.healthy:
            raise ConfigError(health.reason or "containerd is not healthy", None)
        report.health = {"served": sorted(health.status.handlers), "elapsed": round(health.elapsed, 3)}

    def roll_back(self, journal: Journal, reason: str) -> RolledBack:
        """Undo everything the journal holds (newest first), restart, and confirm the old state is healthy."""
        log.error("rolling back", reason=reason)
        journal.rollback()
        try:
            self.restart([], Report())
            confirmed = "containerd is healthy on the previous configuration"
        except NodeagentError as exc:
            confirmed = f"containerd is NOT healthy after the rollback either: {exc.message}"
        return RolledBack(
            f"containerd did not become healthy with the new handlers ({reason}); rolled back: {confirmed}",
            "check `journalctl -u containerd` on the node and `nodeagent doctor`; nothing of ours is in effect",
        )


def _containerd(host: HostRoot, settings: Settings, facts: HostFacts) -> Containerd:
    return Containerd(host, _flavor(facts), _socket(host, settings, facts), settings.restart,
                      settings.health_timeout)


# where atomic_write/atomic_symlink put temp files beside their targets, and where artifacts are
# staged and removed (a version dir is renamed to a temp name, then deleted)
_TEMP_DIRS = ("/etc/containerd", "/etc/containerd/conf.d", state_mod.STATE_DIR, state_mod.BACKUP_DIR,
              f"{state_mod.STATE_DIR}/cache", "/usr/local/bin", "/opt", "/opt/nodeagent/gvisor", "/opt/nodeagent/kata",
              f"{state_mod.STATE_DIR}/cache/.verified", f"{state_mod.STATE_DIR}/cache/unpacked")


def _sweep_temps(host: HostRoot, files: list[FileChange]) -> None:
    """Drop temp files a SIGKILLed run left behind (call with the lock held)."""
    import posixpath

    from nodeagent.fsutil import sweep_temps

    for directory in sorted(set(_TEMP_DIRS) | {posixpath.dirname(f.path) for f in files}):
        removed = sweep_temps(host.path(directory))
        if removed:
            log.info("removed temp files of an interrupted run", directory=directory, names=removed)


def _detect(host: HostRoot, settings: Settings) -> HostFacts:
    """Observe: the host facts (imported on use, like the other steps, to keep startup light)."""
    from nodeagent.detect import usable_facts

    return usable_facts(host, settings)


def _build(settings: Settings, host: HostRoot):
    """Observe, then plan: the facts, the config plan, and the runtimes/handlers it installs."""
    from nodeagent.planning import build_plan, handler_specs, select_runtimes

    facts = _detect(host, settings)
    plan, warnings = build_plan(settings, facts)
    runtimes, _ = select_runtimes(settings, facts) if plan is not None else ([], [])
    handlers = [s.name for s in handler_specs(settings, runtimes)] if runtimes else []
    return facts, plan, warnings, runtimes, handlers


def plan(settings: Settings) -> Report:
    """What install would do; writes nothing (artifact plans read digest files at most)."""
    from nodeagent.artifacts import plan_artifact

    host = HostRoot(settings.root)
    facts, config_plan, warnings, runtimes, handlers = _build(settings, host)
    report = Report(warnings=warnings, runtimes=runtimes, handlers=handlers)
    if config_plan is None:
        return report
    report.files = config_plan.files
    report.notes = list(config_plan.notes)
    for runtime in runtimes:
        report.artifacts.append(plan_artifact(host, settings, runtime, facts.arch).as_dict())
    _decide_restart(report, ask_cri(_socket(host, settings, facts)), config_plan, handlers)
    report.restart_impact = _restart_impact(host, settings, facts, config_plan, handlers)
    report.changed = config_plan.changed or any(a["action"] != "none" for a in report.artifacts) or report.restart
    return report


def _decide_restart(report: Report, status: CriStatus, config_plan, handlers: list[str]) -> bool:
    """Restart a running containerd when what it loads changed, or when it does not serve
    handlers its config already names (a restart still pending); a stopped one (or a node
    image being baked) picks the change up when it starts. `status`: one CRI probe."""
    if not status.answers:
        report.restart = False
        if config_plan.restart:
            report.notes.append(NOT_RUNNING_NOTE)
    else:
        pending = bool(handlers) and status.ok and not set(handlers) <= status.handlers
        report.restart = config_plan.restart or pending
    return report.restart


def _restart_impact(host: HostRoot, settings: Settings, facts: HostFacts, config_plan, handlers: list[str],
                    *, enforce: bool = False):
    """What a containerd restart would touch now; with `enforce`, refuse `--restart auto` on a
    control-plane node whose static pods run (called before anything is written)."""
    from nodeagent.containerd import impact

    sock = _socket(host, settings, facts)
    status = ask_cri(sock)
    restart = _decide_restart(Report(), status, config_plan, handlers)
    default = (dig(status.config, "containerd", "defaultRuntimeName") or "") if status.answers else ""
    found = impact.assess(host, sock, _flavor(facts), restart, default, ask_cri=status.answers,
                          unit=facts.containerd.unit)
    if enforce:
        impact.enforce(found, settings.restart, settings.allow_control_plane_restart)
    return found


def install(settings: Settings, restart_guard: Callable[[], ContextManager] = contextlib.nullcontext) -> Report:
    """Converge the node; `restart_guard` is held around a containerd restart (fleet slots)."""
    from nodeagent.artifacts import check_settings

    host = HostRoot(settings.root)
    # refuse bad input before the lock file is even created
    facts, early_plan, _, runtimes, early_handlers = _build(settings, host)
    check_settings(settings, runtimes, facts.arch)
    if early_plan is not None:
        _restart_impact(host, settings, facts, early_plan, early_handlers, enforce=True)
    with apply.lock(host):
        facts, config_plan, warnings, runtimes, handlers = _build(settings, host)
        report = Report(warnings=warnings, runtimes=runtimes, handlers=handlers)
        if config_plan is None:
            return report
        report.restart_impact = _restart_impact(host, settings, facts, config_plan, handlers, enforce=True)
        _sweep_temps(host, config_plan.files)
        # config test: containerd validates it before any write; its notes (e.g. "not validated")
        # belong in the report
        tested_notes = apply.config_test(host, config_plan)
        journal = Journal()
        with ErrorHandler(journal.rollback) as guard:  # any failure below undoes all of the journal
            _save_artifacts(host, settings, runtimes, facts.arch, journal, report)
            containerd = _containerd(host, settings, facts)
            report.files = config_plan.files
            report.notes = list(config_plan.notes)
            report.notes += [n for n in tested_notes if n not in report.notes]
            needs_restart = _decide_restart(report, ask_cri(containerd.socket), config_plan, handlers)
            slot = restart_guard() if needs_restart and settings.restart != "none" else contextlib.nullcontext()
            with slot, guard.deferred():
                outcome = apply.save(host, config_plan, journal)
                report.notes += [n for n in outcome.notes if n not in report.notes]
                if needs_restart:
                    try:
                        containerd.restart(handlers, report)
                    except NodeagentError as exc:
                        raise containerd.roll_back(journal, exc.message) from None
                # accepted, still inside the held section: a SIGTERM held until now finds nothing
                # to undo (containerd already runs the new config)
                journal.commit()
        _prune_old_versions(host, runtimes)
        report.changed = config_plan.changed or any(a["action"] != "none" for a in report.artifacts) or report.restart
        return report


def _save_artifacts(host: HostRoot, settings: Settings, runtimes: list[str], arch: str | None, journal: Journal,
                    report: Report) -> None:
    """Fetch, stage and link each runtime's release, every change registered in `journal`."""
    from nodeagent.artifacts import ensure_artifact

    for runtime in runtimes:
        report.artifacts.append(ensure_artifact(host, settings, runtime, arch, journal=journal).as_dict())


def _prune_old_versions(host: HostRoot, runtimes: list[str]) -> None:
    """Once a run is accepted, the versions no link points at and nothing runs from can go."""
    from nodeagent.artifacts import prune_artifact

    for runtime in runtimes:
        prune_artifact(host, runtime)


def _refuse_in_use(host: HostRoot, runtimes: list[str], force: bool) -> None:
    """Refuse before changing anything while sandboxes run from our artifacts (kata#12761)."""
    from nodeagent.artifacts import artifacts_in_use
    from nodeagent.errors import ArtifactError

    if force:
        return
    for runtime in runtimes:
        pids = artifacts_in_use(host, runtime)
        if pids:
            raise ArtifactError(
                f"{runtime} is still in use by running sandbox process(es) {', '.join(map(str, pids[:10]))}; "
                "nothing was changed",
                "drain the node (or delete the pods using it) and run again, or pass --force",
            )


def uninstall(settings: Settings) -> Report:
    from nodeagent.artifacts import remove_artifact

    host = HostRoot(settings.root)
    runtimes = selected(settings.runtime)
    state_mod.load(host)  # a corrupt state.json is refused before the lock file is even created
    with apply.lock(host):
        try:
            facts = _detect(host, settings)
        except HostReadError:
            raise  # out of fds/memory: removing on a host we cannot read is acting blind
        except NodeagentError:
            facts = HostFacts()
        _refuse_in_use(host, runtimes, settings.force)
        outcome, new_state = plan_uninstall(host, set(runtimes), flavor=_flavor(facts))
        _sweep_temps(host, outcome.files)
        report = Report(files=outcome.files, notes=list(outcome.notes), runtimes=runtimes,
                        handlers=sorted(new_state.handlers))
        containerd = _containerd(host, settings, facts)
        journal = Journal()
        with ErrorHandler(journal.rollback) as guard, guard.deferred():
            apply.apply_uninstall(host, outcome, new_state, journal)
            report.restart = outcome.restart and ask_cri(containerd.socket).answers
            if report.restart:
                try:
                    containerd.restart(sorted(new_state.handlers), report)
                except NodeagentError as exc:
                    raise containerd.roll_back(journal, exc.message) from None
            journal.commit()  # inside the held section, as for install
        if report.restart_pending:
            report.notes.append("artifacts kept: containerd still runs with the old handlers until restarted")
        else:
            for runtime in runtimes:
                if runtime in new_state.handlers.values():
                    continue
                removed = remove_artifact(host, runtime, force=settings.force)
                if removed.removed or removed.restored:
                    report.artifacts.append({"runtime": runtime, "version": "", "action": "removed"})
        report.changed = outcome.changed or bool(report.artifacts)
        return report
