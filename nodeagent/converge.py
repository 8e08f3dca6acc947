"""The install and uninstall pipelines: the one place that ties the steps together.

install:   lock -> detect -> plan (pure; refuses bad input before anything is written)
           -> validate the candidate config with the real containerd -> fetch + install
           artifacts -> write config -> restart containerd only if what it loads changed
           (or it does not yet serve handlers its config already has) -> wait until CRI is
           healthy and serves the handlers -> else roll back files, restart, confirm health.
uninstall: lock -> restore/remove config -> restart -> healthy -> remove artifacts no shim
           uses -> forget state. Artifacts go only after containerd stopped referring to them.

SIGTERM/SIGINT are held back while files are being switched and containerd restarted, so an
interrupted run leaves the node in the old or the new state, never in between; SIGKILL cannot
be held back, which is why a re-run also restarts containerd when its config already names
handlers that CRI does not serve.
"""

from __future__ import annotations

import contextlib
import signal
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Iterator

import structlog

from nodeagent import state as state_mod
from nodeagent.containerd import apply
from nodeagent.containerd.cri import CriStatus, socket_for
from nodeagent.containerd.observer import ask_cri
from nodeagent.containerd.plan import FileChange
from nodeagent.errors import ConfigError, NodeagentError
from nodeagent.facts import HostFacts
from nodeagent.host import HostReadError, HostRoot
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
        out += [f"note: {n}" for n in self.notes]
        out += [f"warning: {w}" for w in self.warnings]
        return "\n".join(line for line in out if line)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGTERM/SIGINT until the block ends (they are delivered right after)."""
    held = {signal.SIGTERM, signal.SIGINT}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _flavor(facts: HostFacts) -> str:
    return facts.containerd.flavor or "containerd"


def _socket(host: HostRoot, settings: Settings, facts: HostFacts) -> str:
    return socket_for(host, settings.containerd_socket, facts.containerd.socket)


def _restart_and_wait(host, settings, facts, sock: str, handlers: list[str], report: Report) -> None:
    """Restart containerd (per --restart) and wait for CRI health with `handlers` served."""
    from nodeagent import service
    from nodeagent.containerd.health import wait_healthy

    result = service.restart_containerd(host, settings, _flavor(facts))
    report.restarted = result.as_dict()
    if result.pending:
        report.restart_pending = True
        report.notes.append(result.reason or "containerd must be restarted for the change to take effect")
        return
    if result.method == "none":  # k0s: its containerd reloads drop-ins by itself
        report.notes.append(result.reason or "no restart needed")
    health = wait_healthy(sock, handlers, timeout=settings.health_timeout)
    if not health.healthy:
        raise ConfigError(health.reason or "containerd is not healthy", None)
    report.health = {"served": sorted(health.status.handlers), "elapsed": round(health.elapsed, 3)}


def _rollback(host, settings, facts, sock, outcome: apply.Outcome, reason: str) -> RolledBack:
    """Restore the old files, restart, and confirm the old config is healthy again."""
    log.error("rolling back", reason=reason)
    apply.rollback_install(host, outcome)
    old_handlers: list[str] = []
    try:
        _restart_and_wait(host, settings, facts, sock, old_handlers, Report())
        confirmed = "containerd is healthy on the previous configuration"
    except NodeagentError as exc:
        confirmed = f"containerd is NOT healthy after the rollback either: {exc.message}"
    return RolledBack(
        f"containerd did not become healthy with the new handlers ({reason}); rolled back: {confirmed}",
        "check `journalctl -u containerd` on the node and `nodeagent doctor`; nothing of ours is in effect",
    )


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


def install(settings: Settings, restart_guard: Callable[[], ContextManager] = contextlib.nullcontext) -> Report:
    """Converge the node; `restart_guard` is held around a containerd restart (fleet slots)."""
    from nodeagent.artifacts import check_settings, ensure_artifact

    host = HostRoot(settings.root)
    # refuse bad input before the lock file is even created
    facts, _, _, runtimes, _ = _build(settings, host)
    check_settings(settings, runtimes, facts.arch)
    with apply.lock(host):
        facts, config_plan, warnings, runtimes, handlers = _build(settings, host)
        report = Report(warnings=warnings, runtimes=runtimes, handlers=handlers)
        if config_plan is None:
            return report
        _sweep_temps(host, config_plan.files)
        apply.prepare_install(host, config_plan)  # validate with containerd before any write
        for runtime in runtimes:
            result = ensure_artifact(host, settings, runtime, facts.arch)
            report.artifacts.append(result.as_dict())
        sock = _socket(host, settings, facts)
        report.files = config_plan.files
        report.notes = list(config_plan.notes)
        needs_restart = _decide_restart(report, ask_cri(sock), config_plan, handlers)
        guard = restart_guard() if needs_restart and settings.restart != "none" else contextlib.nullcontext()
        with guard, signals_deferred():
            outcome = apply.commit_install(host, config_plan)
            report.notes += [n for n in outcome.notes if n not in report.notes]
            if needs_restart:
                try:
                    _restart_and_wait(host, settings, facts, sock, handlers, report)
                except NodeagentError as exc:
                    raise _rollback(host, settings, facts, sock, outcome, exc.message) from None
        report.changed = config_plan.changed or any(a["action"] != "none" for a in report.artifacts) or report.restart
        return report


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
    with apply.lock(host):
        try:
            facts = _detect(host, settings)
        except HostReadError:
            raise  # out of fds/memory: removing on a host we cannot read is acting blind
        except NodeagentError:
            facts = HostFacts()
        _refuse_in_use(host, runtimes, settings.force)
        state_before = host.read_bytes(state_mod.STATE_FILE)
        outcome, new_state = apply.plan_uninstall(host, set(runtimes), flavor=_flavor(facts))
        _sweep_temps(host, outcome.files)
        report = Report(files=outcome.files, notes=list(outcome.notes), runtimes=runtimes,
                        handlers=sorted(new_state.handlers))
        sock = _socket(host, settings, facts)
        with signals_deferred():
            apply.apply_uninstall(host, outcome, new_state)
            report.restart = outcome.restart and ask_cri(sock).answers
            if report.restart:
                try:
                    _restart_and_wait(host, settings, facts, sock, sorted(new_state.handlers), report)
                except NodeagentError as exc:
                    outcome.previous_state = state_before
                    raise _rollback(host, settings, facts, sock, outcome, exc.message) from None
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
