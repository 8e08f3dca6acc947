"""Snapshots of a directory tree, to prove a failed command changed nothing.

"Nothing" is strict: besides each entry's kind, mode and bytes (or link target), a snapshot
records owner, group, size, mtime and inode, so a file rewritten with the same bytes, replaced
by a copy, chowned or merely touched shows up, and so does a directory whose entries came and
went (its mtime). Compare trees that are *meant* to differ in such metadata (a round trip that
restores the bytes, two roots built apart) with `metadata=False`.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

FIELDS = ("kind", "mode", "uid", "gid", "size", "mtime", "inode", "content")


def _entry(full: Path, metadata: bool) -> tuple:
    st = os.lstat(full)
    if stat.S_ISLNK(st.st_mode):
        kind, mode, content = "link", 0, os.readlink(full)
    elif stat.S_ISDIR(st.st_mode):
        kind, mode, content = "dir", stat.S_IMODE(st.st_mode), None
    elif stat.S_ISREG(st.st_mode):
        kind, mode, content = "file", stat.S_IMODE(st.st_mode), full.read_bytes()
    else:
        kind, mode, content = "other", st.st_mode, st.st_rdev
    if not metadata:
        return kind, mode, content
    size = None if kind == "dir" else st.st_size  # a directory's size is the filesystem's business
    return kind, mode, st.st_uid, st.st_gid, size, st.st_mtime_ns, st.st_ino, content


def snapshot(root: str | os.PathLike, *, metadata: bool = True) -> dict[str, tuple]:
    """path -> (kind, mode, uid, gid, size, mtime, inode, content-or-target) for every entry under
    root (symlinks not followed); with metadata=False only (kind, mode, content-or-target)."""
    root = Path(root)
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            out[str(full.relative_to(root))] = _entry(full, metadata)
    return out


def _what_changed(old: tuple, new: tuple) -> str:
    names = FIELDS if len(old) == len(FIELDS) else ("kind", "mode", "content")
    return ", ".join(n for n, a, b in zip(names, old, new) if a != b)


def diff_snapshots(before: dict, after: dict) -> list[str]:
    """`added P`, `removed P` and `changed P (fields)` for every difference, sorted by path."""
    changes = []
    for key in sorted(set(before) | set(after)):
        if key not in after:
            changes.append(f"removed {key}")
        elif key not in before:
            changes.append(f"added {key}")
        elif before[key] != after[key]:
            changes.append(f"changed {key} ({_what_changed(before[key], after[key])})")
    return changes
