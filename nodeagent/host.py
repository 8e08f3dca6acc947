"""HostRoot: the one place that joins --root with host paths.

Every probe reads /proc, /sys, /dev, /etc through this object, so the DaemonSet
(`--root /host`), a person at a shell (`/`) and tests (captured trees under
tests/fixtures) run the very same code.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable

from nodeagent.errors import HostError

MAX_LINK_HOPS = 40  # as the kernel's own limit (ELOOP)

# Read errors that only mean "absent": the file, or the process under /proc, is not there.
_ABSENT = {errno.ENOENT, errno.ENOTDIR, errno.ESRCH}
# Read errors that say nothing about the file, only about this process or this moment (out of
# file descriptors or memory, an I/O error): what was not read is unknown, not missing.
UNRELIABLE = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS, errno.EAGAIN, errno.EINTR, errno.EIO}


class HostReadError(HostError):
    """The host could not be read reliably (e.g. out of file descriptors): act on nothing."""


class HostRoot:
    """A host filesystem seen from `root`; all host paths are absolute POSIX paths."""

    def __init__(self, root: str | os.PathLike = "/"):
        self.root = Path(root)
        # every read that failed for a reason other than absence, in order: "path: why (ERRNO)"
        self.read_errors: list[str] = []
        self.unreliable_reads: list[str] = []
        if not self.root.is_dir():
            raise HostError(
                f"host root {str(root)!r} does not exist or is not a directory",
                "pass --root the directory where the node's root filesystem is mounted (e.g. /host)",
            )

    def _note(self, host_path: str, exc: OSError) -> None:
        """Keep a read error as a fact (absence is not an error)."""
        if exc.errno in _ABSENT:
            return
        name = errno.errorcode.get(exc.errno or 0, "?")
        entry = f"{host_path}: {exc.strerror or exc} ({name})"
        self.read_errors.append(entry)
        if exc.errno in UNRELIABLE:
            self.unreliable_reads.append(entry)

    def read_error(self, host_path: str) -> str | None:
        """Why the last read of `host_path` failed, if it failed for another reason than absence."""
        prefix = f"{host_path}: "
        for entry in reversed(self.read_errors):
            if entry.startswith(prefix):
                return entry[len(prefix):]
        return None

    @property
    def is_live(self) -> bool:
        """True when the root is this process's own `/` (so /proc describes it)."""
        try:
            return os.path.samefile(self.root, "/")
        except OSError:
            return False

    def path(self, host_path: str | os.PathLike) -> Path:
        """Map an absolute host path to where it is under the root (no symlink resolving)."""
        rel = PurePosixPath(host_path)
        if rel.is_absolute():
            rel = rel.relative_to("/")
        return self.root / rel

    def resolve(self, host_path: str) -> Path:
        """Like path(), but follow symlinks *inside* the host root (absolute links stay in it)."""
        return self.path(self.walk(host_path))

    def confined(self, host_path: str) -> Path | None:
        """resolve(), or None when the links loop: where a probe may stat/open a device or
        directory without an absolute link taking it to this machine's own file."""
        try:
            return self.resolve(host_path)
        except (HostError, OSError):
            return None

    def walk(self, host_path: str, visit: Callable[[PurePosixPath, bool], bool] | None = None) -> PurePosixPath | None:
        """Resolve `host_path` component by component, links followed inside the root; returns the
        resolved host path. `visit(component, is_last)` sees each component before it is followed
        and may stop the walk by returning False (then None is returned): detect/trust.py judges
        every component this way, on the same walk resolve() takes."""
        current = PurePosixPath("/")
        parts = list(PurePosixPath(host_path).parts[1:] if host_path.startswith("/") else PurePosixPath(host_path).parts)
        hops = 0
        while parts:
            part = parts.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                current = current.parent
                continue
            candidate = current / part
            if visit is not None and not visit(candidate, not parts):
                return None
            real = self.path(candidate)
            if real.is_symlink():
                hops += 1
                if hops > MAX_LINK_HOPS:
                    raise HostError(f"too many symlinks resolving {host_path}", None)
                target = PurePosixPath(os.readlink(real))
                if target.is_absolute():
                    current = PurePosixPath("/")
                    parts = list(target.parts[1:]) + parts
                else:
                    parts = list(target.parts) + parts
                continue
            current = candidate
        return current

    def to_host(self, real_path: str | os.PathLike) -> str:
        """The host path of a real path under the root."""
        rel = Path(real_path).relative_to(self.root)
        return "/" + str(rel) if str(rel) != "." else "/"

    def exists(self, host_path: str) -> bool:
        return os.path.lexists(self.path(host_path))

    def read_text(self, host_path: str, limit: int = 4 << 20) -> str | None:
        """File text, or None if missing/unreadable; never raises. A failure other than absence
        is kept in `read_errors` (see read_error()): unreadable is a fact, not "missing"."""
        try:
            with open(self.path(host_path), "rb") as fh:
                # Modest reads: one read(4 MiB) of a /proc/sys file fails with ENOMEM (the
                # kernel allocates a buffer of the requested size), which under --root /host
                # made /proc/sys/kernel/osrelease look missing.
                chunks: list[bytes] = []
                size = 0
                while size < limit:
                    chunk = fh.read(min(1 << 16, limit - size))
                    if not chunk:
                        break
                    chunks.append(chunk)
                    size += len(chunk)
                return b"".join(chunks).decode("utf-8", errors="replace")
        except OSError as exc:
            self._note(host_path, exc)
            return None

    def read_bytes(self, host_path: str) -> bytes | None:
        try:
            return self.path(host_path).read_bytes()
        except OSError as exc:
            self._note(host_path, exc)
            return None

    def listdir(self, host_path: str) -> list[str]:
        try:
            return sorted(os.listdir(self.path(host_path)))
        except OSError as exc:
            self._note(host_path, exc)
            return []

    def is_char_device(self, host_path: str) -> bool:
        try:
            return stat.S_ISCHR(os.stat(self.path(host_path)).st_mode)
        except OSError:
            return False

    def is_executable(self, host_path: str) -> bool:
        """A regular file (after symlinks, confined to the root) that we may execute."""
        try:
            real = self.resolve(host_path)
        except HostError:
            return False
        return real.is_file() and os.access(real, os.X_OK)

    def which(self, name: str, path: str | None = None) -> str | None:
        """Find an executable by name on a host PATH; returns the host path."""
        search = path or "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        for directory in search.split(":"):
            if directory and self.is_executable(f"{directory.rstrip('/')}/{name}"):
                return f"{directory.rstrip('/')}/{name}"
        return None

    def find_executable(self, candidates: Iterable[str], name: str,
                        accept: Callable[[str], bool] = lambda host_path: True) -> str | None:
        """The first of `candidates` (host paths), then `name` on the PATH, that is executable and
        `accept`ed (e.g. root-controlled); returns the host path."""
        for host_path in (*candidates, self.which(name)):
            if host_path and self.is_executable(host_path) and accept(host_path):
                return host_path
        return None
