"""`nodeagent plan`, `install` and `uninstall` — for now the containerd config part only.

Shape for the integrator: `build_plan()` is pure (facts + settings -> Plan); `install()`
takes the lock and calls `apply.apply_install()`. Artifacts, the containerd restart and
the CRI health check slot in around that call; `Plan.to_json()["artifacts"]` is theirs.
"""

from __future__ import annotations

from typing import Any

import structlog

from nodeagent.containerd import apply, model
from nodeagent.containerd.plan import Plan, plan_install
from nodeagent.errors import ConfigError, NodeagentError, UsageError
from nodeagent.host import HostRoot
from nodeagent.output import Result
from nodeagent.settings import Settings

log = structlog.get_logger(__name__)
RUNTIMES = ("gvisor", "kata")


def handler_specs(settings: Settings, runtimes: list[str]) -> list[model.HandlerSpec]:
    """The handler tables for the chosen runtimes, with the configured names."""
    try:
        specs = []
        if "gvisor" in runtimes:
            specs.append(model.gvisor_handler(settings.gvisor_handler))
        if "kata" in runtimes:
            specs.append(model.kata_handler(settings.kata_handler))
            specs += [model.kata_hypervisor_handler(name) for name in settings.kata_extra_handlers]
    except UsageError as exc:  # a bad name from the settings file/env is bad input, not bad usage
        raise ConfigError(exc.message, exc.hint) from None
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"handler names must differ, got {names}", "set distinct gvisor_handler / kata_handler names")
    return specs


def select_runtimes(settings: Settings, facts: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Runtimes to install and warnings, applying the eligibility rules of the contract."""
    wanted = list(RUNTIMES) if settings.runtime == "all" else [settings.runtime]
    if settings.skip_eligibility:
        return wanted, []
    chosen, warnings = [], []
    for runtime in wanted:
        verdict = (facts.get("runtimes") or {}).get(runtime) or {}
        if verdict.get("eligible"):
            chosen.append(runtime)
            continue
        reasons = "; ".join(verdict.get("reasons") or ["no detection result"])
        if settings.runtime != "all":
            raise ConfigError(f"{runtime} cannot run on this host: {reasons}",
                              "fix the reasons above, or pass --skip-eligibility to install anyway (image baking)")
        warnings.append(f"skipping {runtime}: {reasons}")
    return chosen, warnings


def detect_facts(host: HostRoot, settings: Settings) -> dict[str, Any]:
    """Host facts to act on; HostReadError when the host could not be read reliably."""
    from nodeagent.detect import usable_facts

    return usable_facts(host, settings)


def build_plan(settings: Settings, facts: dict[str, Any] | None = None) -> tuple[Plan | None, list[str]]:
    """Pure planning from facts (detected when not given); None when nothing is eligible."""
    host = HostRoot(settings.root)
    facts = facts if facts is not None else detect_facts(host, settings)
    runtimes, warnings = select_runtimes(settings, facts)
    if not runtimes:
        return None, warnings
    specs = handler_specs(settings, runtimes)
    cfacts = facts.get("containerd") or {}
    config_path = settings.containerd_config or cfacts.get("config_path")
    if not config_path and not cfacts.get("found", True):
        raise ConfigError("no containerd configuration found on this host",
                          "install containerd first, or pass --containerd-config PATH")
    plan = plan_install(host, specs, facts, config_path=config_path, force=settings.force,
                        gvisor_platform=settings.gvisor_platform)
    return plan, warnings


def _result(data: dict[str, Any], text: str, warnings: list[str]) -> Result:
    for w in warnings:
        log.warning(w)
    return Result(data, text, warnings=warnings)


def _empty(warnings: list[str]) -> Result:
    data = {"changed": False, "restart": False, "files": [], "artifacts": []}
    return _result(data, "nothing to install: no runtime is eligible on this host", warnings)


def plan(settings: Settings, args=None) -> Result:
    result_plan, warnings = build_plan(settings)
    if result_plan is None:
        return _empty(warnings)
    return _result(result_plan.to_json(), result_plan.render_text(), warnings)


def install(settings: Settings, args=None) -> Result:
    if settings.dry_run:
        return plan(settings, args)
    host = HostRoot(settings.root)
    # Plan once before locking so bad input is refused without creating even the lock file,
    # then again under the lock: another nodeagent may have changed the files meanwhile.
    build_plan(settings)
    with apply.lock(host):
        result_plan, warnings = build_plan(settings)
        if result_plan is None:
            return _empty(warnings)
        outcome = apply.apply_install(host, result_plan)
    data = outcome.to_json()
    if outcome.restart:
        data["restart_pending"] = True  # the integrator wires the restart + CRI health here
    text = result_plan.render_text() + "".join(f"\nnote: {n}" for n in outcome.notes if n not in result_plan.notes)
    return _result(data, text, warnings)


def uninstall(settings: Settings, args=None) -> Result:
    host = HostRoot(settings.root)
    runtimes = None if settings.runtime == "all" else {settings.runtime}
    with apply.lock(host):
        flavor = "containerd"
        try:
            flavor = (detect_facts(host, settings).get("containerd") or {}).get("flavor") or flavor
        except NodeagentError:
            pass
        outcome, new_state = apply.plan_uninstall(host, runtimes, flavor=flavor)
        apply.apply_uninstall(host, outcome, new_state)
    lines = [f.diff.rstrip("\n") for f in outcome.files if f.action != "none"]
    lines += [f"  {f.action:7} {f.path}" for f in outcome.files]
    lines.append(f"changed: {'yes' if outcome.changed else 'no'}; containerd restart: {'yes' if outcome.restart else 'no'}")
    lines += [f"note: {n}" for n in outcome.notes]
    return _result(outcome.to_json(), "\n".join(lines), [])
