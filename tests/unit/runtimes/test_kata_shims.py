"""Kata shims (issue 15 item 1): the shim table, the kata_shims / kata_shim_overheads settings, each
shim's handler, links and eligibility, as pure functions of settings and facts."""

from __future__ import annotations

import pytest

from nodeagent.errors import ConfigError, UsageError
from nodeagent.planning import select_runtimes
from nodeagent.facts import HostFacts
from nodeagent.runtimes import kata, kata_shims
from nodeagent.settings import Settings, load

GO, RUST = kata_shims.GO_SHIM, kata_shims.RUST_SHIM
BASE = "/opt/kata/share/defaults/kata-containers"


def test_go_and_rust_shims_follow_kata_deploy():
    """kata-deploy.sh: cloud-hypervisor, dragonball and qemu-runtime-rs run the Rust shim with a
    configuration under runtime-rs/; every other shim the Go one with configuration-<shim>.toml."""
    want = {"qemu": (GO, f"{BASE}/configuration-qemu.toml"), "clh": (GO, f"{BASE}/configuration-clh.toml"),
            "fc": (GO, f"{BASE}/configuration-fc.toml"),
            "dragonball": (RUST, f"{BASE}/runtime-rs/configuration-dragonball.toml"),
            "qemu-runtime-rs": (RUST, f"{BASE}/runtime-rs/configuration-qemu-runtime-rs.toml"),
            "cloud-hypervisor": (RUST, f"{BASE}/runtime-rs/configuration-cloud-hypervisor.toml")}
    for name, (target, config) in want.items():
        shim = kata_shims.SHIMS[name]
        assert (shim.shim_target, shim.config_path) == (target, config), name
        assert shim.link == f"/usr/local/bin/containerd-shim-kata-{name}-v2"
        assert shim.release_paths()[1] == config.removeprefix("/opt/kata/")


def test_each_shim_handler_has_its_runtime_type_configpath_and_the_kata_keys():
    opts = kata.RUNTIME.options(Settings(kata_shims=["qemu", "fc", "qemu-runtime-rs"]))
    specs = {s.name: s.table() for s in kata.RUNTIME.handler_specs(opts)}
    assert list(specs) == ["kata", "kata-qemu", "kata-fc", "kata-qemu-runtime-rs"]
    assert specs["kata-qemu"] == {"runtime_type": "io.containerd.kata-qemu.v2", **kata.HANDLER_KEYS,
                                  "options": {"ConfigPath": f"{BASE}/configuration-qemu.toml"}}
    assert specs["kata-fc"]["snapshotter"] == "devmapper"  # Firecracker boots the rootfs from a block device
    assert specs["kata-qemu-runtime-rs"]["options"]["ConfigPath"] == f"{BASE}/runtime-rs/configuration-qemu-runtime-rs.toml"
    # uninstall recognises fc's block as written with and without the snapshotter key
    assert [("snapshotter" in s.keys) for s in kata.RUNTIME.handlers_named("kata-fc")] == [False, True, False]


def test_kata_shims_setting_env_and_the_superseded_kata_extra_handlers():
    s = load({}, {"NODEAGENT_KATA_SHIMS": "qemu, dragonball", "NODEAGENT_KATA_EXTRA_HANDLERS": "kata-clh,kata-qemu"})
    assert s.kata_shims == ["qemu", "dragonball"]
    assert [x.name for x in kata.RUNTIME.options(s).shims] == ["qemu", "dragonball", "clh"]
    with pytest.raises(UsageError, match="unknown Kata shim 'kata-xyz'"):
        kata.RUNTIME.options(Settings(kata_extra_handlers=["kata-xyz"]))


def test_links_and_ownership():
    opts = kata.RUNTIME.options(Settings(kata_shims=["clh", "dragonball"]))
    links = kata.RUNTIME.links("/opt/nodeagent/kata/3.28.0", opts)
    assert list(links)[0] == "/opt/kata"  # the first link names the version
    assert links["/usr/local/bin/containerd-shim-kata-clh-v2"] == GO
    assert links["/usr/local/bin/containerd-shim-kata-dragonball-v2"] == RUST
    assert len(kata.RUNTIME.all_links("x")) == 2 + len(kata_shims.SHIMS)
    assert kata.RUNTIME.owns_link("/usr/local/bin/containerd-shim-kata-dragonball-v2", RUST)
    assert not kata.RUNTIME.owns_link("/usr/local/bin/containerd-shim-kata-dragonball-v2", GO)  # not as we make it
    assert not kata.RUNTIME.owns_link("/usr/local/bin/containerd-shim-kata-hyperv-v2", GO)


def test_overheads_default_to_kata_deploy_and_can_be_set_per_shim():
    opts = kata.RUNTIME.options(Settings(kata_shims=["qemu", "clh", "qemu-tdx"], kata_shim_overheads=["clh=200Mi/300m",
                                                                                                    "kata-qemu=1Gi"]))
    got = {rc.name: (rc.handler, rc.label, rc.memory, rc.cpu) for rc in kata.RUNTIME.runtime_classes(opts)}
    assert got == {"kata": ("kata", "kata", "160Mi", "250m"), "kata-qemu": ("kata-qemu", "kata-qemu", "1Gi", "250m"),
                   "kata-clh": ("kata-clh", "kata-clh", "200Mi", "300m"),
                   "kata-qemu-tdx": ("kata-qemu-tdx", "kata-qemu-tdx", "2048Mi", "1")}
    assert {s.name: s.overhead_source for s in opts.shims} == {
        "qemu": "kata_shim_overheads", "clh": "kata_shim_overheads", "qemu-tdx": kata_shims.OVERHEAD_SOURCE}


@pytest.mark.parametrize("entry", ["qemu", "qemu=", "qemu=1Zi", "qemu=-1Mi", "qemu=1Gi/", "qemu=1Gi/2x", "nope=1Gi",
                                   "qemu=1Gi\nhandler: runc", "=1Gi"])
def test_bad_overhead_entries_are_refused(entry):
    with pytest.raises(UsageError, match="invalid kata_shim_overheads entry"):
        kata_shims.parse_overheads([entry])


def facts(kvm=True, vsock=True, pool="pool0", version="2.1.9", cri_snapshotter=None, tdx=False, snp=False):
    return {"arch": "amd64",
            "virtualization": {"kvm_usable": kvm, "vhost_vsock": vsock, "reasons": [],
                               "confidential": {"tdx": tdx, "sev_snp": snp}},
            "containerd": {"version": version, "devmapper_pool": pool, "cri_snapshotter": cri_snapshotter}}


def test_every_shim_needs_kata_s_own_rules_and_the_contract_keys_stay():
    verdict = kata.eligibility(HostFacts.from_json(facts(vsock=False))).to_json()
    assert set(verdict) == {"eligible", "reasons", "shims"} and not verdict["eligible"]
    assert set(verdict["shims"]) == set(kata_shims.SHIMS)
    assert all(not v["eligible"] and any("vhost-vsock" in r for r in v["reasons"]) for v in verdict["shims"].values())


def test_fc_needs_devmapper_and_confidential_shims_their_kvm_parameter():
    shims = kata.eligibility(HostFacts.from_json(facts(pool=None))).to_json()["shims"]
    assert shims["qemu"]["eligible"] and shims["dragonball"]["eligible"]
    assert not shims["fc"]["eligible"] and "devmapper snapshotter" in shims["fc"]["reasons"][0]
    assert "kvm_intel's tdx parameter" in shims["qemu-tdx"]["reasons"][0]
    assert "kvm_amd's sev_snp parameter" in shims["qemu-snp"]["reasons"][0]
    ok = kata.eligibility(HostFacts.from_json(facts(tdx=True, snp=True))).to_json()["shims"]
    assert ok["fc"]["eligible"] and ok["qemu-tdx"]["eligible"] and ok["qemu-snp"]["eligible"]
    # containerd 1.6 has no per-handler snapshotter: the CRI plugin's own must be devmapper
    assert "before 1.7" in kata.eligibility(HostFacts.from_json(facts(version="1.6.20"))).to_json()["shims"]["fc"]["reasons"][0]
    assert kata.eligibility(HostFacts.from_json(facts(version="1.6.20", cri_snapshotter="devmapper"))).to_json()["shims"]["fc"]["eligible"]


def test_install_refuses_an_ineligible_chosen_shim_unless_skip_eligibility():
    f = HostFacts.from_json({**facts(pool=None), "runtimes": {"kata": {"eligible": True, "reasons": []}}})
    with pytest.raises(ConfigError) as err:
        select_runtimes(Settings(runtime="kata", kata_shims=["qemu", "fc"]), f)
    assert "kata-fc: Firecracker needs containerd's devmapper snapshotter" in err.value.message
    assert "--skip-eligibility" in err.value.hint and "kata-qemu" not in err.value.message
    assert select_runtimes(Settings(runtime="kata", kata_shims=["qemu"]), f) == (["kata"], [])
    assert select_runtimes(Settings(runtime="kata", kata_shims=["fc"], skip_eligibility=True), f) == (["kata"], [])
