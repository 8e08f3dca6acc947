"""The content cache: verified artifacts under <root>/var/lib/nodeagent/cache, named by digest.

A second install downloads nothing; it works with the network down. `releases.json` records
which files (and digests) each runtime/version/arch resolved to, so a pinned release can be
installed from the cache without asking any server.
"""

from __future__ import annotations

import json
import posixpath
from pathlib import Path

import structlog

from nodeagent.artifacts import stamps
from nodeagent.artifacts.digest import Digest, file_digest
from nodeagent.journal import Journal
from nodeagent.fsutil import atomic_write
from nodeagent.host import HostRoot
from nodeagent.state import STATE_DIR

log = structlog.get_logger(__name__)

CACHE_DIR = "/var/lib/nodeagent/cache"
INDEX = "releases.json"


class Cache:
    def __init__(self, host: HostRoot):
        self.host = host
        self.dir = host.path(CACHE_DIR)

    def make_dir(self, journal) -> None:
        """Create the cache 0700 (its parents as nodeagent's state dirs), undone on rollback:
        only root may reach a file between its verification and its use."""
        journal.mkdirs(self.host.path(posixpath.dirname(STATE_DIR)))
        journal.mkdirs(self.dir, mode=0o700)

    def path_for(self, digest: Digest) -> Path:
        return self.dir / digest.hex

    def has(self, digest: Digest) -> bool:
        return self.path_for(digest).is_file()

    def verify(self, digest: Digest, journal: Journal | None = None) -> bool:
        """A cache hit is usable; a corrupt entry is dropped (and fetched again).

        Hashing a 256 MiB entry costs ~0.6 s, so it is re-hashed only when its (size,
        mtime_ns, inode) changed since it was last verified (see stamps.py).
        """
        path = self.path_for(digest)
        if not path.is_file():
            return False
        if stamps.unchanged(self._stamp_path(digest), path):
            return True
        if file_digest(path, digest.algo) == digest.hex:
            self.mark_verified(digest, journal)
            return True
        log.warning("cached artifact is corrupt; dropping it", path=str(path))
        path.unlink(missing_ok=True)
        self._stamp_path(digest).unlink(missing_ok=True)
        return False

    def mark_verified(self, digest: Digest, journal: Journal | None = None) -> None:
        """Record that the entry was just hashed and matched (by the download, or verify()).

        With a journal, a new stamp is undone with the rest of a failed install.
        """
        stamp = self._stamp_path(digest)
        if journal is not None:
            journal.mkdirs(stamp.parent, mode=0o700)  # root only, whatever the umask
            if not stamp.exists():
                journal.added(stamp)
        stamps.record(stamp, self.path_for(digest))

    def _stamp_path(self, digest: Digest) -> Path:
        return self.dir / stamps.STAMP_DIR / digest.hex

    # -- the release index -----------------------------------------------------------------
    def _index_path(self) -> Path:
        return self.dir / INDEX

    def read_index(self) -> dict:
        try:
            data = json.loads(self._index_path().read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def index_bytes(self) -> bytes | None:
        try:
            return self._index_path().read_bytes()
        except OSError:
            return None

    def lookup(self, key: str) -> dict | None:
        entry = self.read_index().get(key)
        return entry if isinstance(entry, dict) else None

    def record(self, key: str, entry: dict) -> None:
        data = self.read_index()
        if data.get(key) == entry:
            return
        data[key] = entry
        atomic_write(self._index_path(), (json.dumps(data, indent=2, sort_keys=True) + "\n").encode(), mode=0o600)
