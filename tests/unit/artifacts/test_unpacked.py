"""`artifacts.unpacked`: a verified, unpacked release kept in the cache and reused only while it
is exactly as unpacked. Real trees on disk, real hard links, a real undo Journal.
A reinstall reusing it end to end: tests/integration/test_artifacts_install.py.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from nodeagent import __version__
from nodeagent.journal import Journal
from nodeagent.artifacts.unpacked import MANIFEST, UnpackedCache, manifest_of


def release_tree(d: Path) -> Path:
    """A small tree like an unpacked Kata release: dirs, an executable, a config, a relative link."""
    (d / "bin").mkdir(parents=True)
    (d / "share/defaults").mkdir(parents=True)
    (d / "bin/containerd-shim-kata-v2").write_bytes(b"#!/bin/sh\n")
    os.chmod(d / "bin/containerd-shim-kata-v2", 0o755)
    (d / "share/defaults/configuration-qemu.toml").write_text("# conf\n")
    os.chmod(d / "share/defaults/configuration-qemu.toml", 0o644)
    (d / "share/defaults/configuration.toml").symlink_to("configuration-qemu.toml")
    return d


@pytest.fixture
def kept(tmp_path):
    cache = UnpackedCache(tmp_path / "cache")
    key = cache.key("kata", "kata-tarball", "ab" * 32)
    with Journal() as txn:
        cache.keep("kata", key, release_tree(tmp_path / "staged"), txn)
    return cache, key


def test_the_key_names_runtime_layout_digest_and_our_version():
    key = UnpackedCache.key("gvisor", "gvisor-tarball", "0123456789abcdef" * 4)
    assert key == f"gvisor-gvisor-tarball-{'0123456789abcdef' * 2}-{__version__}"


def test_manifest_of_records_kind_mode_size_and_identity(tmp_path):
    tree = release_tree(tmp_path / "t")
    m = manifest_of(tree)
    assert m["bin"] == ["dir", stat.S_IMODE(os.stat(tree / "bin").st_mode)]
    st = os.lstat(tree / "bin/containerd-shim-kata-v2")
    assert m["bin/containerd-shim-kata-v2"] == ["file", 0o755, 10, st.st_mtime_ns, st.st_ino]
    assert m["share/defaults/configuration.toml"] == ["symlink", "configuration-qemu.toml"]
    assert set(m) == {"bin", "share", "share/defaults", "bin/containerd-shim-kata-v2",
                      "share/defaults/configuration-qemu.toml", "share/defaults/configuration.toml"}


def test_keep_links_the_tree_into_the_cache_root_only(tmp_path, kept):
    cache, key = kept
    entry = cache.dir / key
    assert stat.S_IMODE(os.stat(cache.dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(entry / MANIFEST).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(entry / "tree").st_mode) == 0o755
    assert json.loads((entry / MANIFEST).read_text()) == manifest_of(entry / "tree")
    # hard links: the kept tree costs no second copy of the release
    assert os.stat(entry / "tree/bin/containerd-shim-kata-v2").st_ino == \
        os.stat(tmp_path / "staged/bin/containerd-shim-kata-v2").st_ino


def test_restore_links_an_unchanged_tree(tmp_path, kept):
    cache, key = kept
    (tmp_path / "staging2").mkdir()
    (tmp_path / "staging3").mkdir()
    assert cache.restore(key, tmp_path / "staging2/tree")
    restored = tmp_path / "staging2/tree"
    assert (restored / "bin/containerd-shim-kata-v2").read_bytes() == b"#!/bin/sh\n"
    assert os.readlink(restored / "share/defaults/configuration.toml") == "configuration-qemu.toml"
    assert cache.restore(key, tmp_path / "staging3/tree")  # reusable again and again


@pytest.mark.parametrize("change", ["modified", "added", "removed", "chmod", "relinked"])
def test_any_change_drops_the_kept_tree(tmp_path, kept, change):
    cache, key = kept
    tree = cache.dir / key / "tree"
    if change == "modified":
        with open(tree / "share/defaults/configuration-qemu.toml", "a") as fh:
            fh.write("# planted\n")
    elif change == "added":
        (tree / "bin/extra").write_text("x")
    elif change == "removed":
        (tree / "share/defaults/configuration-qemu.toml").unlink()
    elif change == "chmod":
        os.chmod(tree / "bin/containerd-shim-kata-v2", 0o4755)
    else:
        (tree / "share/defaults/configuration.toml").unlink()
        (tree / "share/defaults/configuration.toml").symlink_to("/etc/shadow")
    assert not cache.restore(key, tmp_path / "dest")
    assert not (cache.dir / key).exists() and not (tmp_path / "dest").exists()


def test_a_replaced_file_with_the_same_bytes_and_times_is_noticed(tmp_path, kept):
    """Same content, size and mtime, but another inode: not the file that was verified."""
    cache, key = kept
    f = cache.dir / key / "tree/bin/containerd-shim-kata-v2"
    st = os.stat(f)
    keep_inode = tmp_path / "hold"  # keep the old inode alive so the number is not reused
    os.link(f, keep_inode)
    f.unlink()
    f.write_bytes(b"#!/bin/sh\n")
    os.chmod(f, 0o755)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert not cache.restore(key, tmp_path / "dest")


def test_nothing_kept_or_a_broken_manifest_is_a_miss(tmp_path, kept):
    cache, key = kept
    assert not cache.restore("kata-other-key", tmp_path / "d1")
    (cache.dir / key / MANIFEST).write_text("{not json")
    assert not cache.restore(key, tmp_path / "d2")


def test_one_tree_is_kept_per_runtime(tmp_path, kept):
    cache, first = kept
    other = cache.key("gvisor", "gvisor-tarball", "cd" * 32)
    newer = cache.key("kata", "kata-tarball", "ef" * 32)
    with Journal() as txn:
        cache.keep("gvisor", other, release_tree(tmp_path / "g"), txn)
        cache.keep("kata", newer, release_tree(tmp_path / "k2"), txn)
    assert sorted(os.listdir(cache.dir)) == sorted([other, newer])


def test_a_failed_install_undoes_what_was_kept(tmp_path):
    cache = UnpackedCache(tmp_path / "cache")
    key = cache.key("kata", "kata-tarball", "ab" * 32)
    with pytest.raises(RuntimeError):
        with Journal() as txn:
            cache.keep("kata", key, release_tree(tmp_path / "staged"), txn)
            assert (cache.dir / key).exists()
            raise RuntimeError("the install failed later")
    assert not (tmp_path / "cache").exists()


def test_keeping_is_best_effort(tmp_path):
    """A tree that cannot be linked (here: a missing one) costs only the next unpack."""
    cache = UnpackedCache(tmp_path / "cache")
    with Journal() as txn:
        cache.keep("kata", "kata-x", tmp_path / "missing", txn)
    assert os.listdir(cache.dir) == []


def test_the_previous_tree_goes_only_when_the_install_is_kept(tmp_path, kept):
    """A rolled-back upgrade reinstalls the previous release: its kept tree must still be there."""
    cache, first = kept
    newer = cache.key("kata", "kata-tarball", "ef" * 32)
    with pytest.raises(RuntimeError):
        with Journal() as journal:
            cache.keep("kata", newer, release_tree(tmp_path / "k2"), journal)
            assert sorted(os.listdir(cache.dir)) == sorted([first, newer])
            raise RuntimeError("the restart failed: rolled back")
    assert os.listdir(cache.dir) == [first]
    assert cache.restore(first, tmp_path / "again")
