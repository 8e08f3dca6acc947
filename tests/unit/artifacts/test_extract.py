"""Safe extraction: every hostile member kind is refused before anything lands outside the tree."""

from __future__ import annotations

import os
import stat

import pytest

from nodeagent.artifacts import extract
from nodeagent.errors import ArtifactError
from tests.support.hostile_tar import HOSTILE_MEMBERS
from tests.support.mirror_builder import Member, build_tar

GOOD = [
    Member("./", "dir"),
    Member("./bin/", "dir"),
    Member("./bin/runsc", data=b"runsc"),
    Member("./bin/containerd-shim-runsc-v1", data=b"shim"),
    Member("./bin/helper-link", "symlink", link="runsc"),
    Member("./bin/hard", "hardlink", link="bin/runsc"),
]


@pytest.mark.parametrize("compression", ["bz2", "xz", "gz", "zst", ""])
def test_extracts_a_good_archive_in_every_compression(tmp_path, compression):
    tarball = build_tar(tmp_path / "a.tar", GOOD, compression)
    out = tmp_path / "out"
    out.mkdir()
    entries = extract.extract(tarball, out)
    assert {e.name for e in entries} == {"bin", "bin/runsc", "bin/containerd-shim-runsc-v1", "bin/helper-link", "bin/hard"}
    assert (out / "bin/runsc").read_bytes() == b"runsc"
    assert os.readlink(out / "bin/helper-link") == "runsc"
    assert os.stat(out / "bin/hard").st_ino == os.stat(out / "bin/runsc").st_ino
    assert extract.find_unique(entries, "runsc", "a").name == "bin/runsc"

@pytest.mark.parametrize("case", sorted(HOSTILE_MEMBERS))
def test_hostile_member_is_refused_and_nothing_escapes(tmp_path, case):
    members, words = HOSTILE_MEMBERS[case]
    tarball = build_tar(tmp_path / "t.tar.bz2", [Member("ok", data=b"fine"), *members], "bz2")
    with pytest.raises(ArtifactError) as exc:
        extract.scan(tarball)
    assert words in exc.value.message
    assert exc.value.hint
    box = tmp_path / "box"
    out = box / "out"
    out.mkdir(parents=True)
    with pytest.raises(ArtifactError):
        extract.extract(tarball, out)
    # nothing was written beside the extraction dir or at absolute paths
    assert sorted(os.listdir(box)) == ["out"]
    assert not os.path.lexists("/etc/evil")
    for dirpath, dirs, files in os.walk(out):
        for name in files:
            assert not stat.S_IMODE(os.lstat(os.path.join(dirpath, name)).st_mode) & (stat.S_ISUID | stat.S_ISGID)


def test_oversized_member_and_total_are_refused(tmp_path):
    tarball = build_tar(tmp_path / "big.tar.gz", [Member("a", data=b"x" * 5000), Member("b", data=b"y" * 5000)], "gz")
    with pytest.raises(ArtifactError, match="larger than 4096"):
        extract.scan(tarball, extract.Limits(max_member=4096))
    with pytest.raises(ArtifactError, match="exceed 8000"):
        extract.scan(tarball, extract.Limits(max_total=8000))
    with pytest.raises(ArtifactError, match="more than 1 members"):
        extract.scan(tarball, extract.Limits(max_members=1))


@pytest.mark.parametrize("payload", [b"this is not a tarball at all\n" * 50, b"BZh91AY&SY" + b"\0" * 100, b"\x28\xb5\x2f\xfd" + b"junk" * 10])
def test_non_tarball_and_corrupt_streams_are_refused(tmp_path, payload):
    path = tmp_path / "x.tar.bz2"
    path.write_bytes(payload)
    with pytest.raises(ArtifactError) as exc:
        extract.scan(path)
    assert "tar archive" in exc.value.message or "corrupt" in exc.value.message


def test_truncated_archive_is_refused(tmp_path):
    tarball = build_tar(tmp_path / "t.tar.xz", [Member("a", data=os.urandom(200_000))], "xz")
    tarball.write_bytes(tarball.read_bytes()[:-5000])
    with pytest.raises(ArtifactError, match="corrupt or truncated"):
        extract.scan(tarball)


def test_find_by_name_refuses_ambiguity_and_absence(tmp_path):
    entries = extract.scan(build_tar(tmp_path / "t.tar", [Member("a/runsc", data=b"1"), Member("b/runsc", data=b"2")], ""))
    with pytest.raises(ArtifactError, match="2 files named 'runsc'"):
        extract.find_unique(entries, "runsc", "t.tar")
    with pytest.raises(ArtifactError, match="no file named 'containerd-shim-runsc-v1'"):
        extract.find_unique(entries, "containerd-shim-runsc-v1", "t.tar")


def test_find_tree_locates_opt_kata_anywhere_and_refuses_two(tmp_path):
    one = extract.scan(build_tar(tmp_path / "1.tar", [Member("./opt/kata/bin/x", data=b"1")], ""))
    assert extract.find_tree(one, ("opt", "kata"), "1.tar") == "opt/kata"
    deep = extract.scan(build_tar(tmp_path / "2.tar", [Member("pkg/opt/kata/bin/x", data=b"1")], ""))
    assert extract.find_tree(deep, ("opt", "kata"), "2.tar") == "pkg/opt/kata"
    two = extract.scan(build_tar(tmp_path / "3.tar", [Member("opt/kata/x", data=b"1"), Member("b/opt/kata/y", data=b"2")], ""))
    with pytest.raises(ArtifactError, match="several opt/kata"):
        extract.find_tree(two, ("opt", "kata"), "3.tar")


def test_absolute_links_into_the_trees_own_host_location_are_allowed_only_there(tmp_path):
    """Kata's tree lives at /opt/kata on the node (our symlink to the version dir)."""
    ok = build_tar(tmp_path / "k.tar", [Member("opt/kata/bin/x", data=b"1"), Member("opt/kata/bin/y", "symlink", link="/opt/kata/bin/x")], "")
    assert [e.link for e in extract.scan(ok, host_trees=("/opt/kata",)) if e.kind == "symlink"] == ["/opt/kata/bin/x"]
    with pytest.raises(ArtifactError, match="points outside"):
        extract.scan(ok)  # without the allowance: refused like any absolute link
    for bad in ("/opt/kata/../../etc/shadow", "/opt/katax/bin", "/etc/passwd"):
        tarball = build_tar(tmp_path / "b.tar", [Member("opt/kata/bin/z", "symlink", link=bad)], "")
        with pytest.raises(ArtifactError, match="points outside"):
            extract.scan(tarball, host_trees=("/opt/kata",))


@pytest.mark.parametrize("compression", ["bz2", "xz", "zst"])
def test_every_reader_hands_out_bounded_blocks(tmp_path, compression):
    """300 MiB of zeros after the tar's end (behind incompressible filler, so they fall into one of
    tar's 10 KiB reads): the scan must decompress only what tar asks for."""
    import subprocess
    import sys

    from tests.support import peak_rss
    from tests.support.mirror_builder import build_bomb

    members = [Member("a", data=b"x"), Member("filler", data=os.urandom(64 << 10))]
    tarball = build_bomb(tmp_path / f"b.tar.{compression}", members, compression, trailing_zeros=300 << 20)
    out = tmp_path / "peak"
    code = "import sys; from nodeagent.artifacts import extract; extract.scan(sys.argv[1])"
    subprocess.run([sys.executable, peak_rss.__file__, str(out), sys.executable, "-c", code, str(tarball)],
                   check=True, timeout=120)
    peak = int(out.read_text())
    assert peak < 100 << 20, f"{compression}: peak RSS {peak >> 20} MiB"
