"""Crash-safe file operations: atomic writes, atomic symlink swaps, the run lock.

A write either fully happens or not at all: temp file in the same directory,
fsync, rename over the target, fsync the directory. Owner and mode of a file
being replaced are kept.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import tempfile
from pathlib import Path

import structlog

from nodeagent.errors import HostError, LockHeld

log = structlog.get_logger(__name__)

TEMP_PREFIX = ".nodeagent-tmp-"


def fsync_dir(directory: str | os.PathLike) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _explain(exc: OSError, path: Path, verb: str) -> HostError:
    if exc.errno == errno.ENOSPC:
        return HostError(f"no space left on device while {verb} {path}", "free disk space on the node, then run again")
    if exc.errno in (errno.EROFS,):
        return HostError(f"{path} is on a read-only filesystem", "remount it read-write or choose another --root")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return HostError(f"permission denied while {verb} {path}", "run nodeagent as root (or fix the file's permissions)")
    return HostError(f"{verb} {path} failed: {exc.strerror or exc}", None)


def restore_mtime(directory: str | os.PathLike, before: os.stat_result) -> None:
    """Give a directory back the times it had, after entries we made in it are gone again."""
    os.utime(directory, ns=(before.st_atime_ns, before.st_mtime_ns), follow_symlinks=False)


def make_dirs(path: str | os.PathLike, mode: int = 0o755) -> list[Path]:
    """mkdir -p giving every level it creates exactly `mode`, whatever the umask; returns them.

    mkdir(mode) alone is filtered by the umask (000 would make 0777 directories).
    """
    missing = []
    p = Path(path)
    while not os.path.lexists(p):
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)  # never wider than the final mode while we chmod
        except FileExistsError:
            continue
        os.chmod(d, mode)
    return list(reversed(missing))


def atomic_write(path: str | os.PathLike, data: bytes, mode: int | None = None, dir_mode: int = 0o755) -> None:
    """Replace `path` with `data` atomically, keeping owner/mode of an existing file.

    A new file gets `mode` (default 0644) and missing parents `dir_mode`, never the umask's."""
    path = Path(path)
    try:
        st = os.stat(path)
        keep_mode, uid, gid = st.st_mode & 0o7777, st.st_uid, st.st_gid
    except FileNotFoundError:
        keep_mode, uid, gid = (0o644 if mode is None else mode), None, None
    if mode is not None:
        keep_mode = mode
    tmp = None
    try:
        make_dirs(path.parent, dir_mode)
        parent_before = os.stat(path.parent)
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fchmod(fh.fileno(), keep_mode)
                if uid is not None:
                    try:
                        os.fchown(fh.fileno(), uid, gid)
                    except PermissionError:
                        pass
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            tmp = None
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                    restore_mtime(path.parent, parent_before)  # a failed write leaves no trace
                except OSError:
                    pass
        fsync_dir(path.parent)
    except OSError as exc:
        raise _explain(exc, path, "writing") from exc


def atomic_symlink(target: str, link: str | os.PathLike) -> None:
    """Point `link` at `target` atomically (new link under a temp name, then rename over)."""
    link = Path(link)
    try:
        make_dirs(link.parent)
        if link.is_symlink() and os.readlink(link) == target:
            return
        tmp = link.parent / f"{TEMP_PREFIX}{link.name}.{os.getpid()}"
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        os.symlink(target, tmp)
        try:
            os.replace(tmp, link)
        except OSError:
            os.unlink(tmp)
            raise
        fsync_dir(link.parent)
    except OSError as exc:
        raise _explain(exc, link, "linking") from exc


def sweep_temps(directory: str | os.PathLike) -> list[str]:
    """Remove `.nodeagent-tmp-*` entries a killed run left in `directory`; returns their names.

    Only call it while holding the run lock: then no other nodeagent is writing, so every such
    entry is stale (SIGKILL cannot be held back, and atomic_write/atomic_symlink put their temp
    file beside the target).
    """
    import shutil

    directory = Path(directory)
    try:
        names = [n for n in os.listdir(directory) if n.startswith(TEMP_PREFIX)]
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        raise _explain(exc, directory, "listing") from exc
    for name in names:
        entry = directory / name
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                os.unlink(entry)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _explain(exc, entry, "removing") from exc
    if names:
        fsync_dir(directory)
    return names


def remove_file(path: str | os.PathLike) -> bool:
    """Remove a file or symlink if present; True if something was removed."""
    path = Path(path)
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise _explain(exc, path, "removing") from exc
    fsync_dir(path.parent)
    return True


LOCK_MODE = 0o600


def _lock_is_sound(st: os.stat_result) -> bool:
    """Ours alone: a regular file owned by us, mode 0600, no other names (hard links)."""
    return (stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid() and st.st_gid == os.getegid()
            and stat.S_IMODE(st.st_mode) == LOCK_MODE and st.st_nlink == 1)


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


class RunLock:
    """An exclusive flock on the lock file; a second holder fails fast with exit 3.

    The file must be ours alone: anyone who can open it can flock it and stop every nodeagent
    (security review L2: the old units `touch`ed it 0644, and `nobody` held it). A lock file that
    is a symlink, not a regular file, or has another owner or mode is replaced by a new 0600 file
    (a new inode: whoever opened the old one keeps only that), and the lock counts only while the
    path still names the file we locked (a concurrent nodeagent may have replaced it).
    """

    ATTEMPTS = 5

    def __init__(self, path: str | os.PathLike, wait: float = 0.0):
        self.path = Path(path)
        self.wait = wait
        self.fd: int | None = None
        self.writable = True

    def __enter__(self) -> "RunLock":
        try:
            make_dirs(self.path.parent)  # 0755 whatever the umask
        except OSError as exc:
            raise _explain(exc, self.path, "opening lock") from exc
        for _ in range(self.ATTEMPTS):
            fd, st = self._open_sound()
            self._flock(fd)
            try:
                current = os.lstat(self.path)
            except FileNotFoundError:
                current = None
            if current is not None and _same_file(current, st):
                self.fd = fd
                if self.writable:
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                return self
            os.close(fd)  # replaced while we waited: lock the file the path names now
        raise HostError(f"{self.path} keeps being replaced while nodeagent locks it",
                        "find what rewrites the lock file; nothing was changed")

    @classmethod
    def prepare(cls, path: str | os.PathLike) -> None:
        """Make `path` a sound lock file (create it 0600, or replace an unsound one) without
        taking the lock: the units run this as root before their sandbox makes /run read-only."""
        lock = cls(path)
        try:
            make_dirs(lock.path.parent)
        except OSError as exc:
            raise _explain(exc, lock.path, "opening lock") from exc
        fd, _ = lock._open_sound()
        os.close(fd)

    def _open_sound(self) -> tuple[int, os.stat_result]:
        """Open (creating it 0600, never through a symlink) a lock file that is ours alone."""
        for _ in range(self.ATTEMPTS):
            try:
                fd = self._open()
            except OSError as exc:
                if exc.errno != errno.ELOOP:  # ELOOP: the path is a symlink
                    raise _explain(exc, self.path, "opening lock") from exc
                self._replace(os.lstat(self.path))
                continue
            st = os.fstat(fd)
            if _lock_is_sound(st):
                return fd, st
            os.close(fd)
            self._replace(st)
        raise HostError(f"cannot make {self.path} a lock file only root can open",
                        "remove it by hand (it holds no state), then run again")

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, LOCK_MODE)
        except OSError as exc:
            if exc.errno != errno.EROFS:
                raise
        # The systemd units keep /run read-only and prepare the file before (nodeagent.prepare_lock):
        # flock needs no write access; only the holder's pid is not recorded then.
        self.writable = False
        return os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)

    def _replace(self, bad: os.stat_result) -> None:
        """Unlink the unsound lock file `bad` (if the path still names it); the caller recreates it."""
        log.warning(
            "replacing a lock file others could open", path=str(self.path), mode=oct(stat.S_IMODE(bad.st_mode)),
            uid=bad.st_uid, gid=bad.st_gid, symlink=stat.S_ISLNK(bad.st_mode))
        try:
            if _same_file(os.lstat(self.path), bad):
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno in (errno.EROFS, errno.EBUSY):  # a read-only /run, or bind-mounted there
                raise HostError(f"{self.path} could be opened by other users, and cannot be replaced from here",
                                "remove it as root (it holds no state; the systemd units replace it "
                                "before they start), then run again") from exc
            raise _explain(exc, self.path, "replacing lock") from exc

    def _flock(self, fd: int) -> None:
        import time

        deadline = time.monotonic() + self.wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = ""
                    try:
                        holder = os.pread(fd, 32, 0).decode().strip()
                    except OSError:
                        pass
                    os.close(fd)
                    raise LockHeld(
                        f"another nodeagent holds {self.path}" + (f" (pid {holder})" if holder else ""),
                        "wait for it to finish, or stop it; nothing was changed",
                    ) from None
                time.sleep(0.1)

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
