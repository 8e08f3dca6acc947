"""The gVisor plug-in (`runtimes.gvisor.RUNTIME`), through its public methods only.

Releases are resolved against real mirror directories built with tests/support/mirror_builder.py
(a local directory and a file:// URL: no network), staged from a real cache directory, and the
release name of a `latest` install is learnt by running Debian's real runsc as nobody.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from nodeagent.artifacts.cache import Cache
from nodeagent.artifacts.digest import Digest, file_digest
from nodeagent.artifacts.download import Fetcher
from nodeagent.artifacts.extract import Limits
from nodeagent.artifacts.pins import NO_PINS, Pins
from nodeagent.errors import ArtifactError, UsageError
from nodeagent.facts import HostFacts, RuntimeVerdict, Virtualization
from nodeagent.host import HostRoot
from nodeagent.runtimes import gvisor
from nodeagent.runtimes.base import ConfigContext, VerifyContext
from nodeagent.settings import Settings
from tests.support import mirror_builder as mb

RT = gvisor.RUNTIME
RUNSC_BYTES = b"#!/bin/sh\necho stand-in runsc\n"
SHIM_BYTES = b"#!/bin/sh\necho stand-in shim\n"


def small_members(prefix: str = "") -> list[mb.Member]:
    return [mb.Member(f"{prefix}runsc", data=RUNSC_BYTES), mb.Member(f"{prefix}containerd-shim-runsc-v1", data=SHIM_BYTES)]


# -- options and handlers -------------------------------------------------------------------------


def test_options_read_the_gvisor_settings():
    opts = RT.options(Settings(gvisor_version="20240729.0", gvisor_handler="runsc-x", gvisor_platform="ptrace",
                               gvisor_runtimeclass="sandboxed", gvisor_overhead_memory="1Gi"))
    assert (opts.version, opts.handler, opts.platform, opts.runtimeclass, opts.overhead_memory) == (
        "20240729.0", "runsc-x", "ptrace", "sandboxed", "1Gi")
    assert RT.version(opts) == "20240729.0"
    assert RT.operator_digest(opts) is None
    assert RT.digest_flag is None and RT.config_roles == ("runsc",)


def test_handler_spec_points_the_shim_at_runsc_toml():
    (spec,) = RT.handler_specs(RT.options(Settings(gvisor_handler="gvisor-x")))
    assert (spec.name, spec.runtime, spec.runtime_type) == ("gvisor-x", "gvisor", "io.containerd.runsc.v1")
    assert spec.table()["options"] == {"TypeUrl": "io.containerd.runsc.v1.options",
                                       "ConfigPath": "/etc/containerd/runsc.toml"}
    with pytest.raises(UsageError):
        RT.handler_specs(RT.options(Settings(gvisor_handler="bad name!")))


def test_handlers_named_recognises_the_table_it_writes_and_nothing_for_a_bad_name():
    specs = RT.handlers_named("anything-valid")
    assert specs[0].table() == RT.handler_specs(RT.options(Settings(gvisor_handler="anything-valid")))[0].table()
    assert {s.table()["runtime_type"] for s in specs} == {"io.containerd.runsc.v1"}
    assert RT.handlers_named("") == [] and RT.handlers_named("a b") == []


# -- runsc.toml ---------------------------------------------------------------------------------


def test_config_files_write_runsc_toml_with_detection_platform_unless_overridden():
    facts = HostFacts(runtimes={"gvisor": RuntimeVerdict(True, platform="kvm")})
    seen = []

    def current(path: str) -> bytes | None:
        seen.append(path)
        return None

    (cf,) = RT.config_files(current, ConfigContext(facts, systemd_cgroup=True), RT.default_options())
    assert seen == ["/etc/containerd/runsc.toml"] and (cf.path, cf.role) == ("/etc/containerd/runsc.toml", "runsc")
    assert b'platform = "kvm"' in cf.new and b'systemd-cgroup = "true"' in cf.new
    (cf,) = RT.config_files(lambda p: None, ConfigContext(facts, False), RT.options(Settings(gvisor_platform="ptrace")))
    assert b'platform = "ptrace"' in cf.new and b"systemd-cgroup =" not in cf.new
    (cf,) = RT.config_files(lambda p: None, ConfigContext(HostFacts(), False), RT.default_options())
    assert b'platform = "systrap"' in cf.new


def test_config_files_keep_the_operators_keys_and_return_identical_bytes_when_nothing_changes():
    existing = b'# mine\n[runsc_config]\n  debug = "true"\n  platform = "systrap"\n  net-raw = "false"\n'
    (cf,) = RT.config_files(lambda p: existing, ConfigContext(HostFacts(), False), RT.default_options())
    assert cf.new == existing
    (cf,) = RT.config_files(lambda p: existing, ConfigContext(HostFacts(), True), RT.default_options())
    assert b'debug = "true"' in cf.new and b"# mine" in cf.new and b'systemd-cgroup = "true"' in cf.new
    (cf,) = RT.config_files(lambda p: existing, ConfigContext(HostFacts(), False), RT.options(Settings(gvisor_net_raw=True)))
    assert b'net-raw = "true"' in cf.new and b'net-raw = "false"' not in cf.new


# -- eligibility ------------------------------------------------------------------------------------


def facts(arch="amd64", kernel="6.1.0-18-amd64", **virt) -> HostFacts:
    return HostFacts(arch=arch, kernel=kernel, virtualization=Virtualization(**virt))


def test_eligible_host_and_platform_choice():
    bare = RT.eligibility(facts(kvm_usable=True, in_vm=False))
    assert bare.eligible and bare.reasons == [] and bare.platform == "kvm"
    nested = RT.eligibility(facts(kvm_usable=True, in_vm=True))
    assert nested.platform == "systrap" and "nested" in nested.platform_reason
    nokvm = RT.eligibility(facts())
    assert nokvm.eligible and nokvm.platform == "systrap" and nokvm.platform_reason == "KVM is not usable"


@pytest.mark.parametrize("kw, says", [
    ({"arch": "s390x"}, "architecture s390x is not supported by gVisor"),
    ({"arch": None}, "architecture unknown"),
    ({"kernel": "4.14.76"}, "kernel 4.14.76 is older than gVisor's minimum 4.14.77"),
    ({"kernel": None}, "kernel release unknown"),
])
def test_ineligible_hosts_say_why(kw, says):
    verdict = RT.eligibility(facts(**kw))
    assert not verdict.eligible and any(says in r for r in verdict.reasons), verdict


def test_minimum_kernel_itself_is_eligible():
    assert RT.eligibility(facts(kernel="4.14.77")).eligible


# -- catalog -------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["latest", "20240729", "20240729.0", "20221219.12"])
def test_check_version_accepts_release_names(version):
    assert RT.check_version(version) == version


@pytest.mark.parametrize("version", ["20240729.0\n", "v20240729", "2024072", "latest/../x", "", "release-20240729.0"])
def test_check_version_refuses_anything_else(version):
    with pytest.raises(ArtifactError, match="invalid gvisor version"):
        RT.check_version(version)


def test_arch_spelling_and_mirror_paths():
    assert RT.upstream_arch("amd64") == "x86_64" and RT.upstream_arch("arm64") == "aarch64"
    with pytest.raises(ArtifactError, match="no build for architecture 'ppc64le'"):
        RT.upstream_arch("ppc64le")
    assert RT.mirror_relpath("latest", "amd64", "runsc") == "gvisor/latest/x86_64/runsc"
    assert RT.pinned_layouts("20240729.0", "arm64") == [
        ["gvisor/20240729.0/aarch64/gvisor.tar.bz2"],
        ["gvisor/20240729.0/aarch64/runsc", "gvisor/20240729.0/aarch64/containerd-shim-runsc-v1"]]
    assert not RT.builtin_digest("20240729.0", "amd64")


# -- resolve against a local mirror ------------------------------------------------------------------


def test_resolve_prefers_the_tarball_and_reads_its_sha512(tmp_path):
    tarball = mb.gvisor_tarball_release(tmp_path / "m", "20240729.0", small_members())
    mb.gvisor_files_release(tmp_path / "m", "20240729.0", runsc=tarball, shim=tarball)  # both layouts present
    for mirror in (str(tmp_path / "m"), (tmp_path / "m").as_uri()):
        rel = RT.resolve(Fetcher(), "20240729.0", "amd64", mirror, None, NO_PINS)
        assert (rel.runtime, rel.version, rel.arch, rel.layout) == ("gvisor", "20240729.0", "amd64", "gvisor-tarball")
        (f,) = rel.files
        assert f.name == "gvisor.tar.bz2" and f.digest == Digest("sha512", file_digest(tarball, "sha512"))
        assert f.location.path == tarball.resolve()
        assert RT.is_archive(rel)


def test_resolve_falls_back_to_the_two_files_of_older_releases(tmp_path):
    d = mb.gvisor_files_release(tmp_path / "m", "20221219.0")
    rel = RT.resolve(Fetcher(), "20221219.0", "amd64", str(tmp_path / "m"), None, NO_PINS)
    assert rel.layout == "gvisor-files" and [f.name for f in rel.files] == ["runsc", "containerd-shim-runsc-v1"]
    assert rel.files[0].digest.hex == file_digest(d / "runsc", "sha512")
    assert not RT.is_archive(rel)


def test_pins_name_the_release_without_reading_the_mirrors_digest_files(tmp_path):
    tarball = mb.gvisor_tarball_release(tmp_path / "m", "latest", small_members())
    tarball.with_name("gvisor.tar.bz2.sha512").write_text("not a digest\n")  # would be refused if read
    pin = Digest("sha512", file_digest(tarball, "sha512"))
    rel = RT.resolve(Fetcher(), "latest", "amd64", str(tmp_path / "m"), None,
                     Pins("p", {"gvisor/latest/x86_64/gvisor.tar.bz2": pin}))
    assert rel.files[0].digest == pin


def test_a_file_without_its_digest_file_is_refused(tmp_path):
    mb.gvisor_tarball_release(tmp_path / "m", "latest", small_members(), digest=False)
    with pytest.raises(ArtifactError, match="has no gvisor.tar.bz2.sha512 digest file"):
        RT.resolve(Fetcher(), "latest", "amd64", str(tmp_path / "m"), None, NO_PINS)


def test_a_missing_release_names_the_layout(tmp_path):
    (tmp_path / "m").mkdir()
    with pytest.raises(ArtifactError, match="no gVisor release 20240729.0 for aarch64") as e:
        RT.resolve(Fetcher(), "20240729.0", "arm64", str(tmp_path / "m"), None, NO_PINS)
    assert "gvisor/<version>/<x86_64|aarch64>/gvisor.tar.bz2" in e.value.hint


def test_without_a_mirror_the_upstream_bucket_is_the_source():
    """Only the location is computed (pins answer): nothing is fetched."""
    hexval = "a" * 128
    rel = RT.resolve(Fetcher(), "20240729.0", "amd64", None, None,
                     Pins("p", {"gvisor/20240729.0/x86_64/gvisor.tar.bz2": Digest("sha512", hexval)}))
    assert rel.files[0].location.url == \
        "https://storage.googleapis.com/gvisor/releases/release/20240729.0/x86_64/gvisor.tar.bz2"


# -- staging ------------------------------------------------------------------------------------


def cached(tmp_path: Path, release) -> Cache:
    """A real cache directory holding the release's files under their digests."""
    (tmp_path / "root").mkdir()
    cache = Cache(HostRoot(tmp_path / "root"))
    cache.dir.mkdir(parents=True)
    for f in release.files:
        shutil.copyfile(f.location.path, cache.path_for(f.digest))
    return cache


def resolved(tmp_path, members, version="20240729.0"):
    mb.gvisor_tarball_release(tmp_path / "m", version, members)
    return RT.resolve(Fetcher(), version, "amd64", str(tmp_path / "m"), None, NO_PINS)


def test_unpack_takes_runsc_with_its_directory_and_the_shim(tmp_path):
    members = [*small_members("bin/"), mb.Member("bin/runsc-gofer", data=b"helper", mode=0o644),
               mb.Member("doc/README", data=b"not installed")]
    rel = resolved(tmp_path, members)
    (tmp_path / "staging").mkdir()
    tree = RT.unpack(rel, cached(tmp_path, rel), tmp_path / "staging", Limits())
    assert sorted(p.name for p in tree.iterdir()) == ["containerd-shim-runsc-v1", "runsc", "runsc-gofer"]
    assert (tree / "runsc").read_bytes() == RUNSC_BYTES and (tree / "runsc").stat().st_mode & 0o777 == 0o755
    assert (tree / "containerd-shim-runsc-v1").stat().st_mode & 0o777 == 0o755


def test_unpack_refuses_an_archive_with_two_shims(tmp_path):
    members = [*small_members("a/"), mb.Member("b/containerd-shim-runsc-v1", data=b"x")]
    rel = resolved(tmp_path, members)
    (tmp_path / "staging").mkdir()
    with pytest.raises(ArtifactError, match="2 files named 'containerd-shim-runsc-v1'"):
        RT.unpack(rel, cached(tmp_path, rel), tmp_path / "staging", Limits())


def test_unpack_of_the_files_layout_copies_both_binaries(tmp_path):
    mb.gvisor_files_release(tmp_path / "m", "20221219.0", runsc=mb.STANDIN_SHIM)
    rel = RT.resolve(Fetcher(), "20221219.0", "amd64", str(tmp_path / "m"), None, NO_PINS)
    (tmp_path / "staging").mkdir()
    tree = RT.unpack(rel, cached(tmp_path, rel), tmp_path / "staging", Limits())
    assert sorted(p.name for p in tree.iterdir()) == ["containerd-shim-runsc-v1", "runsc"]
    assert (tree / "runsc").read_bytes() == mb.STANDIN_SHIM.read_bytes()


def test_check_archive_refuses_a_tarball_without_the_shim(tmp_path):
    rel = resolved(tmp_path, small_members())
    RT.check_archive(rel, rel.files[0].location.path, Limits())  # the good one passes
    bad = mb.build_tar(tmp_path / "bad.tar.bz2", [mb.Member("runsc", data=RUNSC_BYTES)])
    with pytest.raises(ArtifactError, match="containerd-shim-runsc-v1"):
        RT.check_archive(rel, bad, Limits())


def test_release_name_of_latest_asks_the_real_runsc_and_else_uses_the_digest(tmp_path):
    rel = resolved(tmp_path, small_members(), version="latest")
    tree = tmp_path / "tree"
    tree.mkdir()
    shutil.copyfile(mb.REAL_RUNSC, tree / "runsc")
    assert RT.release_name(rel, tree) == "20221219.0"  # Debian bookworm's runsc: "0.0~20221219.0"
    (tree / "runsc").write_bytes(RUNSC_BYTES)  # prints no release
    assert RT.release_name(rel, tree) == "latest-" + rel.files[0].digest.hex[:12]
    pinned = resolved(tmp_path / "v", small_members())
    assert RT.release_name(pinned, tree) == "20240729.0"


# -- links, RuntimeClasses, verify --------------------------------------------------------------------


def test_links_name_the_version_first_and_own_nothing_outside_it():
    links = RT.links("/opt/nodeagent/gvisor/20240729.0")
    assert list(links) == ["/usr/local/bin/runsc", "/usr/local/bin/containerd-shim-runsc-v1"]
    assert links["/usr/local/bin/runsc"] == "/opt/nodeagent/gvisor/20240729.0/runsc"
    assert not RT.owns_link("/usr/local/bin/runsc", "/usr/bin/runsc")


def test_runtime_class_carries_the_options():
    (rc,) = RT.runtime_classes(RT.options(Settings(gvisor_runtimeclass="gv", gvisor_handler="runsc-2",
                                                   gvisor_overhead_memory="1Gi")))
    assert (rc.name, rc.handler, rc.label, rc.memory, rc.cpu) == ("gv", "runsc-2", "gvisor", "1Gi", "100m")


def test_verify_skips_a_host_without_runsc_unless_named(tmp_path):
    host = HostRoot(tmp_path)
    check = RT.verify(VerifyContext(host, None, lambda: "unused"), RT.default_options())
    assert check.skipped and not check.ok and "runsc not found" in check.reason
    check = RT.verify(VerifyContext(host, None, lambda: "unused", explicit=True), RT.default_options())
    assert not check.skipped and not check.ok


def test_verify_runs_a_real_sandbox(tmp_path):
    """Debian's real runsc copied where nodeagent links it; `runsc do uname -r` under gVisor."""
    (tmp_path / "usr/local/bin").mkdir(parents=True)
    shutil.copy2(mb.REAL_RUNSC, tmp_path / "usr/local/bin/runsc")
    check = RT.verify(VerifyContext(HostRoot(tmp_path), None, lambda: "unused", timeout=60), RT.default_options())
    assert check.ok, check.as_dict()
    assert check.sandbox_kernel != check.host_kernel and check.detail["runsc"] == str(tmp_path / "usr/local/bin/runsc")
