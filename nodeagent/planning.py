"""Plan: from detected facts and settings to what an install would change (writes nothing).

The middle step of observe -> plan -> apply: `detect/` observes the host, this module picks
the runtimes the contract's eligibility rules allow, their containerd handler tables, and asks
`containerd.plan` for the file changes; `converge` applies the result. It sits below the CLI
(`commands/`) so the pipeline never calls back up into a command.
"""

from __future__ import annotations


from nodeagent.containerd import model
from nodeagent.containerd.plan import Plan, plan_install
from nodeagent.errors import ConfigError, UsageError
from nodeagent.facts import HostFacts
from nodeagent.host import HostRoot
from nodeagent.settings import Settings
from nodeagent import runtimes as runtime_plugins, state as state_mod
from nodeagent.runtimes import NAMES, selected

RUNTIMES = NAMES


def handler_specs(settings: Settings, runtimes: list[str]) -> list[model.HandlerSpec]:
    """The handler tables for the chosen runtimes, with the configured names."""
    try:
        specs = []
        for rt in runtime_plugins.ALL:
            if rt.name in runtimes:
                specs += rt.handler_specs(rt.options(settings))
    except UsageError as exc:  # a bad name from the settings file/env is bad input, not bad usage
        raise ConfigError(exc.message, exc.hint) from None
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"handler names must differ, got {names}", "set distinct gvisor_handler / kata_handler names")
    return specs


def select_runtimes(settings: Settings, facts: HostFacts) -> tuple[list[str], list[str]]:
    """Runtimes to install and warnings, applying the eligibility rules of the contract."""
    wanted = selected(settings.runtime)
    if settings.skip_eligibility:
        return wanted, []
    chosen, warnings = [], []
    for runtime in wanted:
        verdict = facts.verdict(runtime)
        if verdict and verdict.eligible:
            _refuse_ineligible_variants(settings, facts, runtime)
            chosen.append(runtime)
            continue
        reasons = "; ".join((verdict.reasons if verdict else None) or ["no detection result"])
        if settings.runtime != "all":
            raise ConfigError(f"{runtime} cannot run on this host: {reasons}",
                              "fix the reasons above, or pass --skip-eligibility to install anyway (image baking)")
        warnings.append(f"skipping {runtime}: {reasons}")
    return chosen, warnings


def _refuse_ineligible_variants(settings: Settings, facts: HostFacts, runtime: str) -> None:
    """A handler the operator chose for an eligible runtime (a Kata shim) that cannot run here."""
    rt = runtime_plugins.get(runtime)
    try:
        verdicts = rt.variant_verdicts(facts, rt.options(settings))
    except UsageError as exc:
        raise ConfigError(exc.message, exc.hint) from None
    bad = {h: v for h, v in verdicts.items() if not v.eligible}
    if bad:
        why = "; ".join(f"{h}: {', '.join(v.reasons or ['not eligible'])}" for h, v in bad.items())
        raise ConfigError(f"{why}; nothing was changed",
                          "fix the reasons above, drop the handler from the settings, or pass --skip-eligibility")


def build_plan(settings: Settings, facts: HostFacts) -> tuple[Plan | None, list[str]]:
    """The config plan for these facts (files are read, none written); None when nothing is eligible."""
    host = HostRoot(settings.root)
    runtimes, warnings = select_runtimes(settings, facts)
    if not runtimes:
        return None, warnings
    specs = handler_specs(settings, runtimes)
    config_path = settings.containerd_config or facts.containerd.config_path
    if not config_path and not facts.containerd.found:
        raise ConfigError("no containerd configuration found on this host",
                          "install containerd first, or pass --containerd-config PATH")
    options = {rt.name: rt.options(settings) for rt in runtime_plugins.ALL if rt.name in runtimes}
    plan = plan_install(host, specs, facts, config_path=config_path, force=settings.force, runtime_options=options,
                        state=state_mod.load(host))
    return plan, warnings
