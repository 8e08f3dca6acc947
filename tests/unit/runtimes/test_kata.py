"""The Kata plug-in (`runtimes.kata.RUNTIME`), through its public methods only.

Releases are resolved against real mirrors built with tests/support/mirror_builder.py: a local
directory, a file:// URL, and real loopback HTTP(S) servers (tests/support/http_server.py) for the
plain-http refusal and for GitHub's release listing. Kata's own shim cannot run on this VM (no
host-side vsock), so the tarballs hold a stand-in shim script.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from nodeagent.artifacts.cache import Cache
from nodeagent.artifacts.digest import Digest, file_digest
from nodeagent.artifacts.download import Fetcher
from nodeagent.artifacts.extract import Limits
from nodeagent.artifacts.pins import NO_PINS, Pins
from nodeagent.errors import ArtifactError, UsageError
from nodeagent.facts import ContainerdFacts, HostFacts, Virtualization
from nodeagent.host import HostRoot
from nodeagent.runtimes import kata
from nodeagent.runtimes.base import VerifyContext
from nodeagent.settings import Settings
from tests.support import mirror_builder as mb
from tests.support.http_server import LoopbackServer, shared_tls

RT = kata.RUNTIME
V = "3.11.0"  # not in the pinned catalog: its digest must come from a source these tests control
ASSET = f"kata-static-{V}-amd64.tar.zst"


# -- options and handlers ------------------------------------------------------------------------


def test_options_read_the_kata_settings():
    opts = RT.options(Settings(kata_version=V, kata_sha256="b" * 64, kata_handler="kata-x",
                               kata_extra_handlers=["kata-clh"], kata_runtimeclass="vm", kata_overhead_cpu="1"))
    assert (opts.version, opts.handler, opts.runtimeclass, opts.overhead_cpu) == (V, "kata-x", "vm", "1")
    assert [s.handler for s in opts.shims] == ["kata-clh"]  # the superseded kata_extra_handlers still work
    assert RT.version(opts) == V and RT.operator_digest(opts) == "b" * 64
    assert RT.digest_flag == "--kata-sha256" and RT.config_roles == ()


def test_the_default_handler_carries_the_contracts_keys():
    (spec,) = RT.handler_specs(RT.default_options())
    table = spec.table()
    assert (spec.name, spec.runtime, table["runtime_type"]) == ("kata", "kata", "io.containerd.kata.v2")
    assert table["privileged_without_host_devices"] is True and table["pod_annotations"] == ["io.katacontainers.*"]
    assert "options" not in table


@pytest.mark.parametrize("hv", ["qemu", "clh", "fc"])
def test_each_hypervisor_handler_has_its_shim_and_configuration(hv):
    _, spec = RT.handler_specs(RT.options(Settings(kata_extra_handlers=[f"kata-{hv}"])))
    assert spec.table()["runtime_type"] == f"io.containerd.kata-{hv}.v2"
    assert spec.table()["options"] == {"ConfigPath": f"/opt/kata/share/defaults/kata-containers/configuration-{hv}.toml"}
    assert spec.table()["pod_annotations"] == ["io.katacontainers.*"]


def test_handler_tables_are_not_shared_between_specs():
    a, b = RT.handler_specs(RT.default_options())[0], RT.handler_specs(RT.default_options())[0]
    a.table()["pod_annotations"].append("mutated")
    assert b.table()["pod_annotations"] == ["io.katacontainers.*"]


@pytest.mark.parametrize("name", ["kata-nope", "nope"])
def test_unknown_extra_handlers_are_usage_errors(name):
    with pytest.raises(UsageError, match=f"unknown Kata shim '{name}'") as e:
        RT.handler_specs(RT.options(Settings(kata_extra_handlers=[name])))
    assert "qemu, clh, fc" in e.value.hint


def test_handlers_named_offers_every_table_the_name_could_be():
    assert [s.runtime_type for s in RT.handlers_named("kata")] == ["io.containerd.kata.v2"]
    fc = [s.runtime_type for s in RT.handlers_named("kata-fc")]
    assert fc[:2] == ["io.containerd.kata.v2", "io.containerd.kata-fc.v2"]
    assert set(fc) == {"io.containerd.kata.v2", "io.containerd.kata-fc.v2"}
    assert RT.handlers_named("not valid!") == []


def test_kata_writes_no_option_files():
    assert RT.config_files(lambda p: None, None, RT.default_options()) == []


# -- eligibility -------------------------------------------------------------------------------------


def host(arch="amd64", **virt) -> HostFacts:
    return HostFacts(arch=arch, virtualization=Virtualization(**virt))


def test_a_host_with_kvm_and_vhost_vsock_is_eligible():
    verdict = RT.eligibility(host("arm64", kvm_usable=True, vhost_vsock=True))
    assert verdict.eligible and verdict.reasons == []
    assert verdict.shims["qemu"].eligible
    # a shim's own needs come on top: Firecracker wants containerd's devmapper snapshotter
    assert not verdict.shims["fc"].eligible and "devmapper" in verdict.shims["fc"].reasons[0]
    with_pool = HostFacts(arch="arm64", virtualization=Virtualization(kvm_usable=True, vhost_vsock=True),
                          containerd=ContainerdFacts(devmapper_pool="pool", cri_snapshotter="devmapper"))
    assert RT.eligibility(with_pool).shims["fc"].eligible


def test_this_kind_of_vm_is_not_eligible_and_the_probes_words_are_kept():
    """What the probes report on these test VMs: KVM works, the host side of vsock does not."""
    verdict = RT.eligibility(host(kvm_usable=True, vhost_vsock=False,
                                  reasons=["/dev/vhost-vsock is unusable: no such device"]))
    assert not verdict.eligible and verdict.reasons == ["/dev/vhost-vsock is unusable: no such device"]
    assert not any(v.eligible for v in verdict.shims.values())


def test_every_missing_piece_is_a_reason():
    verdict = RT.eligibility(host("riscv64", reasons=["/dev/kvm missing", "vsock: no module"]))
    assert not verdict.eligible
    assert verdict.reasons == [
        "KVM is not usable (/dev/kvm missing)",
        "host-side vsock (/dev/vhost-vsock) is missing: load the vhost_vsock module",
        "architecture riscv64 is not supported by Kata (amd64, arm64, s390x, ppc64le)",
    ]
    assert RT.eligibility(HostFacts()).reasons[0].startswith("KVM is not usable")  # no probe words (the text then repeats itself)


# -- catalog ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["3.28.0", "3.2.0-rc0", "3.2.0-alpha1", "10.0.1.2"])
def test_check_version_accepts_release_tags(version):
    assert RT.check_version(version) == version


@pytest.mark.parametrize("version", ["latest", "v3.28.0", "3.28", "3.28.0\n", "3.28.0/../x", "3.28.0 "])
def test_check_version_refuses_the_rest(version):
    with pytest.raises(ArtifactError, match="invalid kata version"):
        RT.check_version(version)


def test_arches_paths_and_layouts():
    assert [RT.upstream_arch(a) for a in ("amd64", "arm64", "s390x", "ppc64le")] == ["amd64", "arm64", "s390x", "ppc64le"]
    with pytest.raises(ArtifactError, match="no static build for architecture 'riscv64'"):
        RT.upstream_arch("riscv64")
    assert RT.pinned_layouts(V, "arm64") == [[f"kata/{V}/kata-static-{V}-arm64.tar.zst"],
                                            [f"kata/{V}/kata-static-{V}-arm64.tar.xz"]]
    assert RT.builtin_digest("3.28.0", "arm64") and not RT.builtin_digest("3.28.0", "amd64")


# -- resolve -------------------------------------------------------------------------------------


def resolve(mirror, flag=None, pins=NO_PINS, listing="", version=V, arch="amd64"):
    return RT.resolve(Fetcher(), version, arch, mirror, flag, pins, listing)


def test_resolve_takes_a_local_mirrors_sha256(tmp_path):
    tarball = mb.kata_release(tmp_path / "m", V)
    for mirror in (str(tmp_path / "m"), (tmp_path / "m").as_uri()):
        rel = resolve(mirror)
        assert (rel.runtime, rel.version, rel.layout) == ("kata", V, "kata-tarball") and RT.is_archive(rel)
        (f,) = rel.files
        assert (f.name, f.digest) == (ASSET, Digest("sha256", file_digest(tarball, "sha256")))


def test_resolve_falls_back_to_tar_xz(tmp_path):
    mb.kata_release(tmp_path / "m", V, ext="tar.xz")
    assert resolve(str(tmp_path / "m")).files[0].name == f"kata-static-{V}-amd64.tar.xz"


def test_flag_and_pin_and_sidecar_must_agree(tmp_path):
    tarball = mb.kata_release(tmp_path / "m", V)
    right = Digest("sha256", file_digest(tarball, "sha256"))
    wrong = Digest("sha256", "0" * 64)
    assert resolve(str(tmp_path / "m"), flag=right).files[0].digest == right
    with pytest.raises(ArtifactError, match="conflicting digests") as e:
        resolve(str(tmp_path / "m"), flag=wrong)
    assert "tampered" in e.value.hint
    pinned = Pins("p", {f"kata/{V}/{ASSET}": wrong})
    tarball.with_name(ASSET + ".sha256").write_text("garbage\n")  # a pin means the sidecar is not read
    assert resolve(str(tmp_path / "m"), pins=pinned).files[0].digest == wrong


def test_the_builtin_catalog_refuses_a_mirror_that_disagrees(tmp_path):
    mb.kata_release(tmp_path / "m", "3.28.0", arch="arm64")  # our tarball is not upstream's
    with pytest.raises(ArtifactError, match="conflicting digests"):
        resolve(str(tmp_path / "m"), version="3.28.0", arch="arm64")


def test_no_digest_from_any_source_is_refused(tmp_path):
    mb.kata_release(tmp_path / "m", V, digest=False)
    with pytest.raises(ArtifactError, match="no sha256 digest for .* from any source"):
        resolve(str(tmp_path / "m"))


def test_a_missing_release_is_named(tmp_path):
    (tmp_path / "m").mkdir()
    with pytest.raises(ArtifactError, match=f"no Kata {V} tarball for amd64"):
        resolve(str(tmp_path / "m"))


def test_a_plain_http_mirror_alone_cannot_vouch(tmp_path):
    tarball = mb.kata_release(tmp_path / "m", V)
    with LoopbackServer(tmp_path / "m") as srv:
        with pytest.raises(ArtifactError, match="plain http mirror"):
            resolve(srv.url)
        pin = Digest("sha256", file_digest(tarball, "sha256"))
        rel = resolve(srv.url, pins=Pins("p", {f"kata/{V}/{ASSET}": pin}))
        assert rel.files[0].digest == pin and rel.files[0].location.url == f"{srv.url}/kata/{V}/{ASSET}"


def test_the_release_listing_is_asked_only_when_nothing_else_names_a_digest(tmp_path, monkeypatch):
    """A real https server on loopback serves the mirror and a GitHub-shaped release listing."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(shared_tls().ca))
    tarball = mb.kata_release(tmp_path / "m", V, digest=False)
    hexval = file_digest(tarball, "sha256")
    (tmp_path / "m/listing").mkdir()
    (tmp_path / "m/listing" / V).write_text(json.dumps(
        {"tag_name": V, "assets": [{"name": ASSET, "digest": f"sha256:{hexval}"}]}))
    with LoopbackServer(tmp_path / "m", tls=shared_tls()) as srv:
        template = srv.url + "/listing/{version}"
        assert resolve(srv.url, listing=template).files[0].digest == Digest("sha256", hexval)
        assert len(srv.requests_for(f"/listing/{V}")) == 1
        mb.write_digest(tarball, "sha256")
        resolve(srv.url, listing=template)
        assert len(srv.requests_for(f"/listing/{V}")) == 1  # the mirror's sha256 over https spoke first


# -- staging -------------------------------------------------------------------------------------


def cached(tmp_path: Path, release) -> Cache:
    (tmp_path / "root").mkdir()
    cache = Cache(HostRoot(tmp_path / "root"))
    cache.dir.mkdir(parents=True)
    shutil.copyfile(release.files[0].location.path, cache.path_for(release.files[0].digest))
    return cache


def test_unpack_returns_the_opt_kata_tree(tmp_path):
    rel = (mb.kata_release(tmp_path / "m", V), resolve(str(tmp_path / "m")))[1]
    (tmp_path / "staging").mkdir()
    tree = RT.unpack(rel, cached(tmp_path, rel), tmp_path / "staging", Limits())
    assert tree.name == "kata" and (tree / "bin/containerd-shim-kata-v2").read_bytes().startswith(b"#!/bin/sh")
    assert (tree / "share/defaults/kata-containers/configuration.toml").resolve().name == "configuration-qemu.toml"
    assert RT.release_name(rel, tree) == V


def without_shim() -> list[mb.Member]:
    return [m for m in mb.kata_members() if not m.name.endswith("containerd-shim-kata-v2")]


def test_unpack_and_check_archive_refuse_a_tarball_without_the_shim(tmp_path):
    mb.kata_release(tmp_path / "m", V, members=without_shim())
    rel = resolve(str(tmp_path / "m"))
    with pytest.raises(ArtifactError, match="has no opt/kata/bin/containerd-shim-kata-v2"):
        RT.check_archive(rel, rel.files[0].location.path, Limits())
    (tmp_path / "staging").mkdir()
    with pytest.raises(ArtifactError, match="has no opt/kata/bin/containerd-shim-kata-v2"):
        RT.unpack(rel, cached(tmp_path, rel), tmp_path / "staging", Limits())


def test_a_link_leaving_opt_kata_is_refused(tmp_path):
    members = [*mb.kata_members(), mb.Member("./opt/kata/bin/escape", "symlink", link="../../../etc/shadow")]
    mb.kata_release(tmp_path / "m", V, members=members)
    rel = resolve(str(tmp_path / "m"))
    with pytest.raises(ArtifactError, match="escape' -> '../../../etc/shadow' resolves outside the release"):
        RT.check_archive(rel, rel.files[0].location.path, Limits())
    (tmp_path / "staging").mkdir()
    with pytest.raises(ArtifactError, match="outside"):
        RT.unpack(rel, cached(tmp_path, rel), tmp_path / "staging", Limits())


def test_check_archive_passes_a_good_release(tmp_path):
    mb.kata_release(tmp_path / "m", V)
    rel = resolve(str(tmp_path / "m"))
    assert RT.check_archive(rel, rel.files[0].location.path, Limits()) is None


# -- links, RuntimeClasses, verify ----------------------------------------------------------------


def test_links_go_through_opt_kata_and_the_shim_link_is_ours():
    links = RT.links(f"/opt/nodeagent/kata/{V}")
    assert list(links.items()) == [("/opt/kata", f"/opt/nodeagent/kata/{V}"),
                                   ("/usr/local/bin/containerd-shim-kata-v2", "/opt/kata/bin/containerd-shim-kata-v2")]
    assert RT.owns_link("/usr/local/bin/containerd-shim-kata-v2", "/opt/kata/bin/containerd-shim-kata-v2")
    assert not RT.owns_link("/usr/local/bin/containerd-shim-kata-v2", "/usr/bin/containerd-shim-kata-v2")
    assert not RT.owns_link("/usr/local/bin/other", "/opt/kata/bin/containerd-shim-kata-v2")


def test_runtime_class_carries_the_options():
    (rc,) = RT.runtime_classes(RT.options(Settings(kata_runtimeclass="vm", kata_handler="kata-fc", kata_overhead_memory="1Gi")))
    assert (rc.name, rc.handler, rc.label, rc.memory, rc.cpu) == ("vm", "kata-fc", "kata", "1Gi", "250m")


def test_verify_without_a_containerd_says_why_and_skips_unless_named(tmp_path):
    sock = str(tmp_path / "no-containerd.sock")
    check = RT.verify(VerifyContext(HostRoot(tmp_path), "busybox", lambda: sock), RT.default_options())
    assert check.skipped and not check.ok and check.method == "cri"
    assert check.reason.startswith("cannot ask containerd which handlers it serves")
    assert check.detail == {"handler": "kata", "socket": sock}
    check = RT.verify(VerifyContext(HostRoot(tmp_path), "busybox", lambda: sock, explicit=True), RT.default_options())
    assert not check.skipped and not check.ok
