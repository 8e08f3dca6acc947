"""The config engine judged by REAL containerd 1.6 / 1.7 / 2.1: `config dump` of the result lists
the handlers at the plugin that version reads, and a running daemon's CRI Status lists them with
the CRI plugin healthy; uninstall brings the daemon back to exactly the old handler set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nodeagent.containerd import apply, validate
from nodeagent.facts import HostFacts
from nodeagent.containerd.cri import cri_status
from nodeagent.containerd.plan import compatible, plan_install, plan_uninstall
from nodeagent.errors import ConfigError
from nodeagent.host import HostRoot
from nodeagent.runtimes import gvisor, kata
from tests.support.cli import run_cli
from tests.support.containerd_daemon import minimal_config
from tests.support.scenarios import BINARIES, CORPUS, SCENARIOS, VERSIONS, have_containerd, install_containerd
from tests.support.tree import diff_snapshots, snapshot

pytestmark = pytest.mark.integration


def series_facts(series: str, *, gvisor: bool = True, **containerd) -> HostFacts:
    """Facts as detection gives them for plain containerd of this series at the default config path."""
    data = {"containerd": {"version": VERSIONS[series], "config_path": "/etc/containerd/config.toml",
                           "flavor": "containerd", **containerd}}
    if gvisor:
        data["runtimes"] = {"gvisor": {"platform": "systrap"}}
    return HostFacts.from_json(data)


SPECS = [gvisor.handler(), kata.handler()]


def meaningful(value):
    """Drop zero values: containerd 1.x prints a runtime's options struct in full once it is explicit."""
    if isinstance(value, dict):
        return {k: meaningful(v) for k, v in value.items() if meaningful(v) not in ("", 0, False, None, {}, [])}
    return value


def needs(series: str) -> None:
    if not have_containerd(series):
        pytest.skip(f"containerd {series} is not installed (run scripts/setup-test-env)")


# containerd 2.x ignores a lone version 1 config's CRI settings but migrates and applies them once
# a newer drop-in joins the chain: the effective-config proof refuses (test below)
MIGRATED_BY_OUR_DROPIN = {"minikube-v1@2.1"}


@pytest.mark.parametrize("name", sorted(set(SCENARIOS) - MIGRATED_BY_OUR_DROPIN))
def test_config_dump_of_result_lists_handlers(name, tmp_path):
    scenario = SCENARIOS[name]
    needs(scenario.containerd)
    host = scenario.build(tmp_path)
    install_containerd(tmp_path, scenario.containerd)
    lookup = scenario.effective_path if scenario.flavor in ("k0s", "microk8s") else scenario.config_path
    binary = str(BINARIES[scenario.containerd])
    before = {} if scenario.flavor == "k0s" else validate.effective_dump(host, lookup, {}, binary)

    plan = plan_install(host, SPECS, scenario.facts())
    outcome = apply.apply_install(host, plan)  # validates with the root's (real) containerd first
    assert not [n for n in outcome.notes if "not validated" in n]

    # judge the files now on disk with containerd itself (a k3s template is judged by what it renders)
    overrides = plan.validation_overrides if scenario.flavor in ("k3s", "rke2") else {}
    after = validate.validate_candidate(host, lookup, overrides, [s.name for s in SPECS],
                                        str(BINARIES[scenario.containerd]))
    for spec in SPECS:
        assert compatible(after[spec.name], spec.table()), after[spec.name]
    for handler, table in before.items():  # nobody else's handler changed (zero values are defaults)
        assert meaningful(after[handler]) == meaningful(table), handler


def test_proof_refuses_a_dropin_that_makes_containerd_2_apply_an_ignored_v1_config(tmp_path):
    """minikube's v1 config on 2.1: its sandbox image and registry are ignored today; our v3 drop-in
    would make containerd migrate and apply them. The effective-config proof says so and writes nothing."""
    needs("2.1")
    scenario = SCENARIOS["minikube-v1@2.1"]
    host = scenario.build(tmp_path)
    install_containerd(tmp_path, "2.1")
    before = snapshot(tmp_path)
    plan = plan_install(host, SPECS, scenario.facts())
    with pytest.raises(ConfigError, match=r"pinned_images\.sandbox changed .*'k8s.gcr.io/pause:3.1'") as err:
        apply.apply_install(host, plan)
    assert "beyond nodeagent's handlers" in err.value.message and err.value.hint
    assert diff_snapshots(before, snapshot(tmp_path)) == []


def test_validation_uses_real_containerd_and_catches_ignored_dropins(tmp_path):
    """A v2 drop-in under a v3 config parses fine but containerd 2.x ignores it: the dump shows it."""
    needs("2.1")
    host = SCENARIOS["eks-nvidia-v3@2.1"].build(tmp_path)
    main = host.path("/etc/containerd/config.toml").read_text()
    candidate = {
        "/etc/containerd/config.toml": ("imports = ['/etc/containerd/conf.d/x.toml']\n" + main).encode(),
        "/etc/containerd/conf.d/x.toml": b'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc]\n'
                                         b'runtime_type = "io.containerd.runsc.v1"\n',
    }
    with pytest.raises(ConfigError, match="would not serve handler"):
        validate.validate_candidate(host, "/etc/containerd/config.toml", candidate, ["runsc"], str(BINARIES["2.1"]))
    with pytest.raises(ConfigError, match="rejects"):
        validate.validate_candidate(host, "/etc/containerd/config.toml",
                                    {"/etc/containerd/config.toml": b'version = 3\noom_score = "high"\n'}, [],
                                    str(BINARIES["2.1"]))


def _daemon_config(host: HostRoot, outdir: Path) -> str:
    """The host's config chain as one text the test daemon can load (imports point at copies)."""
    outdir.mkdir(parents=True, exist_ok=True)
    return Path(validate._copy_chain(host, "/etc/containerd/config.toml", {}, str(outdir))).read_text()


@pytest.mark.parametrize("series", ["1.6", "1.7", "2.1"])
def test_running_daemon_serves_handlers_then_uninstall_restores(series, containerd_factory, tmp_path):
    needs(series)
    root = tmp_path / "root"
    state: dict = {}

    def installed(work: Path) -> str:
        (root / "etc/containerd").mkdir(parents=True)
        original = minimal_config(series, work).encode()
        (root / "etc/containerd/config.toml").write_bytes(original)
        host = HostRoot(root)
        facts = series_facts(series)
        plan = plan_install(host, SPECS, facts)
        apply.apply_install(host, plan, containerd_bin=str(BINARIES[series]))
        state.update(host=host, original=original, plan=plan, work=work)
        return _daemon_config(host, work / "chain-installed")

    daemon = containerd_factory(series, config=installed)
    status = cri_status(daemon.socket)
    assert status.ok, status.as_dict()
    types = status.runtime_types()
    assert types.get("runsc") == gvisor.RUNTIME_TYPE and types.get("kata") == kata.RUNTIME_TYPE, types
    assert "runc" in types
    # the daemon took the runsc handler's pod_annotations: gVisor's mount hints reach its shim
    served = status.config["containerd"]["runtimes"]
    assert served["runsc"]["PodAnnotations"] == ["dev.gvisor.*"], served["runsc"]
    assert served["kata"]["PodAnnotations"] == ["io.katacontainers.*"], served["kata"]
    # 1.x edits in place; 2.x writes a drop-in plus an imports entry
    kinds = {c.path: c.action for c in state["plan"].files}
    if series.startswith("2"):
        assert kinds["/etc/containerd/conf.d/90-nodeagent.toml"] == "create"
    else:
        assert kinds["/etc/containerd/config.toml"] == "modify"

    host = state["host"]
    undo, new_state = plan_uninstall(host, None)
    apply.apply_uninstall(host, undo, new_state)
    assert (root / "etc/containerd/config.toml").read_bytes() == state["original"]
    daemon.write_config(_daemon_config(host, state["work"] / "chain-restored"))
    daemon.restart()
    status = cri_status(daemon.socket)
    assert status.ok, status.as_dict()
    assert set(status.runtime_types()) == {"runc"}


def test_cli_install_plan_uninstall_on_a_root_with_containerd_2(tmp_path):
    needs("2.1")
    root = tmp_path / "root"
    (root / "etc/containerd").mkdir(parents=True)
    original = (CORPUS / "eks-nodeadm-nvidia-v3.toml").read_bytes()
    (root / "etc/containerd/config.toml").write_bytes(original)
    install_containerd(root, "2.1")

    planned = run_cli("--root", str(root), "plan", "--skip-eligibility", "-o", "json")
    assert planned.returncode == 0, planned.stderr
    data = json.loads(planned.stdout)
    assert set(data) >= {"changed", "restart", "files", "artifacts"} and data["changed"]
    # no containerd runs in this root: nothing to restart; the handlers apply when it starts
    assert data["restart"] is False and any("when it starts" in n for n in data["notes"])
    paths = {f["path"]: f["action"] for f in data["files"]}
    assert paths == {"/etc/containerd/conf.d/90-nodeagent.toml": "create", "/etc/containerd/config.toml": "modify",
                     "/etc/containerd/runsc.toml": "create"}
    assert not (root / "etc/containerd/conf.d").exists()  # plan wrote nothing
    dry = run_cli("--root", str(root), "install", "--dry-run", "--skip-eligibility", "-o", "json")
    assert json.loads(dry.stdout) == data

    first = run_cli("--root", str(root), "install", "--skip-eligibility", "-o", "json")
    assert first.returncode == 0, first.stderr
    second = run_cli("--root", str(root), "install", "--skip-eligibility", "-o", "json")
    assert json.loads(second.stdout)["changed"] is False and json.loads(second.stdout)["restart"] is False
    gone = run_cli("--root", str(root), "uninstall", "-o", "json")
    assert gone.returncode == 0, gone.stderr
    assert (root / "etc/containerd/config.toml").read_bytes() == original
    assert not (root / "etc/containerd/conf.d/90-nodeagent.toml").exists()
    assert not (root / "etc/containerd/runsc.toml").exists()


@pytest.mark.parametrize("series", ["1.6", "2.1"])
def test_missing_config_file_is_created_and_removed_again(series, tmp_path):
    """No config.toml at all (containerd on defaults): one is created with the handlers, runc kept."""
    needs(series)
    host = HostRoot(tmp_path)
    install_containerd(tmp_path, series)
    facts = series_facts(series, gvisor=False)
    plan = plan_install(host, SPECS, facts)
    assert {f.path: f.action for f in plan.files}["/etc/containerd/config.toml"] == "create"
    apply.apply_install(host, plan)
    dumped = validate.effective_dump(host, "/etc/containerd/config.toml", {}, str(BINARIES[series]))
    assert {"runc", "runsc", "kata"} <= set(dumped)
    undo, state = plan_uninstall(host, None)
    apply.apply_uninstall(host, undo, state)
    assert not host.exists("/etc/containerd/config.toml") and not host.exists(gvisor.RUNSC_CONFIG_PATH)


# -- Kata shims (issue 15 item 1): one kata-<shim> handler each, judged by real containerd ----------
SHIM_NAMES = ["qemu", "clh", "fc", "dragonball", "qemu-runtime-rs"]


@pytest.mark.parametrize("series", ["1.6", "1.7", "2.1"])
def test_real_containerd_serves_every_kata_shim_handler_then_uninstall_restores(series, containerd_factory, tmp_path):
    """Running containerd (CRI Status) lists every kata-<shim> with its runtime_type; `config dump`
    shows its ConfigPath (the Go shims' configuration-<shim>.toml, runtime-rs' under runtime-rs/) and,
    for fc, the devmapper snapshotter on 1.7/2.x (1.6 has no per-handler snapshotter and drops it)."""
    needs(series)
    from nodeagent.runtimes import kata_shims

    shims = kata_shims.parse_shims(SHIM_NAMES)
    specs = [*SPECS, *(kata.shim_handler(s) for s in shims)]
    root = tmp_path / "root"
    state: dict = {}

    def installed(work: Path) -> str:
        (root / "etc/containerd").mkdir(parents=True)
        original = minimal_config(series, work).encode()
        (root / "etc/containerd/config.toml").write_bytes(original)
        host = HostRoot(root)
        facts = series_facts(series)
        apply.apply_install(host, plan_install(host, specs, facts), containerd_bin=str(BINARIES[series]))
        state.update(host=host, original=original, work=work)
        return _daemon_config(host, work / "chain-installed")

    daemon = containerd_factory(series, config=installed)
    status = cri_status(daemon.socket)
    assert status.ok, status.as_dict()
    types = status.runtime_types()
    for shim in shims:
        assert types.get(shim.handler) == f"io.containerd.kata-{shim.name}.v2", types
    dumped = validate.effective_dump(state["host"], "/etc/containerd/config.toml", {}, str(BINARIES[series]))
    base = "/opt/kata/share/defaults/kata-containers"
    assert dumped["kata-qemu"]["options"]["ConfigPath"] == f"{base}/configuration-qemu.toml"
    assert dumped["kata-fc"]["options"]["ConfigPath"] == f"{base}/configuration-fc.toml"
    assert dumped["kata-dragonball"]["options"]["ConfigPath"] == f"{base}/runtime-rs/configuration-dragonball.toml"
    assert dumped["kata-qemu-runtime-rs"]["options"]["ConfigPath"] == f"{base}/runtime-rs/configuration-qemu-runtime-rs.toml"
    assert all(dumped[s.handler]["pod_annotations"] == ["io.katacontainers.*"] for s in shims)
    assert dumped["kata-fc"].get("snapshotter") == (None if series == "1.6" else "devmapper")

    host = state["host"]
    undo, new_state = plan_uninstall(host, None)
    apply.apply_uninstall(host, undo, new_state)
    assert (root / "etc/containerd/config.toml").read_bytes() == state["original"]
    daemon.write_config(_daemon_config(host, state["work"] / "chain-restored"))
    daemon.restart()
    status = cri_status(daemon.socket)
    assert status.ok and set(status.runtime_types()) == {"runc"}, status.as_dict()


@pytest.mark.parametrize("series", ["1.6", "1.7", "2.1"])
def test_real_containerd_stops_serving_a_dropped_kata_shim_then_uninstall_restores(series, containerd_factory, tmp_path):
    """A changed shim list changes only the difference: install with kata_shims qemu,clh, re-run with
    qemu only, and the running containerd (CRI Status, after the restart the plan asks for) no longer
    serves kata-clh but still serves kata-qemu, kata and runsc; `--runtime gvisor` alone then leaves
    Kata's handlers alone; uninstall restores the original bytes. Planned through settings and
    state.json as the CLI plans it (planning.build_plan); written with the real `config dump` proof."""
    needs(series)
    from nodeagent import state as state_mod
    from nodeagent.planning import build_plan
    from nodeagent.settings import Settings

    root = tmp_path / "root"
    (root / "etc/containerd").mkdir(parents=True)
    host = HostRoot(root)
    facts = series_facts(series, found=True)
    saved: dict = {}

    def run(shims: list[str], runtime: str = "all"):
        settings = Settings(root=str(root), runtime=runtime, kata_shims=shims, skip_eligibility=True)
        plan, _ = build_plan(settings, facts)
        apply.apply_install(host, plan, containerd_bin=str(BINARIES[series]))
        return plan

    def installed(work: Path) -> str:
        saved.update(original=minimal_config(series, work).encode(), work=work)
        (root / "etc/containerd/config.toml").write_bytes(saved["original"])
        run(["qemu", "clh"])
        return _daemon_config(host, work / "chain-installed")

    daemon = containerd_factory(series, config=installed)
    types = cri_status(daemon.socket).runtime_types()
    assert {"kata", "kata-qemu", "kata-clh", "runsc"} <= set(types), types

    plan = run(["qemu"])
    assert plan.dropped == ["kata-clh"] and plan.restart, plan.render_text()
    assert "kata-clh" in "".join(f.diff for f in plan.files)
    daemon.write_config(_daemon_config(host, saved["work"] / "chain-dropped"))
    daemon.restart()
    status = cri_status(daemon.socket)
    assert status.ok, status.as_dict()
    types = status.runtime_types()
    assert "kata-clh" not in types, types
    assert types.get("kata-qemu") == "io.containerd.kata-qemu.v2" and types.get("kata") == kata.RUNTIME_TYPE, types
    assert "runsc" in types and "runc" in types
    assert set(state_mod.load(host).handlers) == {"runsc", "kata", "kata-qemu"}

    only_gvisor = run([], runtime="gvisor")  # Kata is not in this run: nothing of it is reconciled
    assert only_gvisor.dropped == [] and not only_gvisor.changed
    assert set(state_mod.load(host).handlers) == {"runsc", "kata", "kata-qemu"}

    undo, new_state = plan_uninstall(host, None)
    apply.apply_uninstall(host, undo, new_state)
    assert (root / "etc/containerd/config.toml").read_bytes() == saved["original"]
    daemon.write_config(_daemon_config(host, saved["work"] / "chain-restored"))
    daemon.restart()
    status = cri_status(daemon.socket)
    assert status.ok and set(status.runtime_types()) == {"runc"}, status.as_dict()


@pytest.mark.parametrize("series", ["1.6", "1.7", "2.1"])
def test_devmapper_pool_fact_matches_real_containerd_s_dump(series, tmp_path):
    """Firecracker's eligibility reads the devmapper pool from the config chain: a drop-in's devmapper
    table without pool_name replaces the main file's on 1.x (the dump shows pool_name "") and merges
    on 2.x (the pool stays). The fact must say what containerd itself says."""
    needs(series)
    from nodeagent.detect import containerd_config

    v = 3 if series == "2.1" else 2
    q = "'" if v == 3 else '"'
    table = f"[plugins.{q}io.containerd.snapshotter.v1.devmapper{q}]\n"
    (tmp_path / "etc/containerd/conf.d").mkdir(parents=True)
    (tmp_path / "etc/containerd/config.toml").write_text(
        f"version = {v}\nimports = ['/etc/containerd/conf.d/x.toml']\n{table}  pool_name = 'pool'\n")
    (tmp_path / "etc/containerd/conf.d/x.toml").write_text(f"version = {v}\n{table}  base_image_size = '10GB'\n")
    host = HostRoot(tmp_path)
    version = VERSIONS[series]
    fact = containerd_config.snapshotters(containerd_config.read(host, "/etc/containerd/config.toml", version), version)
    dump = validate.effective_config(host, "/etc/containerd/config.toml", {}, str(BINARIES[series]))
    real = dump["plugins"]["io.containerd.snapshotter.v1.devmapper"].get("pool_name") or None
    assert fact["devmapper_pool"] == real == (None if series != "2.1" else "pool")
