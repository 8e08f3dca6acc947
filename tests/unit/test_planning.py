"""planning: from facts and settings to the runtimes, their handler tables and the config plan.
Facts here are written by hand (the contract's detect JSON shape); a plan reads a fake root."""

from __future__ import annotations

import pytest

from nodeagent import planning
from nodeagent.errors import ConfigError
from nodeagent.facts import HostFacts
from nodeagent.settings import Settings
from tests.support.scenarios import OURS

NOT_ELIGIBLE = {"eligible": False, "reasons": ["/dev/kvm does not exist"]}


def facts(gvisor=None, kata=None, **containerd) -> HostFacts:
    return HostFacts.from_json({"arch": "amd64",
            "containerd": {"found": True, "version": "1.7.24", "flavor": "containerd",
                           "config_path": "/etc/containerd/config.toml", **containerd},
            "runtimes": {"gvisor": gvisor or {"eligible": True, "platform": "systrap", "reasons": []},
                         "kata": kata or {"eligible": True, "reasons": []}}})


def test_handler_specs_use_the_configured_names_and_extra_kata_handlers():
    s = Settings(gvisor_handler="gvisor", kata_handler="kata-vm", kata_extra_handlers=["kata-clh"])
    assert [h.name for h in planning.handler_specs(s, ["gvisor", "kata"])] == ["gvisor", "kata-vm", "kata-clh"]
    assert [h.name for h in planning.handler_specs(s, ["gvisor"])] == ["gvisor"]


@pytest.mark.parametrize("over, words", [
    ({"gvisor_handler": "Not A Label"}, "invalid handler name"),
    ({"gvisor_handler": "same", "kata_handler": "same"}, "handler names must differ"),
    ({"kata_extra_handlers": ["kata-xyz"]}, "unknown Kata shim"),
])
def test_bad_handler_names_from_settings_are_config_errors(over, words):
    with pytest.raises(ConfigError, match=words) as exc:
        planning.handler_specs(Settings(**over), ["gvisor", "kata"])
    assert exc.value.exit_code == 2 and exc.value.hint  # bad input from a file, not bad usage (64)


def test_all_skips_an_ineligible_runtime_with_a_warning_a_named_one_refuses():
    chosen, warnings = planning.select_runtimes(Settings(runtime="all"), facts(kata=NOT_ELIGIBLE))
    assert chosen == ["gvisor"] and warnings == ["skipping kata: /dev/kvm does not exist"]
    with pytest.raises(ConfigError, match="kata cannot run on this host: /dev/kvm does not exist") as exc:
        planning.select_runtimes(Settings(runtime="kata"), facts(kata=NOT_ELIGIBLE))
    assert "--skip-eligibility" in exc.value.hint
    assert planning.select_runtimes(Settings(runtime="kata", skip_eligibility=True), facts(kata=NOT_ELIGIBLE)) == (["kata"], [])
    assert planning.select_runtimes(Settings(runtime="all"), HostFacts()) == ([], ["skipping gvisor: no detection result",
                                                                          "skipping kata: no detection result"])


def test_build_plan_plans_nothing_when_nothing_is_eligible_and_refuses_without_a_config(tmp_path):
    assert planning.build_plan(Settings(root=str(tmp_path)), facts(gvisor=NOT_ELIGIBLE, kata=NOT_ELIGIBLE)) == (
        None, ["skipping gvisor: /dev/kvm does not exist", "skipping kata: /dev/kvm does not exist"])
    with pytest.raises(ConfigError, match="no containerd configuration found") as exc:
        planning.build_plan(Settings(root=str(tmp_path)), facts(found=False, config_path=None))
    assert "--containerd-config" in exc.value.hint


def test_build_plan_reads_the_roots_config_and_writes_nothing(tmp_path):
    (tmp_path / "etc/containerd").mkdir(parents=True)
    config = tmp_path / "etc/containerd/config.toml"
    config.write_bytes((OURS / "default-1.7.toml").read_bytes())
    plan, warnings = planning.build_plan(Settings(root=str(tmp_path), runtime="gvisor"), facts())
    assert warnings == [] and plan.changed and [h.name for h in plan.handlers] == ["runsc"]
    assert sorted(f.path for f in plan.files if f.action != "none") == ["/etc/containerd/config.toml",
                                                                        "/etc/containerd/runsc.toml"]
    assert config.read_bytes() == (OURS / "default-1.7.toml").read_bytes()
    assert sorted(p.name for p in (tmp_path / "etc/containerd").iterdir()) == ["config.toml"]
