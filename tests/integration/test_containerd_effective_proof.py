"""The effective-config proof (nodeagent.containerd.effective), judged by REAL containerd 1.6 and 2.1:
a candidate that changes anything besides our handlers is refused with the differences named, and
nothing is written. The candidate is produced by the planner's own verb (`edit.add_runtime`) given a
deliberately wrong input text (a config whose sandbox image was altered), which is what a planner
bug looks like from the outside; no subprocess or planner function is mocked.
"""

from __future__ import annotations

import dataclasses

import pytest

from nodeagent.containerd import apply, edit, model, tomlparse
from nodeagent.containerd.effective import differences, meaningful, unexpected_changes
from nodeagent.containerd.plan import plan_install
from nodeagent.errors import ConfigError
from nodeagent.runtimes import gvisor, kata
from tests.support.scenarios import SCENARIOS, have_containerd, install_containerd
from tests.support.tree import diff_snapshots, snapshot

pytestmark = pytest.mark.integration
SPECS = [gvisor.handler(), kata.handler()]


def tricked(plan, path: str, original: str, replace: tuple[str, str]):
    """The plan with `path`'s candidate built by add_runtime from a wrongly altered input text."""
    text, style = edit.decode(plan_file(plan, path).old, path)
    assert original in text
    wrong = text.replace(*replace)
    version = model.config_version(tomlparse.parse(text, path).get("version"))
    for spec in SPECS:
        wrong = edit.add_runtime(wrong, version, spec, style, path)
    files = [dataclasses.replace(f, new=edit.encode(wrong, style)) if f.path == path else f for f in plan.files]
    return dataclasses.replace(plan, files=files, validation_overrides={f.path: f.new for f in files if f.role != "runsc"})


def plan_file(plan, path):
    return next(f for f in plan.files if f.path == path)


@pytest.mark.parametrize("name,path,replace,named", [
    ("kind-v2@1.6", "/etc/containerd/config.toml", ('sandbox_image = "k8s.gcr.io/pause:3.6"',
                                                    'sandbox_image = "evil.example/pause:1"'), "sandbox_image"),
    ("eks-nvidia-v3@2.1", "/etc/containerd/conf.d/90-nodeagent.toml", ("version = 3\n",
                                                                       "version = 3\noom_score = -999\n"), "oom_score"),
])
def test_a_tricked_candidate_is_refused_with_what_differs(name, path, replace, named, tmp_path):
    scenario = SCENARIOS[name]
    if not have_containerd(scenario.containerd):
        pytest.skip(f"containerd {scenario.containerd} is not installed (run scripts/setup-test-env)")
    host = scenario.build(tmp_path)
    install_containerd(tmp_path, scenario.containerd)
    plan = plan_install(host, SPECS, scenario.facts())
    if plan_file(plan, path).old is None:  # a drop-in we create: trick the planner's skeleton instead
        change = plan_file(plan, path)
        plan = dataclasses.replace(plan, files=[dataclasses.replace(f, old=f.new.split(b"\n[")[0] + b"\n")
                                                if f is change else f for f in plan.files])
    bad = tricked(plan, path, replace[0], replace)
    before = snapshot(tmp_path)
    with pytest.raises(ConfigError) as err:
        apply.apply_install(host, bad)
    assert "beyond nodeagent's handlers" in err.value.message and named in err.value.message, err.value.message
    assert err.value.hint
    assert diff_snapshots(before, snapshot(tmp_path)) == []
    apply.apply_install(host, plan)  # the honest plan passes the same proof


def test_differences_name_paths_and_zero_values_count_as_absent():
    before = {"version": 2, "plugins": {"cri": {"a": 1, "b": "", "runtimes": {"runc": {"x": 1}}}}}
    after = {"version": 2, "plugins": {"cri": {"a": 2, "c": True, "runtimes": {"runc": {"x": 1}}}}}
    assert differences(meaningful(before), meaningful(after)) == [
        "plugins.cri.a changed (1 -> 2)", "plugins.cri.c added"]
    ours = {"version": 2, "plugins": {"io.containerd.grpc.v1.cri": {"containerd": {"runtimes": {
        "runc": {"runtime_type": "io.containerd.runc.v2", "options": {}},
        "runsc": {"runtime_type": "io.containerd.runsc.v1"}}}}}, "imports": ["/tmp/x"]}
    plain = {"version": 2, "plugins": {"io.containerd.grpc.v1.cri": {"containerd": {"runtimes": {
        "runc": {"runtime_type": "io.containerd.runc.v2"}}}}}}
    assert unexpected_changes(plain, ours, {"runsc"}) == []
    assert unexpected_changes(plain, ours, set()) == [
        "plugins.io.containerd.grpc.v1.cri.containerd.runtimes.runsc added"]


def test_cli_refuses_when_containerd_would_start_applying_an_ignored_v1_config(tmp_path):
    """The real CLI on minikube's v1 config under containerd 2.1 (see test_containerd_config.py):
    exit 2, one error naming the setting that would change, one hint, the root byte-identical."""
    from tests.support.cli import assert_known_error, run_cli

    if not have_containerd("2.1"):
        pytest.skip("containerd 2.1 is not installed (run scripts/setup-test-env)")
    root = tmp_path / "root"
    SCENARIOS["minikube-v1@2.1"].build(root)
    install_containerd(root, "2.1")
    before = snapshot(root)
    proc = run_cli("--root", str(root), "install", "--skip-eligibility", "--restart", "none")
    message = assert_known_error(proc, 2)
    assert "beyond nodeagent's handlers" in message and "pinned_images.sandbox changed" in message, message
    # only the run lock (on tmpfs /run), as for every refusal after the lock is taken
    assert diff_snapshots(before, snapshot(root)) == ["added run", "added run/nodeagent.lock"]
