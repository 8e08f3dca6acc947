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
import re
import shutil
import tempfile
import time
from pathlib import Path

import structlog

from nodeagent import run as run_mod
from nodeagent.artifacts import catalog, extract, links, place
from nodeagent.artifacts.cache import Cache
from nodeagent.artifacts.inuse import pids_using
from nodeagent.artifacts.release import GVISOR_FILES_LAYOUT, GVISOR_TARBALL_LAYOUT, Release
from nodeagent.journal import Journal
from nodeagent.artifacts.unpacked import UnpackedCache
from nodeagent.errors import ArtifactError, CommandFailed, ConflictError
from nodeagent.fsutil import TEMP_PREFIX, fsync_dir
from nodeagent.host import HostRoot
from nodeagent.state import STATE_DIR

log = structlog.get_logger(__name__)

OPT = "/opt/nodeagent"
MARKER = ".nodeagent-release.json"
REPLACED = "/var/lib/nodeagent/replaced"
KATA_LINK = "/opt/kata"
KATA_SHIM_TARGET = f"/opt/kata/bin/{catalog.KATA_SHIM}"


def runtime_dir(runtime: str) -> str:
    return f"{OPT}/{runtime}"


def desired_links(runtime: str, dirname: str) -> dict[str, str]:
    """host link path -> host-absolute target, for the release installed in `dirname`."""
    base = f"{runtime_dir(runtime)}/{dirname}"
    if runtime == "gvisor":
        return {f"/usr/local/bin/{n}": f"{base}/{n}" for n in (catalog.RUNSC, catalog.GVISOR_SHIM)}
    return {KATA_LINK: base, f"/usr/local/bin/{catalog.KATA_SHIM}": KATA_SHIM_TARGET}


def is_ours(runtime: str, link: str, target: str) -> bool:
    """Whether a link at `link` pointing to `target` is one nodeagent made for `runtime`."""
    if target.startswith(runtime_dir(runtime) + "/"):
        return True
    return runtime == "kata" and link.endswith(catalog.KATA_SHIM) and target == KATA_SHIM_TARGET


def foreign_links(host: HostRoot, runtime: str) -> list[str]:
    """Links we would replace that someone else put there (a regular file, or a link elsewhere)."""
    out = []
    for link in desired_links(runtime, "x"):
        real = host.path(link)
        if not os.path.lexists(real):
            continue
        if real.is_symlink() and is_ours(runtime, link, os.readlink(real)):
            continue
        out.append(link)
    return out


def refuse_foreign(host: HostRoot, runtime: str, force: bool) -> list[str]:
    """Refuse (exit 2) to replace what nodeagent did not install, unless forced."""
    foreign = foreign_links(host, runtime)
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


def links_point_at(host: HostRoot, runtime: str, dirname: str) -> bool:
    for link, target in desired_links(runtime, dirname).items():
        real = host.path(link)
        if not real.is_symlink() or os.readlink(real) != target:
            return False
    return True


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
    if release.layout == GVISOR_FILES_LAYOUT:
        return _stage_gvisor_files(release, cache, staging)
    kept = UnpackedCache(cache.dir)
    key = kept.key(release.runtime, release.layout, release.files[0].digest.hex)
    if kept.restore(key, staging / "kept"):
        log.info("reusing the unpacked release", runtime=release.runtime, key=key)
        return staging / "kept"
    if release.layout == GVISOR_TARBALL_LAYOUT:
        out = _stage_gvisor_tarball(release, cache, staging, limits)
    else:
        out = _stage_kata(release, cache, staging, limits)
    kept.keep(release.runtime, key, out, journal)
    return out


def _stage_gvisor_tarball(release: Release, cache: Cache, staging: Path, limits: extract.Limits) -> Path:
    f = release.files[0]
    raw = staging / "raw"
    raw.mkdir()
    # hashed while extracting: the cache entry may have changed since it was verified
    entries = extract.extract(cache.path_for(f.digest), raw, limits, f.name, digest=f.digest)
    runsc = extract.find_unique(entries, catalog.RUNSC, f.name)
    shim = extract.find_unique(entries, catalog.GVISOR_SHIM, f.name)
    out = staging / "out"
    out.mkdir()
    # Helpers (e.g. a gofer or nvproxy binaries) must stay next to runsc: take its whole directory.
    here = posixpath.dirname(runsc.name)
    picked = [e for e in entries if e.kind in ("file", "hardlink") and posixpath.dirname(e.name) == here]
    if shim not in picked:
        picked.append(shim)
    for e in picked:
        dest = out / posixpath.basename(e.name)
        if dest.exists():
            raise ArtifactError(f"{f.name} has two files named {dest.name} to install", "use an upstream release tarball")
        os.rename(raw / e.name, dest)
    for name in (catalog.RUNSC, catalog.GVISOR_SHIM):
        os.chmod(out / name, 0o755)
    return out


def _stage_gvisor_files(release: Release, cache: Cache, staging: Path) -> Path:
    out = staging / "out"
    out.mkdir()
    for f in release.files:
        # verified by Cache.verify just before (hashed now or stamped unchanged): no second hash
        place.link_or_copy(cache.path_for(f.digest), out / f.name)
        os.chmod(out / f.name, 0o755)
    return out


def _stage_kata(release: Release, cache: Cache, staging: Path, limits: extract.Limits) -> Path:
    f = release.files[0]
    raw = staging / "raw"
    raw.mkdir()
    entries = extract.extract(cache.path_for(f.digest), raw, limits, f.name, host_trees=(KATA_LINK,), digest=f.digest)
    tree = extract.find_tree(entries, ("opt", "kata"), f.name)
    shim = f"{tree}/bin/{catalog.KATA_SHIM}"
    if not any(e.name == shim and e.kind in ("file", "hardlink") for e in entries):
        raise ArtifactError(
            f"refusing {f.name}: it has no {tree}/bin/{catalog.KATA_SHIM}",
            "the archive is not a Kata static release; use the upstream kata-static tarball",
        )
    # only opt/kata is installed: its links must resolve inside it, chains included
    links.check_tree(raw / tree, f.name, host_trees=(KATA_LINK,))
    return raw / tree


def _choose_dirname(host: HostRoot, release: Release, out: Path) -> str:
    """The version directory's name: the version, with `latest` resolved when runsc can tell."""
    name = release.version
    if release.runtime == "gvisor" and name == "latest":
        name = _runsc_release(out / catalog.RUNSC) or f"latest-{release.files[0].digest.hex[:12]}"
    if host.exists(f"{runtime_dir(release.runtime)}/{name}"):
        # Same version name, different bytes (a re-published `latest` or another mirror): never overwrite.
        name = f"{name}-{release.files[0].digest.hex[:12]}"
    return name


def _runsc_release(runsc: Path) -> str | None:
    """`runsc --version` says e.g. "runsc version release-20240729.0"; a foreign arch cannot run.

    Called only on a runsc whose archive matched its digest. Still, it is a downloaded binary:
    it runs from a root-owned copy as nobody, without capabilities or network (security review
    H1). Where that sandbox cannot be had (no unshare/setpriv, or user namespaces refused), the release
    stays unnamed (`latest-<digest>`) rather than running it as root.
    """
    try:
        with tempfile.TemporaryDirectory(prefix=TEMP_PREFIX) as tmp:
            os.chmod(tmp, 0o755)  # the nobody user may enter it, not write to it
            copy = Path(tmp) / catalog.RUNSC
            shutil.copyfile(runsc, copy)
            os.chmod(copy, 0o755)
            proc = run_mod.run([str(copy), "--version"], timeout=15, check=False, as_nobody=True)
    except (CommandFailed, OSError):
        return None
    if proc.returncode != 0:
        log.info("could not learn the runsc release unprivileged", exit=proc.returncode, stderr=proc.stderr[-200:])
        return None
    m = re.search(r"(\d{8}(?:\.\d+)?)", proc.stdout)
    return m.group(1) if m else None


# -- links -----------------------------------------------------------------------------------
def switch_links(host: HostRoot, runtime: str, dirname: str, foreign: list[str], journal: Journal) -> None:
    """Point the runtime's links at `dirname`; a forced foreign file is moved aside first."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    for link, target in desired_links(runtime, dirname).items():
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
