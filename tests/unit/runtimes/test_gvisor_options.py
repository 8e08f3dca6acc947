"""gVisor's options (issue 15, item 3): the runsc handler's pod_annotations, runsc.toml keys from
settings (platform, net-raw, opt-in debug logging), and bad values refused before anything changes.

Config edits run through the real planner on fake roots; the bad-input cases through the real CLI.
"""

from __future__ import annotations

import json
import tomllib

import pytest

from nodeagent.containerd import apply
from nodeagent.facts import HostFacts
from nodeagent.containerd.inspect import registered_handlers
from nodeagent.containerd.model import HandlerSpec
from nodeagent.containerd.plan import plan_install, plan_uninstall
from nodeagent.errors import ConflictError
from nodeagent.runtimes import gvisor, kata, runsc_toml
from nodeagent.state import load as load_state
from tests.support.cli import assert_known_error, run_cli
from tests.support.tree import diff_snapshots, snapshot
from tests.support.scenarios import SCENARIOS, converge_command, install_containerd
from tests.support.hosttrees import copy_host

RUNSC = gvisor.RUNSC_CONFIG_PATH
# the runsc table nodeagent wrote before it set pod_annotations (what upgraded nodes carry)
OLD_RUNSC = HandlerSpec(name="runsc", runtime="gvisor", runtime_type=gvisor.RUNTIME_TYPE,
                        options={"TypeUrl": gvisor.OPTIONS_TYPE_URL, "ConfigPath": RUNSC})


def test_runsc_handler_carries_gvisors_pod_annotations():
    assert gvisor.handler().table()["pod_annotations"] == ["dev.gvisor.*"]
    assert gvisor.handler().table() is not gvisor.handler().table()  # no shared mutable list


@pytest.mark.parametrize("name", ["default-1.7", "eks-nvidia-v3@2.1", "k3s-v2", "rke2-v2", "k0s", "microk8s"])
def test_own_handler_from_an_older_nodeagent_is_updated_not_refused(tmp_path, name):
    """Upgraded nodes carry nodeagent's old runsc table: it is rewritten with the new key. The same
    table written by someone else (gVisor's docs) is adopted as it is, as before the key existed."""
    scenario = SCENARIOS[name]
    host = scenario.build(tmp_path)
    original = host.read_bytes(scenario.config_path)
    apply.apply_install(host, plan_install(host, [OLD_RUNSC, kata.handler()], scenario.facts()))
    specs = [gvisor.handler(), kata.handler()]
    adopted = plan_install(host, specs, scenario.facts())  # not known as ours: adopted, not edited
    assert not adopted.added and not adopted.changed
    owned = load_state(host).handlers
    plan = plan_install(host, specs, scenario.facts(), owned=owned)
    assert any("own handler 'runsc' is updated: pod_annotations missing" in n for n in plan.notes)
    assert not plan.replaced  # nothing to put back on uninstall: it was ours
    apply.apply_install(host, plan)
    if plan.layout.kind == "template":  # k3s renders the config from it at its next start
        assert plan.updated == ["runsc"]
        assert 'pod_annotations = ["dev.gvisor.*"]' in host.path(plan.layout.path).read_text()
    else:
        # k0s merges its drop-ins itself, microk8s renders containerd.toml from its template
        handlers = registered_handlers(host, plan.layout.path if scenario.flavor in ("k0s", "microk8s")
                                       else scenario.config_path, scenario.version)
        assert handlers["runsc"] == gvisor.handler().table()
    assert not plan_install(host, specs, scenario.facts(), owned=owned).changed  # converged
    undo, state = plan_uninstall(host, None)
    apply.apply_uninstall(host, undo, state)
    assert host.read_bytes(scenario.config_path) == original
    assert {p: host.read_bytes(p) for p in scenario.files} == scenario.files


def test_older_own_block_in_a_changed_template_is_still_removed_on_uninstall(tmp_path):
    """k3s template edited by the operator after an older nodeagent wrote runsc into it: no byte
    restore is possible, so our block must be recognised as ours although today's table differs."""
    scenario = SCENARIOS["k3s-v2"]
    host = scenario.build(tmp_path)
    plan = plan_install(host, [OLD_RUNSC], scenario.facts())
    apply.apply_install(host, plan)
    template = host.path(plan.layout.path)
    mine = '\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.mine]\n  runtime_type = "io.containerd.runc.v2"\n'
    template.write_text(template.read_text() + mine)
    undo, state = plan_uninstall(host, None)
    apply.apply_uninstall(host, undo, state)
    text = template.read_text()
    assert "runsc" not in text and mine in text


def test_someone_elses_runsc_table_must_still_have_the_contracts_options(tmp_path):
    scenario = SCENARIOS["default-1.7"]
    host = scenario.build(tmp_path)
    bare = HandlerSpec(name="runsc", runtime="gvisor", runtime_type=gvisor.RUNTIME_TYPE)
    apply.apply_install(host, plan_install(host, [bare], scenario.facts()))
    with pytest.raises(ConflictError, match="differs from nodeagent's: options.TypeUrl missing, options.ConfigPath missing"):
        plan_install(host, [gvisor.handler()], scenario.facts())


def test_debug_log_is_opt_in_and_taken_back_without_touching_the_operators_keys():
    operator = b'[runsc_config]\n  debug = "true"  # mine\n  strace = "true"\n  platform = "kvm"\n'
    on = runsc_toml.render(operator, "kvm", False, RUNSC, debug_log="/var/log/runsc/")
    keys = tomllib.loads(on.decode())["runsc_config"]
    assert keys == {"debug": "true", "strace": "true", "platform": "kvm", "net-raw": "false",
                    "debug-log": "/var/log/runsc/"}
    assert b'debug = "true"  # mine' in on  # the operator's equal key stays theirs
    assert runsc_toml.render(on, "kvm", False, RUNSC, debug_log="/var/log/runsc/") == on
    moved = runsc_toml.render(on, "kvm", False, RUNSC, debug_log="/srv/runsc/%ID%/")
    assert tomllib.loads(moved.decode())["runsc_config"]["debug-log"] == "/srv/runsc/%ID%/"
    off = runsc_toml.render(moved, "kvm", False, RUNSC)
    assert tomllib.loads(off.decode())["runsc_config"] == {"debug": "true", "strace": "true", "platform": "kvm",
                                                          "net-raw": "false"}
    fresh = runsc_toml.render(None, "systrap", False, RUNSC, debug_log="/var/log/runsc/")
    assert tomllib.loads(runsc_toml.render(fresh, "systrap", False, RUNSC).decode())["runsc_config"] == {
        "platform": "systrap", "net-raw": "false"}


def test_net_raw_is_owned_and_off_by_default():
    operator = b'[runsc_config]\nnet-raw = "true"\n'
    assert tomllib.loads(runsc_toml.render(operator, "systrap", False, RUNSC).decode())["runsc_config"]["net-raw"] == "false"
    on = runsc_toml.render(None, "systrap", False, RUNSC, net_raw=True)
    assert tomllib.loads(on.decode())["runsc_config"]["net-raw"] == "true"


def test_settings_reach_runsc_toml_through_the_cli(tmp_path):
    scenario = SCENARIOS["default-1.7"]
    scenario.build(tmp_path)
    proc = run_cli("--root", str(tmp_path), "-o", "json", "plan", "--runtime", "gvisor", "--skip-eligibility",
                   "--gvisor-platform", "ptrace", "--gvisor-debug-log", "/var/log/runsc/", "--gvisor-net-raw")
    assert proc.returncode == 0, proc.stderr
    runsc = next(f for f in json.loads(proc.stdout)["files"] if f["path"] == RUNSC)
    for line in ('+platform = "ptrace"', '+net-raw = "true"', '+debug = "true" # nodeagent: gvisor_debug_log',
                 '+debug-log = "/var/log/runsc/" # nodeagent: gvisor_debug_log'):
        assert line in runsc["diff"].splitlines(), runsc["diff"]
    config = next(f for f in json.loads(proc.stdout)["files"] if f["path"] != RUNSC)
    assert '+          pod_annotations = ["dev.gvisor.*"]' in config["diff"].splitlines(), config["diff"]


@pytest.mark.parametrize("args, code, said", [
    (("--gvisor-debug-log", "var/log/runsc/"), 2, "is not an absolute path"),
    (("--gvisor-debug-log", "/var/log/../../etc/"), 2, "is not an absolute path"),
    (("--gvisor-debug-log", "/var/log/runsc/\nplatform = kvm"), 2, "is not an absolute path"),
    (("--gvisor-platform", "hvf"), 64, "invalid choice"),
])
def test_bad_gvisor_options_change_nothing(tmp_path, args, code, said):
    SCENARIOS["default-1.7"].build(tmp_path)
    before = snapshot(tmp_path)
    proc = run_cli("--root", str(tmp_path), "install", "--runtime", "gvisor", "--skip-eligibility", *args)
    assert said in assert_known_error(proc, code)
    assert diff_snapshots(before, snapshot(tmp_path)) == []


def test_bad_platform_in_the_settings_file_changes_nothing(tmp_path):
    SCENARIOS["default-1.7"].build(tmp_path)
    config = tmp_path / "nodeagent.toml"
    config.write_text('gvisor_platform = "hvf"\n')
    before = snapshot(tmp_path)
    proc = run_cli("--root", str(tmp_path), "--config", str(config), "install", "--skip-eligibility")
    assert "invalid gvisor-platform 'hvf'" in assert_known_error(proc, 64)
    assert diff_snapshots(before, snapshot(tmp_path)) == []


# -- doctor: runsc.toml parses, and its platform can run here --------------------------------------

def _doctor_check(root, text: bytes | None) -> dict:
    if text is not None:
        path = root / RUNSC.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text)
    before = snapshot(root)
    proc = run_cli("doctor", "--root", str(root), "-o", "json")
    assert "Traceback" not in proc.stderr, proc.stderr
    assert diff_snapshots(before, snapshot(root)) == [], "doctor must not write"
    return next(c for c in json.loads(proc.stdout)["checks"] if c["id"] == "gvisor-options")


def test_doctor_fails_kvm_forced_where_dev_kvm_does_not_answer(tmp_path):
    root = copy_host("vm-no-kvm", tmp_path)  # a Xen guest: no /dev/kvm at all
    check = _doctor_check(root, b'[runsc_config]\n  platform = "kvm"\n')
    assert check["status"] == "fail"
    assert "forces platform kvm, but /dev/kvm does not answer here" in check["summary"]
    assert "gvisor_platform" in check["hint"] and "systrap" in check["hint"]
    assert _doctor_check(root, b'[runsc_config]\n  platform = "systrap"\n')["status"] == "ok"


def test_doctor_names_broken_and_unknown_runsc_toml(tmp_path):
    root = copy_host("containerd-v2", tmp_path)
    broken = _doctor_check(root, b'[runsc_config\nplatform = "kvm"\n')
    assert broken["status"] == "fail" and "is not valid TOML" in broken["summary"] and broken["hint"]
    unknown = _doctor_check(root, b'[runsc_config]\nplatform = "hvf"\n')
    assert unknown["status"] == "fail" and "'hvf', which runsc does not have" in unknown["summary"]
    debug = _doctor_check(root, b'[runsc_config]\nplatform = "ptrace"\ndebug-log = "/var/log/runsc/"\nnet-raw = "true"\n')
    # this tree's runsc handler (gVisor's docs' table) has no pod_annotations: named, with a hint
    assert debug["status"] == "warn", debug
    assert "platform ptrace can run here, debug logs to /var/log/runsc/, raw sockets allowed; but the runsc " \
        "handler lacks pod_annotations" in debug["summary"]


def test_doctor_verdicts_from_facts():
    usable = HostFacts.from_json({"virtualization": {"kvm_usable": True, "in_vm": False}})
    nested = HostFacts.from_json({"virtualization": {"kvm_usable": True, "in_vm": True}})
    assert gvisor.check_runsc_toml(None, RUNSC, usable)[0] == "ok"
    assert gvisor.check_runsc_toml(b"[runsc_config]\nplatform = 'kvm'\n", RUNSC, usable)[0] == "ok"
    status, _, hint = gvisor.check_runsc_toml(b"[runsc_config]\nplatform = 'kvm'\n", RUNSC, nested)
    assert status == "warn" and "systrap is faster" in hint
    assert gvisor.check_runsc_toml(b"runsc_config = 1\n", RUNSC, usable)[0] == "fail"
    assert gvisor.check_runsc_toml(b"\xff", RUNSC, usable)[0] == "fail"  # not UTF-8
    toml = b"[runsc_config]\nplatform = 'systrap'\n"
    assert gvisor.check_runsc_toml(toml, RUNSC, usable, gvisor.handler().table())[0] == "ok"
    status, summary, hint = gvisor.check_runsc_toml(toml, RUNSC, usable, {"runtime_type": gvisor.RUNTIME_TYPE})
    assert status == "warn" and "lacks pod_annotations" in summary and "--force" in hint


def test_upgraded_node_converges_through_the_real_pipeline(tmp_path):
    """planning hands state.json's handlers to the planner: `install` on a node nodeagent set up
    before pod_annotations existed updates its runsc table instead of refusing it."""
    scenario = SCENARIOS["default-1.7"]
    host = scenario.build(tmp_path)
    install_containerd(tmp_path, "1.7")
    original = host.read_bytes(scenario.config_path)
    apply.apply_install(host, plan_install(host, [OLD_RUNSC], scenario.facts()))
    report = converge_command("install", tmp_path, runtime="gvisor", skip_eligibility=True)
    assert any("own handler 'runsc' is updated" in n for n in report.notes), report.notes
    assert registered_handlers(host, scenario.config_path, scenario.version)["runsc"] == gvisor.handler().table()
    assert not converge_command("plan", tmp_path, runtime="gvisor", skip_eligibility=True).changed
    converge_command("uninstall", tmp_path)
    assert host.read_bytes(scenario.config_path) == original


def test_debug_log_on_then_off_then_uninstall_restores_runsc_toml(tmp_path):
    scenario = SCENARIOS["kind-v2@1.6"]
    host = scenario.build(tmp_path)
    original = b'# operator notes\n[runsc_config]\n  platform = "ptrace"\n  strace = "true"\n'
    host.path(RUNSC).parent.mkdir(parents=True, exist_ok=True)
    host.path(RUNSC).write_bytes(original)
    on = {"gvisor": gvisor.GvisorOptions(debug_log="/var/log/runsc/", net_raw=True)}
    apply.apply_install(host, plan_install(host, [gvisor.handler()], scenario.facts(), runtime_options=on))
    keys = tomllib.loads(host.path(RUNSC).read_text())["runsc_config"]
    assert keys["debug-log"] == "/var/log/runsc/" and keys["net-raw"] == "true" and keys["strace"] == "true"
    apply.apply_install(host, plan_install(host, [gvisor.handler()], scenario.facts()))
    keys = tomllib.loads(host.path(RUNSC).read_text())["runsc_config"]
    assert keys == {"platform": "systrap", "strace": "true", "net-raw": "false"}
    undo, state = plan_uninstall(host, None)
    apply.apply_uninstall(host, undo, state)
    assert host.read_bytes(RUNSC) == original
