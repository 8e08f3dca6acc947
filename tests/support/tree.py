"""Snapshots of a directory tree, to prove a failed command changed nothing."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def snapshot(root: str | os.PathLike) -> dict[str, tuple]:
    """path -> (kind, mode, content-or-target) for every entry under root (symlinks not followed)."""
    root = Path(root)
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            rel = str(full.relative_to(root))
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", 0, os.readlink(full))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode), None)
            elif stat.S_ISREG(st.st_mode):
                out[rel] = ("file", stat.S_IMODE(st.st_mode), full.read_bytes())
            else:
                out[rel] = ("other", st.st_mode, None)
    return out


def diff_snapshots(before: dict, after: dict) -> list[str]:
    changes = []
    for key in sorted(set(before) | set(after)):
        if key not in after:
            changes.append(f"removed {key}")
        elif key not in before:
            changes.append(f"added {key}")
        elif before[key] != after[key]:
            changes.append(f"changed {key}")
    return changes
