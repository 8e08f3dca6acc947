"""A changed shim list changes only the difference (issue 15 item 1): a Kata shim taken out of
kata_shims loses its `kata-<shim>` handler on the next install, in the same plan, judged by the
real containerd's `config dump`; handlers nodeagent did not register, and runtimes not in the
run, are left alone; uninstall still restores the original bytes."""

from __future__ import annotations

import pytest

from nodeagent import state as state_mod
from nodeagent.containerd import apply, validate
from nodeagent.containerd.plan import dropped_handlers, plan_install, plan_uninstall
from nodeagent.host import HostRoot
from nodeagent.runtimes import gvisor, kata, kata_shims
from tests.support.scenarios import BINARIES, SCENARIOS, Scenario, have_containerd


def specs(*shims: str) -> list:
    return [gvisor.handler(), kata.handler(), *(kata.shim_handler(s) for s in kata_shims.parse_shims(list(shims)))]


def binary(scenario: Scenario) -> str:
    if not have_containerd(scenario.containerd):
        pytest.skip(f"containerd {scenario.containerd} is not installed (run scripts/setup-test-env)")
    return str(BINARIES[scenario.containerd])


def install(host: HostRoot, scenario: Scenario, wanted: list):
    """One install run as the CLI plans it (state.json read), validated by the real containerd."""
    plan = plan_install(host, wanted, scenario.facts(), state=state_mod.load(host))
    apply.apply_install(host, plan, containerd_bin=binary(scenario))
    return plan


def served(host: HostRoot, scenario: Scenario, plan) -> set[str]:
    """Handlers the real containerd would run with (for a template: the config k3s renders from it)."""
    judged = plan.layout.validate_path or plan.config_path
    return set(validate.effective_dump(host, judged, plan.validation_overrides if plan.layout.kind == "template" else {},
                                       binary(scenario)))


def snapshot_of(host: HostRoot, scenario: Scenario) -> dict[str, bytes | None]:
    return {path: host.read_bytes(path) for path in scenario.files}


# in place on 1.6, a drop-in on 2.1 (v2 and a CRLF v3 file), a k3s template, k0s drop-ins, microk8s
@pytest.mark.parametrize("name", ["kind-v2@1.6", "kind-v2@2.1", "eks-v3-crlf@2.1", "k3s-v2", "k0s", "microk8s"])
def test_dropped_shim_loses_its_handler_and_uninstall_restores(name, tmp_path):
    scenario = SCENARIOS[name]
    host = scenario.build(tmp_path)
    original = snapshot_of(host, scenario)
    first = install(host, scenario, specs("qemu", "clh"))
    assert {"kata", "kata-qemu", "kata-clh"} <= served(host, scenario, first)

    second = install(host, scenario, specs("qemu"))
    assert second.dropped == ["kata-clh"] and second.changed and second.restart == scenario.expect_restart
    assert "kata-clh" in "".join(f.diff for f in second.files)  # the plan's diff shows the removal
    result = served(host, scenario, second)
    assert {"runsc", "kata", "kata-qemu"} <= result and "kata-clh" not in result
    saved = state_mod.load(host)
    assert "kata-clh" not in saved.handlers and saved.handlers["kata-qemu"] == "kata"
    assert all("kata-clh" not in record.handlers for record in saved.files.values())
    assert not plan_install(host, specs("qemu"), scenario.facts(), state=saved).changed  # converged

    undo, new_state = plan_uninstall(host, None)
    apply.apply_uninstall(host, undo, new_state)
    assert snapshot_of(host, scenario) == original


def test_only_runtimes_of_this_run_are_reconciled(tmp_path):
    """`--runtime gvisor` plans only gVisor's handlers: Kata's stay registered and owned."""
    scenario = SCENARIOS["kind-v2@2.1"]
    host = scenario.build(tmp_path)
    install(host, scenario, specs("qemu", "clh"))
    before = snapshot_of(host, scenario), host.read_bytes(state_mod.STATE_FILE)
    plan = plan_install(host, [gvisor.handler()], scenario.facts(), state=state_mod.load(host))
    assert plan.dropped == [] and not plan.changed
    assert dropped_handlers([gvisor.handler()], state_mod.load(host).handlers) == []
    apply.apply_install(host, plan, containerd_bin=binary(scenario))
    assert (snapshot_of(host, scenario), host.read_bytes(state_mod.STATE_FILE)) == before


def test_handler_nodeagent_did_not_register_is_never_dropped(tmp_path):
    """An operator's own kata-fc (not in state.json) and an operator's edit stay when our kata-clh goes."""
    scenario = SCENARIOS["kind-v2@1.6"]
    host = scenario.build(tmp_path)
    config = host.path(scenario.config_path)
    config.write_text(config.read_text() + '\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata-fc]\n'
                      '  runtime_type = "io.containerd.kata-fc.v2"\n')
    install(host, scenario, specs("qemu", "clh"))
    config.write_text(config.read_text() + "\n# operator was here\n")
    plan = install(host, scenario, [gvisor.handler(), kata.handler()])  # kata_shims emptied
    assert plan.dropped == ["kata-clh", "kata-qemu"]
    result = served(host, scenario, plan)
    assert {"runc", "test-handler", "kata-fc", "kata", "runsc"} <= result
    assert not {"kata-qemu", "kata-clh"} & result
    assert "# operator was here" in config.read_text()
    assert set(state_mod.load(host).handlers) == {"runsc", "kata"}


def test_dropping_a_handler_replaced_with_force_says_where_the_old_one_is(tmp_path):
    scenario = SCENARIOS["kind-v2@1.6"]
    host = scenario.build(tmp_path)
    config = host.path(scenario.config_path)
    config.write_text(config.read_text() + '\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata-clh]\n'
                      '  runtime_type = "io.containerd.operator.v2"\n')
    plan = plan_install(host, specs("clh"), scenario.facts(), force=True, state=state_mod.load(host))
    apply.apply_install(host, plan, containerd_bin=binary(scenario))
    plan = install(host, scenario, specs())
    assert plan.dropped == ["kata-clh"] and "kata-clh" not in served(host, scenario, plan)
    backup = state_mod.load(host).files[scenario.config_path].backup
    assert any("replaced with --force" in n and backup in n for n in plan.notes), plan.notes
    assert b"io.containerd.operator.v2" in host.read_bytes(backup)
