"""artifacts.stamps: a verified cache file is hashed again whenever it may have changed: a write
(even of the same size), a replacement, a missing or unreadable stamp."""

from __future__ import annotations

import os
import stat

from nodeagent.artifacts import stamps


def test_a_stamped_file_is_unchanged_until_written_or_replaced(tmp_path):
    entry = tmp_path / "cache/gvisor.tar.bz2"
    entry.parent.mkdir()
    entry.write_bytes(b"verified bytes")
    stamp = tmp_path / "cache" / stamps.STAMP_DIR / "gvisor.tar.bz2"
    assert not stamps.unchanged(stamp, entry)  # never stamped
    stamps.record(stamp, entry)
    assert stamps.unchanged(stamp, entry)
    assert stat.S_IMODE(os.stat(stamp).st_mode) == 0o600 and stat.S_IMODE(os.stat(stamp.parent).st_mode) == 0o700

    st = os.stat(entry)
    entry.write_bytes(b"swapped bytes!")  # the same size, new content
    os.utime(entry, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert not stamps.unchanged(stamp, entry)

    stamps.record(stamp, entry)
    replacement = tmp_path / "cache/new"
    replacement.write_bytes(b"swapped bytes!")
    os.utime(replacement, ns=(os.stat(entry).st_atime_ns, os.stat(entry).st_mtime_ns))  # same size and mtime
    os.replace(replacement, entry)  # only the inode tells
    assert not stamps.unchanged(stamp, entry)


def test_linking_the_entry_elsewhere_keeps_it_unchanged(tmp_path):
    """ctime is not in the stamp: hard-linking a cache entry into a release dir changes only that."""
    entry = tmp_path / "runsc"
    entry.write_bytes(b"x")
    stamp = tmp_path / stamps.STAMP_DIR / "runsc"
    stamps.record(stamp, entry)
    os.link(entry, tmp_path / "release-runsc")
    os.unlink(tmp_path / "release-runsc")
    assert stamps.unchanged(stamp, entry)


def test_a_corrupt_stamp_or_a_missing_file_means_hash_again(tmp_path):
    entry = tmp_path / "f"
    entry.write_bytes(b"x")
    stamp = tmp_path / "stamp"
    stamp.write_text("{not json")
    assert not stamps.unchanged(stamp, entry)
    stamps.record(stamp, entry)
    entry.unlink()
    assert not stamps.unchanged(stamp, entry)
