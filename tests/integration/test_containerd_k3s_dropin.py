"""k3s/rke2 releases whose base template imports a drop-in directory (k3s-io/k3s#13680:
`config.toml.d/*.toml` in the v2 template, `config-v3.toml.d/*.toml` in v3) get our handlers as a
drop-in there, judged by the REAL containerd 2.1; older releases (no such import in the rendered
config) and containerd 1.x nodes keep the `{{ template "base" . }}` template.

The rendered config is tests/fixtures/containerd/k3s-rendered-v*.toml with the `imports` line
those releases render put on top (the test adds it: it is the only difference).
"""

from __future__ import annotations

import pytest

from nodeagent.containerd import apply, validate
from nodeagent.containerd.plan import compatible, plan_install, plan_uninstall
from nodeagent.runtimes import gvisor, kata
from tests.support.scenarios import BINARIES, K3S_DIR, OURS, RKE2_DIR, Scenario, have_containerd, install_containerd
from tests.support.tree import diff_snapshots, snapshot

pytestmark = pytest.mark.integration
SPECS = [gvisor.handler(), kata.handler()]


def scenario(flavor: str, series: str, with_import: bool) -> Scenario:
    directory = K3S_DIR if flavor == "k3s" else RKE2_DIR
    v3 = series.startswith("2")
    rendered = (OURS / f"k3s-rendered-{'v3' if v3 else 'v2'}.toml").read_text()
    dropins = f"{directory}/{'config-v3.toml.d' if v3 else 'config.toml.d'}"
    if with_import:
        rendered = rendered.replace("\nversion = ", f'\nimports = ["{dropins}/*.toml"]\nversion = ', 1)
    return Scenario(f"{flavor}-{series}", series, {f"{directory}/config.toml": rendered.encode()}, flavor=flavor,
                    config_path=f"{directory}/config.toml", effective_path=f"{dropins}/90-nodeagent.toml")


@pytest.mark.parametrize("flavor", ["k3s", "rke2"])
def test_release_with_dropin_dir_gets_a_dropin_there(flavor, tmp_path):
    if not have_containerd("2.1"):
        pytest.skip("containerd 2.1 is not installed (run scripts/setup-test-env)")
    case = scenario(flavor, "2.1", with_import=True)
    host = case.build(tmp_path)
    install_containerd(tmp_path, "2.1")
    before = snapshot(tmp_path, metadata=False)  # a round trip that restores bytes, not inodes/mtimes
    plan = plan_install(host, SPECS, case.facts())
    assert plan.layout.kind == "dropin" and plan.layout.path == case.effective_path, plan.render_text()
    assert {c.path for c in plan.files if c.action != "none"} == {case.effective_path, gvisor.RUNSC_CONFIG_PATH}
    outcome = apply.apply_install(host, plan)  # validated and proven by the real 2.1
    assert not [n for n in outcome.notes if "not validated" in n]
    served = validate.effective_dump(host, case.config_path, {}, str(BINARIES["2.1"]))
    assert all(compatible(served[s.name], s.table()) for s in SPECS)
    assert not [p for p in host.listdir(K3S_DIR if flavor == "k3s" else RKE2_DIR) if p.endswith(".tmpl")]
    assert not plan_install(host, SPECS, case.facts()).changed
    undo, state = plan_uninstall(host, None, flavor=flavor)
    apply.apply_uninstall(host, undo, state)
    after = {k: v for k, v in snapshot(tmp_path, metadata=False).items() if not k.startswith("var/lib/nodeagent")}
    assert diff_snapshots({k: v for k, v in before.items() if not k.startswith("var/lib/nodeagent")}, after) == []


@pytest.mark.parametrize("series,with_import", [("2.1", False), ("1.7", True)])
def test_older_release_or_containerd_1x_keeps_the_template(series, with_import, tmp_path):
    case = scenario("k3s", series, with_import)
    host = case.build(tmp_path)
    plan = plan_install(host, SPECS, case.facts())
    assert plan.layout.kind == "template", plan.render_text()
    assert plan.layout.path.endswith(".tmpl")
