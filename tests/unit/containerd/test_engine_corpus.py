"""Table-driven over real-world configs and every version/flavor: install registers the handlers,
leaves every other byte alone, is a no-op the second time, and uninstall restores the original bytes.

These run the planner and apply layer on fake roots (no containerd binary inside them, so
`config dump` validation is skipped here; tests/integration/test_containerd_config.py does it
with the real daemons).
"""

from __future__ import annotations

import difflib
import re
import tomllib

import pytest

from nodeagent.containerd import apply
from nodeagent.containerd.inspect import registered_handlers
from nodeagent.containerd.plan import compatible, plan_install, plan_uninstall
from nodeagent.runtimes import gvisor, kata
from tests.support.scenarios import SCENARIOS
from tests.support.tree import diff_snapshots, snapshot

SPECS = [gvisor.handler(), kata.handler()]
STATE_PREFIX = "var/lib/nodeagent"


def host_snapshot(root):
    """Everything but nodeagent's own state dir (backups stay there on purpose). Bytes and modes
    only: an uninstall restores the original bytes by an atomic write (a new inode and mtime)."""
    return {k: v for k, v in snapshot(root, metadata=False).items() if k not in ("var", "var/lib") and not k.startswith(STATE_PREFIX)}


def only_insertions(old: bytes, new: bytes) -> list[str]:
    """Lines of `old` that are missing or changed in `new` (must be none: we only add)."""
    a = old.decode().replace("\r\n", "\n").splitlines()
    b = new.decode().replace("\r\n", "\n").splitlines()
    bad = []
    for tag, i1, i2, _, _ in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if tag in ("replace", "delete"):
            bad += a[i1:i2]
    return bad


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_install_is_additive_idempotent_and_uninstall_restores(name, tmp_path):
    scenario = SCENARIOS[name]
    host = scenario.build(tmp_path)
    before = host_snapshot(tmp_path)
    facts = scenario.facts()

    lookup = scenario.effective_path if scenario.flavor in ("k0s", "microk8s") else scenario.config_path
    handlers_before = {} if scenario.flavor == "k0s" else registered_handlers(host, lookup, scenario.version)

    plan = plan_install(host, SPECS, facts)
    assert plan.changed and plan.restart == scenario.expect_restart
    edited = [f for f in plan.files if f.role != "runsc"]
    assert any(f.path == (scenario.effective_path or scenario.config_path) for f in edited), plan.render_text()
    outcome = apply.apply_install(host, plan)
    assert outcome.changed

    # everything the operator wrote is still there, byte for byte, line for line
    for change in plan.files:
        assert host.path(change.path).read_bytes() == change.new
        if change.old is not None:
            changed_lines = only_insertions(change.old, change.new)
            if any(path == change.path for path, _ in plan.imports_added):  # `imports = []` gains our entry
                changed_lines = [line for line in changed_lines if not line.startswith("imports")]
            assert changed_lines == [], change.path
            if b"\r\n" in change.old:
                assert change.new.count(b"\n") == change.new.count(b"\r\n"), "CRLF file got LF lines"

    # the handlers are registered where containerd looks for them
    if scenario.flavor in ("k3s", "rke2"):
        rendered = plan.validation_overrides[scenario.config_path]
        handlers = registered_handlers(host, scenario.config_path, scenario.version, {scenario.config_path: rendered})
        template = host.path(scenario.effective_path).read_text()
        assert template.startswith('{{ template "base" . }}')
    elif scenario.flavor in ("k0s", "microk8s"):  # k0s merges its drop-ins; microk8s renders its template
        handlers = registered_handlers(host, scenario.effective_path, scenario.version)
    else:
        handlers = registered_handlers(host, scenario.config_path, scenario.version)
    for spec in SPECS:
        assert compatible(handlers[spec.name], spec.table()), (spec.name, handlers.get(spec.name))
    for name, table in handlers_before.items():  # the operator's handlers are untouched
        assert handlers[name] == table

    # runsc.toml: platform from facts, systemd-cgroup only when the default runtime uses it
    runsc = tomllib.loads(host.path(gvisor.RUNSC_CONFIG_PATH).read_text())["runsc_config"]
    assert runsc["platform"] == "systrap"
    written = "\n".join(p.read_text() for p in tmp_path.rglob("*.toml*") if p.is_file())
    default = next((h for h in handlers if re.search(rf"default_runtime_name\s*=\s*['\"]{h}['\"]", written)), "runc")
    default_systemd = bool(((handlers.get(default) or {}).get("options") or {}).get("SystemdCgroup"))
    assert ("systemd-cgroup" in runsc) == default_systemd

    # second run: nothing to do
    again = plan_install(host, SPECS, facts)
    assert not again.changed and not again.restart, again.render_text()

    # uninstall: original bytes back, created files gone
    undo, new_state = plan_uninstall(host, None, flavor=scenario.flavor)
    assert undo.restart == scenario.expect_restart
    apply.apply_uninstall(host, undo, new_state)
    after = host_snapshot(tmp_path)
    changes = diff_snapshots(before, after)
    assert changes == [], changes  # created drop-in dirs are gone again too
    assert not host.exists("/var/lib/nodeagent/state.json")


@pytest.mark.parametrize("name", ["kind-v2@1.6", "eks-nvidia-v3@2.1", "k3s-v2"])
def test_partial_uninstall_keeps_the_other_runtime(name, tmp_path):
    scenario = SCENARIOS[name]
    host = scenario.build(tmp_path)
    before = host_snapshot(tmp_path)
    apply.apply_install(host, plan_install(host, SPECS, scenario.facts()))
    undo, state = plan_uninstall(host, {"kata"}, flavor=scenario.flavor)
    apply.apply_uninstall(host, undo, state)
    assert host.exists(gvisor.RUNSC_CONFIG_PATH)
    assert set(state.handlers) == {"runsc"}
    plan = plan_install(host, [gvisor.handler()], scenario.facts())
    assert not plan.changed, plan.render_text()
    undo, state = plan_uninstall(host, {"gvisor"}, flavor=scenario.flavor)
    apply.apply_uninstall(host, undo, state)
    assert diff_snapshots(before, host_snapshot(tmp_path)) == []
