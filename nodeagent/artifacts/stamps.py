"""Stamps: what a file looked like when we last verified it, so it is hashed again only if it changed.

A stamp is the file's (size, mtime_ns, inode). Any write through the file system changes the
mtime, and replacing the file changes the inode, so a cache entry that was modified (even to
the same size) or swapped is hashed again before use. ctime is left out on purpose: linking
the entry into a release dir (and removing that dir) changes it without touching a byte. What a
stamp cannot catch is someone with root rewriting the file in place and then setting its mtime
back; such a user can replace the installed binaries directly anyway.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from nodeagent.fsutil import atomic_write, make_dirs

STAMP_DIR = ".verified"


def identity(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def record(stamp: Path, path: Path) -> None:
    """Remember `path` as it is now (call right after it was hashed and matched)."""
    make_dirs(stamp.parent, 0o700)  # nodeagent's cache: root only, whatever the umask
    atomic_write(stamp, json.dumps(identity(os.stat(path))).encode(), mode=0o600, dir_mode=0o700)


def unchanged(stamp: Path, path: Path) -> bool:
    """True if `path` is exactly as it was when stamped; False if unstamped or changed."""
    try:
        want = json.loads(stamp.read_text())
        return want == identity(os.stat(path))
    except (OSError, ValueError):
        return False
