"""Verified, unpacked releases kept in the cache, so a reinstall never unpacks an archive twice.

Unpacking gVisor's .tar.bz2 again costs ~1.4 s (single-threaded bzip2), a Kata release several
seconds. After a release's archive was verified and unpacked, the staged tree is linked into
<cache>/unpacked/<key>/tree with a manifest of every entry (kind, mode, size, mtime_ns, inode
or link target). A later install of the same archive checks the tree against its manifest
(stat only, no reads) and links it into the new staging dir; any difference (a changed,
added or missing file) drops the kept tree and the archive is unpacked again.

The key holds the archive's digest, the layout and nodeagent's version, so a newer nodeagent
(whose extraction rules may be stricter) never reuses a tree an older one unpacked. One tree
is kept per runtime: the disk it costs is shared with the installed release by hard links.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import structlog

from nodeagent import __version__
from nodeagent.artifacts import place
from nodeagent.journal import Journal
from nodeagent.fsutil import TEMP_PREFIX, atomic_write, fsync_dir

log = structlog.get_logger(__name__)

UNPACKED_DIR = "unpacked"
MANIFEST = "manifest.json"


def manifest_of(tree: Path) -> dict[str, list]:
    """relpath -> [kind, mode, size, mtime_ns, inode] (files) / [kind, mode] (dirs) / [kind, target]."""
    out: dict[str, list] = {}
    for top, dirs, files in os.walk(tree):
        for name in dirs + files:
            path = os.path.join(top, name)
            rel = os.path.relpath(path, tree)
            st = os.lstat(path)
            if os.path.islink(path):
                out[rel] = ["symlink", os.readlink(path)]
            elif name in dirs:
                out[rel] = ["dir", st.st_mode & 0o7777]
            else:
                out[rel] = ["file", st.st_mode & 0o7777, st.st_size, st.st_mtime_ns, st.st_ino]
    return out


class UnpackedCache:
    def __init__(self, cache_dir: Path):
        self.dir = cache_dir / UNPACKED_DIR

    @staticmethod
    def key(runtime: str, layout: str, digest_hex: str) -> str:
        return f"{runtime}-{layout}-{digest_hex[:32]}-{__version__}"

    def restore(self, key: str, dest: Path) -> bool:
        """Link the kept tree for `key` to `dest` if it is exactly as unpacked; else drop it."""
        entry = self.dir / key
        try:
            want = json.loads((entry / MANIFEST).read_text())
        except (OSError, ValueError):
            return False
        if not isinstance(want, dict) or manifest_of(entry / "tree") != want:
            log.warning("kept unpacked release changed since it was verified; unpacking again", key=key)
            shutil.rmtree(entry, ignore_errors=True)
            return False
        place.link_tree(entry / "tree", dest)
        return True

    def keep(self, runtime: str, key: str, tree: Path, journal: Journal) -> None:
        """Keep `tree` (just unpacked from a verified archive) for later installs; best effort.

        Undone with the rest of a failed install, like a new cache entry.
        """
        tmp = None
        try:
            journal.mkdirs(self.dir, mode=0o700)  # nodeagent's cache: root only, whatever the umask
            tmp = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=self.dir))
            place.link_tree(tree, tmp / "tree")
            os.chmod(tmp / "tree", 0o755)  # a release root's mode (staging makes it before its chmod)
            atomic_write(tmp / MANIFEST, json.dumps(manifest_of(tmp / "tree")).encode(), mode=0o600)
            shutil.rmtree(self.dir / key, ignore_errors=True)
            os.rename(tmp, self.dir / key)
            journal.added(self.dir / key)
            fsync_dir(self.dir)
        except OSError as exc:  # a full disk only costs the next install an unpack
            log.warning("could not keep the unpacked release", key=key, error=str(exc))
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            return
        # the previous tree goes only once the install is accepted: a rollback reinstalls its release
        journal.on_commit(lambda: self._drop_others(runtime, key))

    def _drop_others(self, runtime: str, key: str) -> None:
        for name in os.listdir(self.dir):
            if name != key and (name.startswith(f"{runtime}-") or name.startswith(TEMP_PREFIX)):
                shutil.rmtree(self.dir / name, ignore_errors=True)
