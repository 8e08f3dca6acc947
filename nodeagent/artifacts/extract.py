"""Safe extraction of release tarballs (.tar.bz2/.xz/.gz via the stdlib, .tar.zst via zstandard).

Every member is checked before a byte of it is written: no absolute paths, no `..`, no
symlink or hard link leaving the tree, no path through a symlink, no devices or fifos, no
setuid/setgid bits, no duplicate names, and caps on member size, total size and count.
Archives are read as a stream in bounded memory: every decompressor hands out at most what
tar asks for, and xz/zstd refuse a stream whose dictionary/window would need more than
`Limits` allows (a 244 KB .tar.xz can declare a 1.5 GiB dictionary). Files are written
without following symlinks, owned by us, with fixed modes (0755 or 0644, never the umask).
"""

from __future__ import annotations

import io
import os
import posixpath
import stat
import tarfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from nodeagent.artifacts import decompress
from nodeagent.artifacts.digest import Digest
from nodeagent.artifacts.prefetch import Prefetch
from nodeagent.errors import ArtifactError
from nodeagent.fsutil import make_dirs

CHUNK = 1 << 20


@dataclass(frozen=True)
class Limits:
    """Caps that stop a decompression bomb; the real artifacts are far below them.

    Decompression memory: `xz -9e` needs 65 MiB to decompress and xz's default preset 9 MiB;
    zstd up to `--ultra -22` uses a 128 MiB window (level 19: 8 MiB), which is also libzstd's
    own default cap. 128 MiB keeps the agent under the DaemonSet's 256Mi memory limit.
    """

    max_member: int = 1 << 30
    max_total: int = 4 << 30
    max_members: int = 100_000
    max_xz_memory: int = 128 << 20
    max_zstd_window: int = 128 << 20


@dataclass(frozen=True)
class Entry:
    """A checked member: its normalized name and kind ("file", "dir", "symlink", "hardlink")."""

    name: str
    kind: str
    size: int = 0
    mode: int = 0o644
    link: str | None = None


def _refuse(archive: str, what: str) -> ArtifactError:
    return ArtifactError(
        f"refusing {archive}: {what}",
        "the archive is unsafe or not a release of this runtime; use the upstream artifact or rebuild the bundle",
    )


@contextmanager
def open_stream(path: Path, label: str | None = None, limits: "Limits" = Limits(),
                digest: Digest | None = None) -> Iterator[tarfile.TarFile]:
    """A tarfile reading `path` as a stream, whatever its compression.

    With `digest`, every byte read from the file is hashed on the way and the whole file
    must match when the tar stream ends: what was extracted is exactly what was verified,
    even if the file changed after an earlier check (the file is opened once). The bounded
    decompressor runs ahead in a thread (Prefetch) while tarfile writes files.
    """
    label = label or path.name
    with open(path, "rb") as fh:
        hashed = _HashingReader(fh, digest)
        stream = decompress.open_decompressed(hashed, label, decompress.Bounds(limits.max_xz_memory, limits.max_zstd_window))
        ahead = Prefetch(stream)
        try:
            try:
                # bufsize: tarfile reads its stream in 10 KiB records by default and joins them per read
                tf = tarfile.open(fileobj=ahead, mode="r|", bufsize=CHUNK)
            except tarfile.ReadError as exc:
                raise ArtifactError(
                    f"{label} is not a readable tar archive ({exc})",
                    "the download is not a release tarball; check the mirror serves the right file",
                ) from None
            with tf:
                yield tf
        finally:
            ahead.close()  # the thread stops before the rest of the file is hashed below
        hashed.finish(label)


class _HashingReader(io.RawIOBase):
    """Hashes what the decompressor reads, so extraction uses only verified bytes."""

    def __init__(self, fh, digest: Digest | None):
        self._fh = fh
        self._digest = digest
        self._hasher = digest.hasher() if digest else None

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        data = self._fh.read(len(buf))
        if self._hasher is not None:
            self._hasher.update(data)
        buf[: len(data)] = data
        return len(data)

    def finish(self, label: str) -> None:
        """Hash the rest of the file (past the tar's end) and compare with the digest."""
        if self._hasher is None:
            return
        for block in iter(lambda: self._fh.read(CHUNK), b""):
            self._hasher.update(block)
        if self._hasher.hexdigest() != self._digest.hex:
            raise ArtifactError(
                f"{label} changed after it was verified (its {self._digest.algo} no longer matches)",
                "something modified nodeagent's download cache; check who can write it, then run again",
            )


class _Checker:
    """Validates members in archive order, remembering what came before."""

    def __init__(self, archive: str, limits: Limits, host_trees: tuple[str, ...] = ()):
        self.archive = archive
        self.limits = limits
        self.host_trees = host_trees
        self.seen: dict[str, Entry] = {}
        self.total = 0

    def check(self, m: tarfile.TarInfo) -> Entry | None:
        raw = m.name
        if raw.startswith("/"):
            raise _refuse(self.archive, f"member {raw!r} has an absolute path")
        parts = [p for p in raw.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise _refuse(self.archive, f"member {raw!r} points outside the archive (..)")
        if not parts:
            return None  # the archive's own "./" entry
        name = "/".join(parts)
        if len(self.seen) >= self.limits.max_members:
            raise _refuse(self.archive, f"more than {self.limits.max_members} members")
        if name in self.seen:
            raise _refuse(self.archive, f"member {name!r} appears twice")
        for i in range(1, len(parts)):
            parent = self.seen.get("/".join(parts[:i]))
            if parent is not None and parent.kind != "dir":
                raise _refuse(self.archive, f"member {name!r} lies beneath the non-directory {parent.name!r}")
        if m.mode & (stat.S_ISUID | stat.S_ISGID):
            raise _refuse(self.archive, f"member {name!r} is setuid/setgid")
        if m.isdir():
            entry = Entry(name, "dir", mode=m.mode & 0o755)
        elif m.isreg():
            if m.size > self.limits.max_member:
                raise _refuse(self.archive, f"member {name!r} is larger than {self.limits.max_member} bytes")
            self.total += m.size
            if self.total > self.limits.max_total:
                raise _refuse(self.archive, f"contents exceed {self.limits.max_total} bytes")
            entry = Entry(name, "file", size=m.size, mode=m.mode & 0o755)
        elif m.issym():
            target = m.linkname
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
            if target.startswith("/") and self._within_host_tree(target):
                resolved = target.lstrip("/")
            elif target.startswith("/"):
                resolved = "../"
            if resolved == ".." or resolved.startswith("../"):
                raise _refuse(self.archive, f"symlink {name!r} -> {target!r} points outside the archive")
            entry = Entry(name, "symlink", link=target)
        elif m.islnk():
            target = "/".join(p for p in m.linkname.split("/") if p not in ("", "."))
            if m.linkname.startswith("/") or ".." in target.split("/"):
                raise _refuse(self.archive, f"hard link {name!r} -> {m.linkname!r} points outside the archive")
            prior = self.seen.get(target)
            if prior is None or prior.kind != "file":
                raise _refuse(self.archive, f"hard link {name!r} -> {m.linkname!r} names no earlier file in the archive")
            entry = Entry(name, "hardlink", size=prior.size, mode=prior.mode, link=target)
        elif m.ischr() or m.isblk():
            raise _refuse(self.archive, f"member {name!r} is a device node")
        elif m.isfifo():
            raise _refuse(self.archive, f"member {name!r} is a fifo")
        else:
            raise _refuse(self.archive, f"member {name!r} has an unsupported type")
        self.seen[name] = entry
        return entry

    def _within_host_tree(self, target: str) -> bool:
        """An absolute link into the tree's own host location (e.g. /opt/kata/...) stays inside:
        on the node /opt/kata is our symlink to this very version directory."""
        norm = posixpath.normpath(target)
        return any(norm == t or norm.startswith(t + "/") for t in self.host_trees)


def _members(path: Path, limits: Limits, write_to: Path | None, label: str | None,
             host_trees: tuple[str, ...] = (), digest: Digest | None = None) -> list[Entry]:
    label = label or path.name
    checker = _Checker(label, limits, host_trees)
    try:
        with open_stream(path, label, limits, digest) as tf:
            for m in tf:
                entry = checker.check(m)
                if entry is not None and write_to is not None:
                    _write(tf, m, entry, write_to, limits, label)
    except ArtifactError:
        raise
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise ArtifactError(
            f"{label} is corrupt or truncated ({type(exc).__name__}: {str(exc)[:120]})",
            "download it again (delete it from the mirror / cache) or check the source",
        ) from None
    except Exception as exc:  # zstandard.ZstdError and friends
        if type(exc).__module__.startswith("zstandard") or "zstd" in type(exc).__name__.lower():
            raise ArtifactError(f"{label} is corrupt ({exc})", "download it again or check the source") from None
        raise
    return list(checker.seen.values())


def scan(path: Path, limits: Limits = Limits(), label: str | None = None, host_trees: tuple[str, ...] = ()) -> list[Entry]:
    """Check every member without writing anything (bundles are checked before they travel).

    `label` names the archive in errors (the cache stores files under their digest).
    `host_trees` are absolute paths that symlinks may point into because, on the node,
    they lead back into the installed tree (Kata's /opt/kata); any other absolute link is refused.
    """
    return _members(Path(path), limits, None, label, host_trees)


def extract(path: Path, dest: Path, limits: Limits = Limits(), label: str | None = None,
            host_trees: tuple[str, ...] = (), digest: Digest | None = None) -> list[Entry]:
    """Extract into the existing, empty directory `dest`; the caller removes it on failure.

    With `digest`, the archive's bytes are hashed as they are extracted (see open_stream).
    """
    return _members(Path(path), limits, Path(dest), label, host_trees, digest)


def release_mode(mode: int) -> int:
    """A release file is 0755 if the archive made it executable by anyone, else 0644."""
    return 0o755 if mode & 0o111 else 0o644


def _write(tf: tarfile.TarFile, m: tarfile.TarInfo, entry: Entry, dest: Path, limits: Limits, archive: str) -> None:
    target = dest / entry.name
    make_dirs(target.parent)
    if entry.kind == "dir":
        make_dirs(target)
    elif entry.kind == "symlink":
        os.symlink(entry.link, target)
    elif entry.kind == "hardlink":
        os.link(dest / entry.link, target, follow_symlinks=False)
    else:
        src = tf.extractfile(m)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        written = 0
        with os.fdopen(fd, "wb") as out:
            while True:
                block = src.read(CHUNK)
                if not block:
                    break
                written += len(block)
                if written > limits.max_member:
                    raise _refuse(archive, f"member {entry.name!r} is larger than declared")
                out.write(block)
            os.fchmod(out.fileno(), release_mode(entry.mode))


def find_unique(entries: list[Entry], basename: str, archive: str) -> Entry:
    """The one regular file named `basename` anywhere in the archive; none or two is refused."""
    hits = [e for e in entries if e.kind in ("file", "hardlink") and posixpath.basename(e.name) == basename]
    if not hits:
        raise _refuse(archive, f"it contains no file named {basename!r}")
    if len(hits) > 1:
        names = ", ".join(e.name for e in hits)
        raise _refuse(archive, f"it contains {len(hits)} files named {basename!r} ({names}); which one is meant is ambiguous")
    return hits[0]


def find_tree(entries: list[Entry], suffix: tuple[str, ...], archive: str) -> str:
    """The one directory path ending in `suffix` (e.g. ("opt", "kata")) that holds members."""
    found = set()
    n = len(suffix)
    for e in entries:
        parts = e.name.split("/")
        for i in range(len(parts) - n + 1):
            if tuple(parts[i : i + n]) == suffix and (i + n < len(parts) or e.kind == "dir"):
                found.add("/".join(parts[: i + n]))
    want = "/".join(suffix)
    if not found:
        raise _refuse(archive, f"it contains no {want}/ tree")
    if len(found) > 1:
        raise _refuse(archive, f"it contains several {want}/ trees ({', '.join(sorted(found))}); which one is meant is ambiguous")
    return found.pop()
