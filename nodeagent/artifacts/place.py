"""Put an already verified file or tree somewhere else without reading it through Python again.

A hard link when source and destination share a file system (no bytes move at all), else the
kernel copies (`copy_file_range`, which falls back to a splice inside the kernel). Nothing is
hashed here: callers only pass files they verified, and stamps.py tells them whether a file
changed since.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import BinaryIO

# link(2) refuses across file systems (EXDEV), on file systems without hard links (EPERM,
# EOPNOTSUPP) and under protected_hardlinks for files we do not own (EPERM).
_NO_LINK = {errno.EXDEV, errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK}


def link_or_copy(src: Path, dest: Path) -> str:
    """Make `dest` hold `src`'s bytes; returns "link" or "copy". `dest` must not exist."""
    try:
        os.link(src, dest)
        return "link"
    except OSError as exc:
        if exc.errno not in _NO_LINK:
            raise
    kernel_copy(src, dest)
    return "copy"


def kernel_copy(src: Path, dest: Path) -> None:
    """Copy with copy_file_range (in-kernel; reflinks on btrfs/xfs), keeping the mode; fsynced."""
    with open(src, "rb") as fin, open(dest, "xb") as fout:
        st = os.fstat(fin.fileno())
        if copy_fds(fin.fileno(), fout.fileno()) != st.st_size:  # changed under us: never stage a torn copy
            raise OSError(errno.EIO, f"{src} changed size while copying")
        os.fchmod(fout.fileno(), st.st_mode & 0o777)
        os.fsync(fout.fileno())


def copy_then_hash(src: BinaryIO, out: BinaryIO, dest: Path, hasher, progress=None,
                   limit: int | None = None) -> int:
    """Copy the open file `src` into `out` (opened on `dest`) in the kernel, fsync, then hash what
    landed in `dest`.

    For a local mirror: the bytes never pass through Python on the way in, and what is hashed
    is our own copy, so what is verified is exactly what is stored even if the source changes
    meanwhile. `dest` is read back without following a link. Copies at most `limit + 1` bytes
    (the caller refuses more), so a source that never ends cannot fill the disk. Returns the
    size. `progress(done, total)` follows the hashing.
    """
    size = copy_fds(src.fileno(), out.fileno(), None if limit is None else limit + 1)
    os.fsync(out.fileno())
    done = 0
    with os.fdopen(os.open(dest, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb") as back:
        while True:
            block = back.read(1 << 20)
            if not block:
                return done
            hasher.update(block)
            done += len(block)
            if progress:
                progress(done, size)


def copy_fds(fin: int, fout: int, limit: int | None = None) -> int:
    """Copy from the current offsets until EOF (or `limit` bytes); returns the bytes copied."""
    copy, total = _copy_file_range, 0
    while limit is None or total < limit:
        step = 1 << 30 if limit is None else min(1 << 30, limit - total)
        try:
            n = copy(fin, fout, step)
        except OSError as exc:
            # Linux >= 5.19 refuses copy_file_range between file systems of different types
            # (EXDEV); old kernels and some file systems lack it: sendfile works on any file.
            if copy is _sendfile or exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
            copy = _sendfile
            continue
        if n == 0:
            return total
        total += n
    return total


def _copy_file_range(fin: int, fout: int, count: int) -> int:
    return os.copy_file_range(fin, fout, count)


def _sendfile(fin: int, fout: int, count: int) -> int:
    return os.sendfile(fout, fin, None, count)


def link_tree(src: Path, dest: Path) -> int:
    """Recreate the tree `src` at `dest` (which must not exist): dirs, symlinks, files linked or copied.

    Returns the number of files placed. Modes of directories are kept; file modes are the
    files' own (a link shares the inode).
    """
    count = 0
    _mkdir_as(src, dest)
    for top, dirs, files in os.walk(src):
        rel = os.path.relpath(top, src)
        here = dest if rel == "." else dest / rel
        for name in dirs:
            s = os.path.join(top, name)
            if os.path.islink(s):
                os.symlink(os.readlink(s), here / name)
            else:
                _mkdir_as(Path(s), here / name)
        for name in files:
            s = Path(top, name)
            if s.is_symlink():
                os.symlink(os.readlink(s), here / name)
            else:
                link_or_copy(s, here / name)
                count += 1
    return count


def _mkdir_as(src: Path, dest: Path) -> None:
    """mkdir with `src`'s mode, whatever the umask."""
    os.mkdir(dest)
    os.chmod(dest, os.lstat(src).st_mode & 0o7777)
