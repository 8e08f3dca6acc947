"""The artifact steps `nodeagent install` / `plan` / `uninstall` / the agent call.

plan_artifact   -> what would happen (reads digest files or Kata's release listing at most; downloads no artifact)
ensure_artifact -> download/verify/cache/extract/link (into the installer's undo journal), then
                  prune unused old versions (the installer prunes only once the run is accepted)
remove_artifact -> remove links and versions (refused while a process runs from them)
The caller holds nodeagent's run lock (/run/nodeagent.lock) around ensure/remove.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import structlog

from nodeagent.artifacts import catalog, extract, install, pins, release_listing
from nodeagent.artifacts.cache import Cache
from nodeagent.artifacts.download import Fetcher, FetchOptions
from nodeagent.artifacts.progress import ProgressFn, tty_progress
from nodeagent.artifacts.release import Release, check_trusted, resolve
from nodeagent.journal import Journal
from nodeagent.artifacts.digest import parse_hex
from nodeagent.artifacts.sources import mirror_base
from nodeagent.errors import ArtifactError
from nodeagent.fsutil import atomic_write, remove_file
from nodeagent.host import HostRoot
from nodeagent import runtimes as runtime_plugins
from nodeagent.runtimes import NAMES

log = structlog.get_logger(__name__)

RUNTIMES = NAMES


@dataclass
class ArtifactPlan:
    runtime: str
    version: str
    action: str  # "download" | "cached" | "installed" | "none"

    def as_dict(self) -> dict:
        return {"runtime": self.runtime, "version": self.version, "action": self.action}


@dataclass
class ArtifactResult:
    runtime: str
    version: str  # the installed directory's name (`latest` resolved where possible)
    action: str  # what was done: "download" | "cached" | "installed" | "none"
    install_dir: str  # host path, e.g. /opt/nodeagent/gvisor/20240729.0
    pruned: list[str] = field(default_factory=list)
    kept_in_use: dict[str, list[int]] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"runtime": self.runtime, "version": self.version, "action": self.action}


@dataclass
class RemoveResult:
    runtime: str
    removed: list[str]
    restored: list[str]


def fetch_options(settings) -> FetchOptions:
    """Network settings (`download_backoff` is NODEAGENT_DOWNLOAD_BACKOFF through settings.load)."""
    cap = getattr(settings, "max_download_size", None)
    return FetchOptions(timeout=settings.download_timeout, retries=max(0, settings.download_retries),
                        backoff=settings.download_backoff,
                        max_size=cap if cap and cap > 0 else None)


def check_settings(settings, runtimes: list[str], arch: str | None = None) -> None:
    """Refuse malformed artifact settings (version, arch, --kata-sha256, --mirror, --pins, the release
    listing URL) and a plain-http mirror nothing vouches for, without touching the network or the
    host, so the installer can reject them before its lock."""
    arch = arch or catalog.host_arch()
    for runtime in runtimes:
        _check_runtime(runtime)
        plugin = runtime_plugins.get(runtime)
        plugin.check_version(_version(settings, runtime))
        plugin.upstream_arch(arch)
    for runtime in runtimes:
        plugin = runtime_plugins.get(runtime)
        digest = plugin.operator_digest(plugin.options(settings))
        if plugin.digest_flag and digest:
            parse_hex("sha256", digest, plugin.digest_flag)
    if settings.mirror:
        mirror_base(settings.mirror)
    release_listing.check_url(settings.kata_release_listing)  # a bad setting is refused even if unused
    pinned = pins.load(settings.pins)
    for runtime in runtimes:
        check_trusted(runtime, _version(settings, runtime), arch, settings.mirror, pinned, _operator_digest(settings, runtime))


def _version(settings, runtime: str) -> str:
    plugin = runtime_plugins.get(runtime)
    return plugin.version(plugin.options(settings))


def _operator_digest(settings, runtime: str) -> str | None:
    """The digest handed in on the command line for this runtime's archive (e.g. --kata-sha256)."""
    plugin = runtime_plugins.get(runtime)
    return plugin.operator_digest(plugin.options(settings))


def _check_runtime(runtime: str) -> None:
    if runtime not in RUNTIMES:
        raise ArtifactError(f"unknown runtime {runtime!r}", "choose " + " or ".join(RUNTIMES))


def _resolve(host: HostRoot, settings, runtime: str, arch: str, fetcher: Fetcher) -> Release:
    return resolve(
        fetcher,
        Cache(host),
        runtime,
        _version(settings, runtime),
        arch,
        mirror=settings.mirror,
        kata_sha256=_operator_digest(settings, runtime),
        pins=pins.load(settings.pins),
        listing=settings.kata_release_listing,
    )


def _options(settings, runtime: str):
    plugin = runtime_plugins.get(runtime)
    return plugin.options(settings)


def _action(host: HostRoot, release: Release, cache: Cache, opts=None) -> tuple[str, str | None]:
    dirname = install.find_installed(host, release)
    if dirname is not None:
        return ("none" if install.links_point_at(host, release.runtime, dirname, opts) else "installed"), dirname
    if all(cache.has(f.digest) for f in release.files):
        return "cached", None
    return "download", None


def plan_artifact(host: HostRoot, settings, runtime: str, arch: str | None = None) -> ArtifactPlan:
    """What ensure_artifact would do; writes nothing and downloads no artifact.

    action: "download" (fetch, then install), "cached" (install from the cache),
    "installed" (the version directory exists; only the symlinks move), "none" (in place).
    """
    _check_runtime(runtime)
    arch = arch or catalog.host_arch()
    fetcher = Fetcher(fetch_options(settings))
    try:
        release = _resolve(host, settings, runtime, arch, fetcher)
    finally:
        fetcher.close()
    action, dirname = _action(host, release, Cache(host), _options(settings, runtime))
    return ArtifactPlan(runtime, dirname or release.version, action)


def ensure_artifact(
    host: HostRoot,
    settings,
    runtime: str,
    arch: str | None = None,
    progress: ProgressFn | None | str = "auto",
    limits: extract.Limits = extract.Limits(),
    journal: Journal | None = None,
) -> ArtifactResult:
    """Make the runtime's release installed and linked; on failure the host is left as it was.

    With a `journal` (the installer's), every change stays registered there so a later failed
    restart or health check undoes it too; old versions are then NOT pruned (the rollback may
    need them): the caller prunes once the run is accepted.
    """
    _check_runtime(runtime)
    arch = arch or catalog.host_arch()
    cache = Cache(host)
    fetcher = Fetcher(fetch_options(settings))
    own = journal is None
    try:
        with (Journal() if own else journal.savepoint()) as steps:
            opts = _options(settings, runtime)
            release = _resolve(host, settings, runtime, arch, fetcher)
            foreign = install.refuse_foreign(host, runtime, settings.force, opts)
            action, dirname = _action(host, release, cache, opts)
            if action == "download" or action == "cached":
                action = _fill_cache(host, release, cache, fetcher, steps, settings, progress)
                _record(cache, release, steps)
                dirname = install.stage(host, release, cache, steps, limits)
            if action != "none":
                where = f"{install.runtime_dir(runtime)}/{dirname}"
                runtime_plugins.get(runtime).check_release(host.path(where), opts, where)  # before any link moves
                install.switch_links(host, runtime, dirname, foreign, steps, opts)
    finally:
        fetcher.close()
    pruned, kept = _prune_quietly(host, runtime) if own else ([], {})
    log.info("artifact ready", runtime=runtime, version=dirname, action=action)
    return ArtifactResult(runtime, dirname, action, f"{install.runtime_dir(runtime)}/{dirname}", pruned, kept)


def _prune_quietly(host: HostRoot, runtime: str) -> tuple[list[str], dict[str, list[int]]]:
    try:
        return install.prune(host, runtime)
    except OSError as exc:  # the install itself succeeded; an old version just stays for now
        log.warning("could not prune old versions", runtime=runtime, error=str(exc))
        return [], {}


def _fill_cache(host, release: Release, cache: Cache, fetcher: Fetcher, journal: Journal, settings, progress) -> str:
    """Fetch what the cache lacks (verified); "download" if anything came over the wire."""
    action = "cached"  # everything was already in the cache
    for f in release.files:
        if cache.verify(f.digest, journal):
            continue
        if f.location is None:  # recorded release, cache entry lost: ask the source again
            fresh = _resolve(host, settings, release.runtime, release.arch, fetcher)
            f = next(x for x in fresh.files if x.name == f.name and x.digest == f.digest)
        cache.make_dir(journal)
        dest = cache.path_for(f.digest)
        show = tty_progress(f"{release.runtime} {f.name}") if progress == "auto" else progress
        action = "download"
        fetcher.fetch(f.location, dest, f.digest, show)
        journal.added(dest)
        cache.mark_verified(f.digest, journal)  # hashed while downloading: staging needs no second pass
    return action


def _record(cache: Cache, release: Release, journal: Journal) -> None:
    before = cache.index_bytes()
    cache.record(release.key, release.record())
    if before is None:
        journal.added(cache.dir / "releases.json")
    else:
        journal.on_rollback(lambda: atomic_write(cache.dir / "releases.json", before, mode=0o600))


def artifacts_in_use(host: HostRoot, runtime: str) -> list[int]:
    """PIDs running a binary from any installed version of the runtime."""
    _check_runtime(runtime)
    pids: set[int] = set()
    for name in install.installed_dirnames(host, runtime):
        pids.update(install.pids_using(host, f"{install.runtime_dir(runtime)}/{name}"))
    return sorted(pids)


def prune_artifact(host: HostRoot, runtime: str) -> tuple[list[str], dict[str, list[int]]]:
    """Remove old versions nothing runs from any more (the installer, once a run is accepted);
    a failure to prune is logged, never fatal: the old version just stays for now."""
    _check_runtime(runtime)
    return _prune_quietly(host, runtime)


def remove_artifact(host: HostRoot, runtime: str, force: bool = False) -> RemoveResult:
    """Remove our links and version dirs; refused while a process runs from them unless forced.

    Files that --force once moved aside are put back. The download cache is kept.
    """
    _check_runtime(runtime)
    pids = artifacts_in_use(host, runtime)
    if pids and not force:
        raise ArtifactError(
            f"{runtime} is still in use by process(es) {', '.join(map(str, pids[:10]))}",
            "stop the pods using it (drain the node) and run again, or pass --force",
        )
    removed, restored = [], []
    # reverse of the install order: the shim's link (through /opt/kata) goes before /opt/kata, so
    # an interrupted removal never leaves a dangling shim link (found by tests/faults)
    for link in reversed(list(install.all_links(runtime, "x"))):
        real = host.path(link)
        if real.is_symlink() and install.is_ours(runtime, link, os.readlink(real)):
            remove_file(real)  # a read-only /usr/local/bin is a HostError with a hint, not a crash
            removed.append(link)
        back = install.restore_replaced(host, link)
        if back:
            restored.append(link)
    rdir = host.path(install.runtime_dir(runtime))
    for name in install.installed_dirnames(host, runtime):
        try:
            install.remove_tree(rdir / name)
        except OSError as exc:
            raise ArtifactError(
                f"could not remove {install.runtime_dir(runtime)}/{name}: {exc.strerror or exc}",
                "check the filesystem is writable and run again; removal resumes where it stopped",
            ) from None
        removed.append(f"{install.runtime_dir(runtime)}/{name}")
    for d in (rdir, rdir.parent):
        try:
            d.rmdir()
        except OSError:
            pass
    return RemoveResult(runtime, removed, restored)


__all__ = [
    "ArtifactPlan",
    "ArtifactResult",
    "RemoveResult",
    "plan_artifact",
    "ensure_artifact",
    "remove_artifact",
    "prune_artifact",
    "artifacts_in_use",
    "fetch_options",
    "check_settings",
]
