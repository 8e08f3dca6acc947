"""Resolve what to fetch: the files of one runtime/version/arch, each with a mandatory digest.

Only small digest files (and a HEAD for Kata) are fetched here, never an artifact. A pinned
release already recorded in the cache resolves without any network, so air-gapped
reinstalls work; `latest` always asks its source and falls back to the record only when
the source is unreachable.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from nodeagent import runtimes as runtime_plugins
from nodeagent.artifacts import sources
from nodeagent.artifacts.pins import NO_PINS, Pins
from nodeagent.artifacts.cache import Cache
from nodeagent.artifacts.digest import Digest, parse_hex
from nodeagent.artifacts.download import Fetcher
from nodeagent.artifacts.sources import Location
from nodeagent.errors import ArtifactError

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ArtifactFile:
    name: str
    digest: Digest
    location: Location | None  # None when resolved from the cache record only


@dataclass(frozen=True)
class Release:
    runtime: str
    version: str  # as requested ("latest" stays "latest" here)
    arch: str  # the contract's spelling (amd64, arm64, ...)
    layout: str
    files: tuple[ArtifactFile, ...]

    @property
    def key(self) -> str:
        return f"{self.runtime}/{self.version}/{self.arch}"

    def record(self) -> dict:
        return {"layout": self.layout, "files": {f.name: str(f.digest) for f in self.files}}

    def mirror_relpath(self, name: str) -> str:
        """Where `name` goes in the mirror layout (INTERFACE.md "Mirror layout")."""
        return mirror_relpath(self.runtime, self.version, self.arch, name)


def mirror_relpath(runtime: str, version: str, arch: str, name: str) -> str:
    """A file's path in the mirror layout, which is also how a pins file names it."""
    return runtime_plugins.get(runtime).mirror_relpath(version, arch, name)


def check_trusted(runtime: str, version: str, arch: str, mirror: str | None, pins: Pins,
                  kata_sha256: str | None = None) -> None:
    """Refuse a plain-http mirror for a release no digest from elsewhere covers (security review H1).

    Over plain http anyone on the path can replace an artifact and its checksum file alike,
    so the mirror's own checksum files prove nothing; a pin, --kata-sha256 or the pinned
    catalog must vouch for it. Needs no network: called before anything is fetched or written.
    """
    if mirror is None or sources.mirror_base(mirror).authenticated:
        return
    plugin = runtime_plugins.get(runtime)
    if (plugin.digest_flag and kata_sha256) or plugin.builtin_digest(version, arch):
        return
    layouts = plugin.pinned_layouts(version, arch)
    if any(all(pins.covers(p) for p in paths) for paths in layouts):
        return
    raise ArtifactError(
        f"refusing {layouts[0][0]} from the plain http mirror {sources.redact_url(mirror)}: "
        "nothing but the mirror itself vouches for it, and anyone on the path can change both file and checksum",
        "pass --pins FILE with its digest from a source you trust (the .pins file `nodeagent bundle` writes beside its directory), "
        "or use an https mirror",
    )


def _from_record(runtime: str, version: str, arch: str, entry: dict) -> Release | None:
    try:
        files = []
        for name, value in sorted(entry["files"].items()):
            algo, hexval = value.split(":", 1)
            files.append(ArtifactFile(name, Digest(algo, hexval), None))
        return Release(runtime, version, arch, entry["layout"], tuple(files))
    except (KeyError, ValueError, AttributeError, TypeError):
        return None


def resolve(
    fetcher: Fetcher,
    cache: Cache | None,
    runtime: str,
    version: str,
    arch: str,
    mirror: str | None = None,
    kata_sha256: str | None = None,
    pins: Pins = NO_PINS,
    listing: str = "",
) -> Release:
    """The release to install, with a digest for every file (or ArtifactError with a hint).

    A pin (pins file) for a file wins over any checksum file the source serves. `listing` is the
    release-listing URL template asked for a digest no other source gives ("" = never ask).
    """
    plugin = runtime_plugins.get(runtime)
    plugin.check_version(version)
    plugin.upstream_arch(arch)
    flag = parse_hex("sha256", kata_sha256, plugin.digest_flag) if plugin.digest_flag and kata_sha256 else None
    check_trusted(runtime, version, arch, mirror, pins, kata_sha256)
    recorded = None
    if cache is not None:
        entry = cache.lookup(f"{runtime}/{version}/{arch}")
        recorded = _from_record(runtime, version, arch, entry) if entry else None
        if recorded is not None and _disagrees(recorded, flag, pins):
            recorded = None  # the operator pinned another digest: ask the source again
    if recorded is not None and version != "latest" and all(cache.has(f.digest) for f in recorded.files):
        return recorded
    try:
        return plugin.resolve(fetcher, version, arch, mirror, flag, pins, listing)
    except ArtifactError as exc:
        if recorded is not None and cache is not None and all(cache.has(f.digest) for f in recorded.files):
            log.warning("source unreachable; using the release recorded in the cache", key=recorded.key, error=exc.message)
            return recorded
        raise


def _disagrees(recorded: Release, flag: Digest | None, pins: Pins) -> bool:
    for f in recorded.files:
        pin = pins.get(recorded.mirror_relpath(f.name))
        if (flag is not None and f.digest != flag) or (pin is not None and f.digest != pin):
            return True
    return False
