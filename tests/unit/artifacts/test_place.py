"""place.py: a hard link on one file system, an in-kernel copy across two (/dev/shm is a tmpfs here)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from nodeagent.artifacts import place


def test_same_file_system_is_a_link(tmp_path):
    src = tmp_path / "a"
    src.write_bytes(b"x" * 5000)
    assert place.link_or_copy(src, tmp_path / "b") == "link"
    assert os.stat(tmp_path / "b").st_ino == os.stat(src).st_ino


def test_another_file_system_is_a_kernel_copy_with_the_mode(tmp_path):
    if os.stat("/dev/shm").st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("/dev/shm is on the same file system as the temp dir here; no second fs to copy to")
    src = tmp_path / "a"
    src.write_bytes(os.urandom(3 << 20))
    os.chmod(src, 0o751)
    with tempfile.TemporaryDirectory(dir="/dev/shm") as other:
        dest = Path(other) / "b"
        assert place.link_or_copy(src, dest) == "copy"
        assert dest.read_bytes() == src.read_bytes()
        assert os.stat(dest).st_mode & 0o777 == 0o751


def test_link_tree_keeps_dirs_symlinks_and_modes_whatever_the_umask(tmp_path):
    src = tmp_path / "src"
    (src / "bin").mkdir(parents=True)
    (src / "share").mkdir()
    os.chmod(src / "share", 0o750)
    (src / "bin/shim").write_bytes(b"#!/bin/sh\n")
    (src / "cfg").symlink_to("bin/shim")
    (src / "dirlink").symlink_to("share")
    old = os.umask(0o077)
    try:
        assert place.link_tree(src, tmp_path / "dest") == 1
    finally:
        os.umask(old)
    dest = tmp_path / "dest"
    assert os.readlink(dest / "cfg") == "bin/shim" and os.readlink(dest / "dirlink") == "share"
    assert os.stat(dest / "share").st_mode & 0o777 == 0o750
    assert os.stat(dest / "bin").st_mode & 0o777 == os.stat(src / "bin").st_mode & 0o777
    assert os.stat(dest / "bin/shim").st_ino == os.stat(src / "bin/shim").st_ino


def test_copy_then_hash_hashes_what_it_stored_and_reports_progress(tmp_path):
    import hashlib

    src = tmp_path / "mirror-file"
    data = os.urandom((2 << 20) + 7)
    src.write_bytes(data)
    seen = []
    hasher = hashlib.sha512()
    with open(src, "rb") as fh, open(tmp_path / "copy", "wb") as out:
        size = place.copy_then_hash(fh, out, tmp_path / "copy", hasher, lambda done, total: seen.append((done, total)))
    assert size == len(data) and (tmp_path / "copy").read_bytes() == data
    assert hasher.hexdigest() == hashlib.sha512(data).hexdigest()
    assert seen[-1] == (len(data), len(data))
