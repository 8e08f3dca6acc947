"""Place a verified release under <root>/opt/nodeagent/<runtime>/<version>/ and swap symlinks.

Binaries are never overwritten in place ("text file busy", and a running shim keeps its
file): a new versioned directory is assembled in a temp dir beside it, renamed into
place, then the symlinks are swapped atomically. Symlink targets are host-absolute
(without the --root prefix), because the node, not this process, follows them.
"""

from __future__ import annotations

import json
import os
import posixpath
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import structlog

from nodeagent import runtimes as runtime_plugins
from nodeagent.artifacts import extract
from nodeagent.artifacts.cache import Cache
from nodeagent.artifacts.inuse import pids_using
from nodeagent.artifacts.release import Release
from nodeagent.artifacts.unpacked import UnpackedCache
from nodeagent.errors import ConflictError
from nodeagent.fsutil import TEMP_PREFIX, atomic_symlink, fsync_dir
from nodeagent.journal import Journal
from nodeagent.host import HostRoot
from nodeagent.state import STATE_DIR

log = structlog.get_logger(__name__)

OPT = "/opt/nodeagent"
MARKER = ".nodeagent-release.json"
REPLACED = "/var/lib/nodeagent/replaced"


def runtime_dir(runtime: str) -> str:
    return f"{OPT}/{runtime}"


def desired_links(runtime: str, dirname: str, opts: Any = None) -> dict[str, str]:
    """host link path -> host-absolute target, for the release installed in `dirname` (and, with the
    runtime's options, the links they ask for, e.g. one per Kata shim)."""
    return runtime_plugins.get(runtime).links(f"{runtime_dir(runtime)}/{dirname}", opts)


def all_links(runtime: str, dirname: str) -> dict[str, str]:
    """Every link the runtime could have made (uninstall, and links a changed option retires)."""
    return runtime_plugins.get(runtime).all_links(f"{runtime_dir(runtime)}/{dirname}")


def is_ours(runtime: str, link: str, target: str) -> bool:
    """Whether a link at `link` pointing to `target` is one nodeagent made for `runtime`."""
    if target.startswith(runtime_dir(runtime) + "/"):
        return True
    return runtime_plugins.get(runtime).owns_link(link, target)


def foreign_links(host: HostRoot, runtime: str, opts: Any = None) -> list[str]:
    """Links we would replace that someone else put there (a regular file, or a link elsewhere)."""
    out = []
    for link in desired_links(runtime, "x", opts):
        real = host.path(link)
        if not os.path.lexists(real):
            continue
        if real.is_symlink() and is_ours(runtime, link, os.readlink(real)):
            continue
        out.append(link)
    return out


def refuse_foreign(host: HostRoot, runtime: str, force: bool, opts: Any = None) -> list[str]:
    """Refuse (exit 2) to replace what nodeagent did not install, unless forced."""
    foreign = foreign_links(host, runtime, opts)
    if foreign and not force:
        what = []
        for link in foreign:
            real = host.path(link)
            kind = f"a symlink to {os.readlink(real)}" if real.is_symlink() else ("a directory" if real.is_dir() else "a file")
            what.append(f"{link} ({kind})")
        raise ConflictError(
            f"{', '.join(what)} already exists and was not installed by nodeagent",
            f"remove it yourself, or pass --force to replace it (the old one is kept under {REPLACED})",
        )
    return foreign


def current_dirname(host: HostRoot, runtime: str) -> str | None:
    """The version directory the runtime's first link points at, if it is ours."""
    link = next(iter(desired_links(runtime, "x")))
    real = host.path(link)
    if not real.is_symlink():
        return None
    target = os.readlink(real)
    prefix = runtime_dir(runtime) + "/"
    if not target.startswith(prefix):
        return None
    return target[len(prefix) :].split("/", 1)[0] or None


def installed_dirnames(host: HostRoot, runtime: str) -> list[str]:
    return [n for n in host.listdir(runtime_dir(runtime)) if not n.startswith(".")]


def read_marker(host: HostRoot, runtime: str, dirname: str) -> dict | None:
    try:
        return json.loads(host.path(f"{runtime_dir(runtime)}/{dirname}/{MARKER}").read_text())
    except (OSError, ValueError):
        return None


def find_installed(host: HostRoot, release: Release) -> str | None:
    """The version directory already holding exactly this release (by digests), if any."""
    want = release.record()["files"]
    current = current_dirname(host, release.runtime)
    names = installed_dirnames(host, release.runtime)
    for name in sorted(names, key=lambda n: n != current):  # prefer the current one
        marker = read_marker(host, release.runtime, name)
        if marker and marker.get("files") == want and marker.get("arch") == release.arch:
            return name
    return None


def links_point_at(host: HostRoot, runtime: str, dirname: str, opts: Any = None) -> bool:
    """Every link the options want is in place, and none of ours they no longer want is left."""
    wanted = desired_links(runtime, dirname, opts)
    for link, target in wanted.items():
        real = host.path(link)
        if not real.is_symlink() or os.readlink(real) != target:
            return False
    return not retired_links(host, runtime, wanted)


def retired_links(host: HostRoot, runtime: str, wanted: dict[str, str]) -> list[str]:
    """Links of ours that the options no longer ask for (a shim dropped from kata_shims)."""
    out = []
    for link in all_links(runtime, "x"):
        real = host.path(link)
        if link not in wanted and real.is_symlink() and is_ours(runtime, link, os.readlink(real)):
            out.append(link)
    return out


# -- assembling a version directory ----------------------------------------------------------
def stage(host: HostRoot, release: Release, cache: Cache, journal: Journal, limits: extract.Limits) -> str:
    """Build the release's directory from cached files and rename it into place; returns its name."""
    rdir = journal.mkdirs(host.path(runtime_dir(release.runtime)))
    staging = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=rdir))
    try:
        out = _assemble(release, cache, staging, limits, journal)
        os.chmod(out, 0o755)
        marker = {"runtime": release.runtime, "version": release.version, "arch": release.arch, **release.record()}
        _write_new(out / MARKER, (json.dumps(marker, indent=2, sort_keys=True) + "\n").encode(), 0o644)
        dirname = _choose_dirname(host, release, out)
        final = rdir / dirname
        os.rename(out, final)
        journal.added(final)
        fsync_dir(rdir)
        return dirname
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create a file with exactly `mode` (not filtered by the umask)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        os.fchmod(fh.fileno(), mode)


def _assemble(release: Release, cache: Cache, staging: Path, limits: extract.Limits, journal: Journal) -> Path:
    """The release's files in a dir under `staging`: from a kept unpacked tree when there is one."""
    plugin = runtime_plugins.get(release.runtime)
    if not plugin.is_archive(release):
        return plugin.unpack(release, cache, staging, limits)
    kept = UnpackedCache(cache.dir)
    key = kept.key(release.runtime, release.layout, release.files[0].digest.hex)
    if kept.restore(key, staging / "kept"):
        log.info("reusing the unpacked release", runtime=release.runtime, key=key)
        return staging / "kept"
    out = plugin.unpack(release, cache, staging, limits)
    kept.keep(release.runtime, key, out, journal)
    return out


def _choose_dirname(host: HostRoot, release: Release, out: Path) -> str:
    """The version directory's name: the version, with a moving one (gVisor's `latest`) resolved."""
    name = runtime_plugins.get(release.runtime).release_name(release, out)
    if host.exists(f"{runtime_dir(release.runtime)}/{name}"):
        # Same version name, different bytes (a re-published `latest` or another mirror): never overwrite.
        name = f"{name}-{release.files[0].digest.hex[:12]}"
    return name


# -- links -----------------------------------------------------------------------------------
def switch_links(host: HostRoot, runtime: str, dirname: str, foreign: list[str], journal: Journal,
                 opts: Any = None) -> None:
    """Point the runtime's links at `dirname`; a forced foreign file is moved aside first. Links of
    ours the options no longer want go (put back on rollback)."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    wanted = desired_links(runtime, dirname, opts)
    for link in retired_links(host, runtime, wanted):
        real = host.path(link)
        old = os.readlink(real)
        journal.on_rollback(lambda r=real, o=old: atomic_symlink(o, r))  # registered before the change
        real.unlink()
        log.info("removed a link the options no longer ask for", path=link)
    for link, target in wanted.items():
        real = host.path(link)
        journal.mkdirs(real.parent)
        if link in foreign:
            backup = host.path(f"{REPLACED}{link}.{stamp}")
            journal.mkdirs(host.path(posixpath.dirname(STATE_DIR)))
            journal.mkdirs(backup.parent, mode=0o700)  # nodeagent's state: root only
            shutil.move(str(real), str(backup))
            journal.on_rollback(lambda b=backup, r=real: shutil.move(str(b), str(r)))
            log.warning("moved aside a file nodeagent did not install", path=link, kept_at=host.to_host(backup))
        journal.symlink(target, real)


# -- pruning and removal -----------------------------------------------------------------------
def prune(host: HostRoot, runtime: str) -> tuple[list[str], dict[str, list[int]]]:
    """Remove version dirs no link points at and no process runs from; returns (removed, kept)."""
    current = current_dirname(host, runtime)
    removed, kept = [], {}
    rdir = host.path(runtime_dir(runtime))
    for name in host.listdir(runtime_dir(runtime)):
        if name.startswith(TEMP_PREFIX):
            shutil.rmtree(rdir / name, ignore_errors=True)  # left by a crashed run (we hold the lock)
            continue
        if name.startswith(".") or name == current:
            continue
        host_dir = f"{runtime_dir(runtime)}/{name}"
        pids = pids_using(host, host_dir)
        if pids:
            kept[host_dir] = pids
            log.info("keeping a previous version still in use", path=host_dir, pids=pids)
            continue
        remove_tree(rdir / name)
        removed.append(host_dir)
    return removed, kept


def remove_tree(path: Path) -> None:
    """Rename away first, so a version directory is either whole or gone."""
    doomed = path.with_name(f"{TEMP_PREFIX}rm-{path.name}")
    os.rename(path, doomed)
    fsync_dir(path.parent)
    shutil.rmtree(doomed)


def restore_replaced(host: HostRoot, link: str) -> str | None:
    """Put back the newest file that --force moved aside for `link`; returns its backup path."""
    bdir = host.path(REPLACED + posixpath.dirname(link))
    prefix = posixpath.basename(link) + "."
    backups = sorted(n for n in (os.listdir(bdir) if bdir.is_dir() else []) if n.startswith(prefix))
    if not backups or os.path.lexists(host.path(link)):
        return None
    shutil.move(str(bdir / backups[-1]), str(host.path(link)))
    return f"{REPLACED}{posixpath.dirname(link)}/{backups[-1]}"
