"""Undo what a failed run created, so a refused install leaves the host byte-identical.

Records directories we created, files we added and callbacks that restore a previous
state (a symlink's old target, a rewritten index); `rollback()` undoes them newest first.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

import structlog

from nodeagent.fsutil import make_dirs, restore_mtime

log = structlog.get_logger(__name__)


class Transaction:
    """Use as `with Transaction() as txn:` — committed when the block ends normally, rolled
    back on any exception (SIGTERM's KeyboardInterrupt included)."""

    def __init__(self) -> None:
        self._undo: list[Callable[[], None]] = []

    def __enter__(self) -> "Transaction":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.rollback()

    def mkdirs(self, path: Path, mode: int = 0o755) -> Path:
        """mkdir -p, remembering each level we created (removed on rollback if empty).

        Each created level gets exactly `mode`, whatever the umask."""
        missing = []
        p = Path(path)
        while not p.exists() and not p.is_symlink():
            missing.append(p)
            p = p.parent
        if missing:
            # Undone last: once the dirs we made are gone again, their parent gets its mtime back,
            # so a rolled-back run leaves the host as it found it, metadata included.
            parent, top = missing[-1].parent, missing[-1]
            st = os.stat(parent)
            self._undo.append(lambda: _restore_mtime(parent, top, st))
        for d in make_dirs(path, mode):
            self._undo.append(lambda d=d: _rmdir_if_empty(d))
        return Path(path)

    def added(self, path: Path) -> None:
        """A file or tree we created; removed on rollback."""
        self._undo.append(lambda: _remove(Path(path)))

    def on_rollback(self, fn: Callable[[], None]) -> None:
        self._undo.append(fn)

    def rollback(self) -> None:
        while self._undo:
            fn = self._undo.pop()
            try:
                fn()
            except OSError as exc:  # keep undoing the rest; say what stayed behind
                log.warning("rollback step failed", error=str(exc))

    def commit(self) -> None:
        self._undo.clear()


def _restore_mtime(parent: Path, created: Path, before: os.stat_result) -> None:
    if not created.exists():
        restore_mtime(parent, before)


def _rmdir_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except (FileNotFoundError, OSError):
        pass


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path)
    parent = path.parent
    try:
        fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
        os.fsync(fd)
        os.close(fd)
    except OSError:
        pass
