"""One undo journal for everything an install changes (in the manner of certbot's reverter).

Every change is registered BEFORE it is made: a config file's or state file's old bytes, a
symlink's old target, a directory or file we create, or a callback that puts something back.
`rollback()` undoes them newest first (LIFO), so a failed config test, restart, health check or
handler check leaves the host as it was before the run: config, drop-ins, runsc.toml, state
under /var/lib/nodeagent, and the artifact links and version directories alike.

The journal lives in memory. A SIGKILL cannot run it, so crash safety rests, as before, on
the order of the writes (ownership in state.json first; a file the config names before the
config) and on an idempotent re-run; see tests/faults.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Callable, Iterator

import structlog

from nodeagent import fsutil
from nodeagent.errors import NodeagentError

log = structlog.get_logger(__name__)


class Journal:
    """Use as `with Journal() as journal:` (kept when the block ends normally, rolled back on
    any exception, SIGTERM's KeyboardInterrupt included), or hold one across several steps and
    call `rollback()` / `commit()` yourself."""

    def __init__(self) -> None:
        self._undo: list[Callable[[], None]] = []
        self._on_commit: list[Callable[[], None]] = []

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.rollback()

    def __len__(self) -> int:
        return len(self._undo)

    # -- registering changes (each before the change is made) -------------------------------
    def write(self, path: str | os.PathLike, data: bytes | None, mode: int | None = None) -> None:
        """Replace the file at the real `path` atomically (remove it when `data` is None),
        remembering its bytes first."""
        path = Path(path)
        try:
            old: bytes | None = path.read_bytes()
            old_mode: int | None = os.stat(path).st_mode & 0o7777
        except FileNotFoundError:
            old, old_mode = None, None
        self._undo.append(lambda: _put_back(path, old, old_mode))
        if data is None:
            fsutil.remove_file(path)
        else:
            fsutil.atomic_write(path, data, mode=mode)

    def symlink(self, target: str, link: str | os.PathLike) -> None:
        """Point `link` at `target` atomically, remembering its old target (or its absence)."""
        link = Path(link)
        old = os.readlink(link) if link.is_symlink() else None
        if old is None:
            parent = os.stat(link.parent) if link.parent.is_dir() else None
            self._undo.append(lambda: _unlink_new(link, parent))
        else:
            self._undo.append(lambda: fsutil.atomic_symlink(old, link))
        fsutil.atomic_symlink(target, link)

    def mkdirs(self, path: str | os.PathLike, mode: int = 0o755) -> Path:
        """mkdir -p giving each created level exactly `mode`; rollback removes them if empty
        and gives their parent its times back."""
        missing = []
        p = Path(path)
        while not p.exists() and not p.is_symlink():
            missing.append(p)
            p = p.parent
        if missing:
            parent, top = missing[-1].parent, missing[-1]
            before = os.stat(parent)
            self._undo.append(lambda: _restore_mtime(parent, top, before))
        for d in fsutil.make_dirs(path, mode):
            self._undo.append(lambda d=d: _rmdir_if_empty(d))
        return Path(path)

    def rmdir(self, path: str | os.PathLike) -> None:
        """Remove an empty directory (OSError when it is not); rollback makes it again, same mode."""
        path = Path(path)
        mode = os.stat(path).st_mode & 0o7777
        self._undo.append(lambda: path.exists() or fsutil.make_dirs(path, mode))
        try:
            os.rmdir(path)
        except OSError:
            self._undo.pop()
            raise

    def added(self, path: str | os.PathLike) -> None:
        """A file or tree we just created; removed on rollback."""
        self._undo.append(lambda: _remove(Path(path)))

    def on_rollback(self, fn: Callable[[], None]) -> None:
        """Any other way back (e.g. a file moved aside is moved back)."""
        self._undo.append(fn)

    def on_commit(self, fn: Callable[[], None]) -> None:
        """Something that may be thrown away only once the run is accepted (an older kept tree):
        a rollback still needs it."""
        self._on_commit.append(fn)

    # -- ending ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def savepoint(self) -> Iterator["Journal"]:
        """A step that undoes only itself when it fails, and otherwise stays in the journal."""
        mark, commit_mark = len(self._undo), len(self._on_commit)
        try:
            yield self
        except BaseException:
            self._rollback_to(mark)
            del self._on_commit[commit_mark:]
            raise

    def rollback(self) -> None:
        """Undo everything registered, newest first; a step that fails is logged, the rest run."""
        self._rollback_to(0)
        self._on_commit.clear()

    def commit(self) -> None:
        """Keep every change: forget how to undo them, and drop what only a rollback needed."""
        self._undo.clear()
        while self._on_commit:
            fn = self._on_commit.pop(0)
            try:
                fn()
            except OSError as exc:  # leftovers cost disk, never correctness
                log.warning("clean-up after commit failed", error=str(exc))

    def _rollback_to(self, mark: int) -> None:
        while len(self._undo) > mark:
            fn = self._undo.pop()
            try:
                fn()
            except (OSError, NodeagentError) as exc:  # keep undoing the rest; say what stayed behind
                log.warning("rollback step failed", error=str(getattr(exc, "message", exc)))


def _put_back(path: Path, old: bytes | None, mode: int | None) -> None:
    if old is None:
        fsutil.remove_file(path)
    else:
        fsutil.atomic_write(path, old, mode=mode)


def _unlink_new(link: Path, parent_before: os.stat_result | None) -> None:
    """Take away a link we created; its directory gets its times back (as if never touched)."""
    link.unlink(missing_ok=True)
    fsutil.fsync_dir(link.parent)
    if parent_before is not None:
        fsutil.restore_mtime(link.parent, parent_before)


def _restore_mtime(parent: Path, created: Path, before: os.stat_result) -> None:
    if not created.exists():
        fsutil.restore_mtime(parent, before)


def _rmdir_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path)
    try:
        fsutil.fsync_dir(path.parent)
    except OSError:
        pass
