"""containerd.downgrade: after containerd 2.x -> 1.x, the drop-in nodeagent wrote for 2.x would
replace 1.x's whole CRI section (containerd#5837), so the plan for 1.x deletes it (and the
`imports` entry added for it) and puts the handlers in place. Fake roots, planner and apply
only (the daemons' view: tests/integration/test_containerd_upgrade.py)."""

from __future__ import annotations

from nodeagent.containerd import apply
from nodeagent.containerd.plan import plan_install
from nodeagent.host import HostRoot
from nodeagent.facts import HostFacts
from nodeagent.runtimes import gvisor

CONFIG = "/etc/containerd/config.toml"
DROPIN = "/etc/containerd/conf.d/90-nodeagent.toml"
SPECS = [gvisor.handler()]
MAIN = b'version = 2\n[plugins."io.containerd.grpc.v1.cri"]\n  sandbox_image = "registry.k8s.io/pause:3.10"\n'


def facts(version: str) -> HostFacts:
    return HostFacts.from_json({"containerd": {"version": version, "config_path": CONFIG, "flavor": "containerd"},
                                "runtimes": {"gvisor": {"platform": "systrap"}}})


def installed_on_2x(tmp_path) -> HostRoot:
    (tmp_path / "etc/containerd").mkdir(parents=True)
    (tmp_path / CONFIG.lstrip("/")).write_bytes(MAIN)
    host = HostRoot(tmp_path)
    apply.apply_install(host, plan_install(host, SPECS, facts("2.1.9")))
    assert host.exists(DROPIN) and "conf.d/90-nodeagent.toml" in host.path(CONFIG).read_text()
    return host


def test_on_1x_our_dropin_is_retired_and_the_handler_goes_in_place(tmp_path):
    host = installed_on_2x(tmp_path)
    plan = plan_install(host, SPECS, facts("1.7.24"))
    actions = {f.path: f.action for f in plan.files if f.action != "none"}
    assert actions[DROPIN] == "delete" and actions[CONFIG] == "modify"
    assert any("containerd#5837" in note for note in plan.notes)
    apply.apply_install(host, plan)
    text = host.path(CONFIG).read_text()
    assert not host.exists(DROPIN) and "imports" not in text  # the imports line we created is gone too
    assert text.startswith(MAIN.decode()) and 'runtimes.runsc]' in text
    assert not plan_install(host, SPECS, facts("1.7.24")).changed  # converged


def test_a_dropin_we_did_not_create_is_left_alone(tmp_path):
    host = installed_on_2x(tmp_path)
    (tmp_path / "etc/containerd/conf.d/50-operator.toml").write_text(
        'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.mine]\n  runtime_type = "io.containerd.runc.v2"\n')
    plan = plan_install(host, SPECS, facts("1.7.24"))
    assert "/etc/containerd/conf.d/50-operator.toml" not in {f.path for f in plan.files if f.action != "none"}
    assert {f.path: f.action for f in plan.files}[DROPIN] == "delete"
