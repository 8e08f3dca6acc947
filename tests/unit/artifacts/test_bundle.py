"""`artifacts.bundle.write_bundle`: an offline mirror written from a source mirror, verified, with
its pins beside it; a bad run leaves the target as it was. Sources are real mirror directories
built with tests/support/mirror_builder.py (small stand-in binaries: the tarballs' contents are
not run here). The CLI over HTTPS: tests/integration/test_artifacts_cli.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nodeagent.artifacts import pins
from nodeagent.artifacts.bundle import check_archive, check_private, write_bundle
from nodeagent.artifacts.digest import file_digest
from nodeagent.errors import ArtifactError, HostError
from nodeagent.settings import Settings
from tests.support import mirror_builder as mb
from tests.support.tree import diff_snapshots, snapshot

GV = "20240729.0"
KATA = "3.11.0"
GV_FILES = [f"gvisor/{GV}/x86_64/gvisor.tar.bz2", f"gvisor/{GV}/x86_64/gvisor.tar.bz2.sha512"]
KATA_FILES = [f"kata/{KATA}/kata-static-{KATA}-amd64.tar.zst", f"kata/{KATA}/kata-static-{KATA}-amd64.tar.zst.sha256"]


def gvisor_members() -> list[mb.Member]:
    return [mb.Member("runsc", data=b"#!/bin/sh\n"), mb.Member("containerd-shim-runsc-v1", data=b"#!/bin/sh\n")]


@pytest.fixture
def source(tmp_path) -> Path:
    src = tmp_path / "src"
    mb.gvisor_tarball_release(src, GV, gvisor_members())
    mb.kata_release(src, KATA)
    return src


def settings(source: Path, **kw) -> Settings:
    return Settings(mirror=str(source), gvisor_version=GV, kata_version=KATA, kata_release_listing="", **kw)


def bundle(source, target, runtimes=("gvisor", "kata"), **kw):
    return write_bundle(settings(source, **kw), list(runtimes), ["amd64"], str(target), progress=None)


def files_under(d: Path) -> list[str]:
    return sorted(p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file())


def test_a_bundle_is_a_mirror_with_its_pins_beside_it(tmp_path, source):
    target = tmp_path / "out"
    result = bundle(source, target)
    assert files_under(target) == sorted(GV_FILES + KATA_FILES)
    for rel in GV_FILES + KATA_FILES:
        assert (target / rel).read_bytes() == (source / rel).read_bytes(), rel
    assert [f["action"] for f in result.files] == ["download"] * 4
    assert result.pins == str(tmp_path / "out.pins")
    pinned = pins.parse((tmp_path / "out.pins").read_text(), "p")
    assert pinned.get(GV_FILES[0]).hex == file_digest(source / GV_FILES[0], "sha512")
    assert pinned.get(KATA_FILES[0]).hex == file_digest(source / KATA_FILES[0], "sha256")
    assert (target / GV_FILES[0]).stat().st_mode & 0o777 == 0o644  # a mirror others serve
    assert not list(target.rglob("*.nodeagent-new"))


def test_a_second_run_finds_everything_present(tmp_path, source):
    target = tmp_path / "out"
    bundle(source, target)
    before = snapshot(target)
    again = bundle(source, target)
    assert {f["action"] for f in again.files} == {"present"}
    assert again.files[0]["size"] == (source / GV_FILES[0]).stat().st_size
    assert diff_snapshots(before, snapshot(target)) == []


def test_a_changed_file_in_the_bundle_is_fetched_again(tmp_path, source):
    target = tmp_path / "out"
    bundle(source, target, runtimes=("gvisor",))
    (target / GV_FILES[0]).write_bytes(b"tampered")
    again = bundle(source, target, runtimes=("gvisor",))
    assert again.files[0]["action"] == "download"
    assert (target / GV_FILES[0]).read_bytes() == (source / GV_FILES[0]).read_bytes()


def test_pins_of_an_earlier_run_are_kept(tmp_path, source):
    target = tmp_path / "out"
    bundle(source, target, runtimes=("gvisor",))
    bundle(source, target, runtimes=("kata",))
    pinned = pins.parse((tmp_path / "out.pins").read_text(), "p")
    assert set(pinned.digests) == {GV_FILES[0], KATA_FILES[0]}


def test_an_archive_an_install_would_refuse_leaves_the_target_as_it_was(tmp_path, source):
    target = tmp_path / "out"
    bundle(source, target, runtimes=("gvisor",))
    mb.kata_release(source, KATA, members=[m for m in mb.kata_members() if "containerd-shim" not in m.name])
    before, pins_before = snapshot(target), (tmp_path / "out.pins").read_bytes()
    with pytest.raises(ArtifactError, match="has no opt/kata/bin/containerd-shim-kata-v2"):
        bundle(source, target)
    assert diff_snapshots(before, snapshot(target)) == []
    assert (tmp_path / "out.pins").read_bytes() == pins_before


def test_a_file_that_does_not_match_its_digest_is_refused_and_nothing_is_made(tmp_path, source):
    (source / GV_FILES[1]).write_text(f"{'0' * 128}  gvisor.tar.bz2\n")
    target = tmp_path / "new"
    with pytest.raises(ArtifactError):
        bundle(source, target)
    assert not target.exists() and not (tmp_path / "new.pins").exists()


def test_the_target_must_be_a_private_directory(tmp_path, source):
    (tmp_path / "file").write_text("")
    with pytest.raises(HostError, match="exists and is not a directory"):
        bundle(source, tmp_path / "file")
    shared = tmp_path / "shared"
    (shared / "gvisor").mkdir(parents=True)
    os.chmod(shared / "gvisor", 0o777)
    with pytest.raises(HostError, match="gvisor is writable by others \\(mode 0777\\)") as e:
        check_private(shared)
    assert "install -d -m 0755" in e.value.hint
    os.chmod(shared / "gvisor", 0o775)
    with pytest.raises(HostError, match="writable by its group"):
        bundle(source, shared)
    os.chmod(shared / "gvisor", 0o755)
    check_private(shared)
    check_private(tmp_path / "does-not-exist-yet")


def test_a_plain_http_release_listing_is_refused_even_when_unused(tmp_path, source):
    with pytest.raises(ArtifactError, match="is not an https URL"):
        write_bundle(Settings(mirror=str(source), kata_release_listing="http://api.example/{version}"),
                     ["gvisor"], ["amd64"], str(tmp_path / "out"), progress=None)
    assert not (tmp_path / "out").exists()


def test_check_archive_asks_the_runtimes_plugin(tmp_path, source):
    from nodeagent.artifacts.download import Fetcher
    from nodeagent.artifacts.pins import NO_PINS
    from nodeagent.runtimes import get

    release = get("gvisor").resolve(Fetcher(), GV, "amd64", str(source), None, NO_PINS)
    check_archive(release, source / GV_FILES[0])
    bad = mb.build_tar(tmp_path / "bad.tar.bz2", [mb.Member("runsc", data=b"x")])
    with pytest.raises(ArtifactError, match="containerd-shim-runsc-v1"):
        check_archive(release, bad)
