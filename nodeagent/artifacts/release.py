"""Resolve what to fetch: the files of one runtime/version/arch, each with a mandatory digest.

Only small digest files (and a HEAD for Kata) are fetched here, never an artifact. A pinned
release already recorded in the cache resolves without any network, so air-gapped
reinstalls work; `latest` always asks its source and falls back to the record only when
the source is unreachable.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from nodeagent.artifacts import catalog, sources
from nodeagent.artifacts.cache import Cache
from nodeagent.artifacts.digest import Digest, parse_hex, parse_sidecar
from nodeagent.artifacts.download import Fetcher
from nodeagent.artifacts.sources import Location
from nodeagent.errors import ArtifactError

log = structlog.get_logger(__name__)

GVISOR_TARBALL_LAYOUT = "gvisor-tarball"
GVISOR_FILES_LAYOUT = "gvisor-files"
KATA_LAYOUT = "kata-tarball"


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
        if self.runtime == "gvisor":
            return f"gvisor/{catalog.gvisor_dir(self.version, self.arch)}/{name}"
        return f"kata/{self.version}/{name}"


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
) -> Release:
    """The release to install, with a digest for every file (or ArtifactError with a hint)."""
    catalog.check_version(runtime, version)
    arch_check = catalog.gvisor_arch if runtime == "gvisor" else catalog.kata_arch
    arch_check(arch)
    flag = parse_hex("sha256", kata_sha256, "--kata-sha256") if runtime == "kata" and kata_sha256 else None
    recorded = None
    if cache is not None:
        entry = cache.lookup(f"{runtime}/{version}/{arch}")
        recorded = _from_record(runtime, version, arch, entry) if entry else None
        if recorded is not None and flag is not None and any(f.digest != flag for f in recorded.files):
            recorded = None  # the operator pinned another digest: ask the source again
    if recorded is not None and version != "latest" and all(cache.has(f.digest) for f in recorded.files):
        return recorded
    try:
        if runtime == "gvisor":
            return _resolve_gvisor(fetcher, version, arch, mirror)
        return _resolve_kata(fetcher, version, arch, mirror, flag)
    except ArtifactError as exc:
        if recorded is not None and cache is not None and all(cache.has(f.digest) for f in recorded.files):
            log.warning("source unreachable; using the release recorded in the cache", key=recorded.key, error=exc.message)
            return recorded
        raise


def _resolve_gvisor(fetcher: Fetcher, version: str, arch: str, mirror: str | None) -> Release:
    base = sources.gvisor_base(mirror, version, arch)
    tarball = base.join(catalog.GVISOR_TARBALL)
    text = fetcher.read_small(tarball.sibling(catalog.GVISOR_TARBALL + ".sha512"))
    if text is not None:
        digest = parse_sidecar("sha512", text, catalog.GVISOR_TARBALL, f"{tarball}.sha512")
        return Release("gvisor", version, arch, GVISOR_TARBALL_LAYOUT, (ArtifactFile(catalog.GVISOR_TARBALL, digest, tarball),))
    # Older releases: separate files (installers that only know these now hit 404s, gvisor#13718).
    found, missing = [], []
    for name in (catalog.RUNSC, catalog.GVISOR_SHIM):
        loc = base.join(name)
        text = fetcher.read_small(loc.sibling(name + ".sha512"))
        if text is None:
            missing.append(name)
        else:
            found.append(ArtifactFile(name, parse_sidecar("sha512", text, name, f"{loc}.sha512"), loc))
    if not missing:
        return Release("gvisor", version, arch, GVISOR_FILES_LAYOUT, tuple(found))
    for name in (catalog.GVISOR_TARBALL, *missing):
        if fetcher.exists(base.join(name)):
            raise ArtifactError(
                f"{base.join(name)} has no {name}.sha512 digest file; refusing an unverifiable download",
                "publish the digest file next to it (`sha512sum FILE > FILE.sha512`) or rebuild the mirror with `nodeagent bundle`",
            )
    raise ArtifactError(
        f"no gVisor release {version} for {catalog.gvisor_arch(arch)} at {base}",
        "check --gvisor-version and the mirror layout (gvisor/<version>/<x86_64|aarch64>/gvisor.tar.bz2 + .sha512)",
    )


def _resolve_kata(fetcher: Fetcher, version: str, arch: str, mirror: str | None, flag: Digest | None) -> Release:
    base = sources.kata_base(mirror, version)
    for ext in catalog.KATA_EXTS:
        name = catalog.kata_filename(version, arch, ext)
        loc = base.join(name)
        text = fetcher.read_small(loc.sibling(name + ".sha256"))
        sidecar = parse_sidecar("sha256", text, name, f"{loc}.sha256") if text is not None else None
        if sidecar is None and not fetcher.exists(loc):
            continue
        pinned_hex = catalog.kata_pinned(version, arch, ext)
        pinned = Digest("sha256", pinned_hex) if pinned_hex else None
        candidates = [d for d in (flag, pinned, sidecar) if d is not None]
        if not candidates:
            raise ArtifactError(
                f"no sha256 digest for {name} from any source (no --kata-sha256, not in the pinned catalog, no {name}.sha256 at {base})",
                "pass --kata-sha256 <hex> from a source you trust, or install from a bundle made with `nodeagent bundle`",
            )
        if len({d.hex for d in candidates}) > 1:
            raise ArtifactError(
                f"conflicting sha256 digests for {name} (--kata-sha256, pinned catalog and {name}.sha256 disagree)",
                "find out which is right before installing; the mirror may have been tampered with",
            )
        return Release("kata", version, arch, KATA_LAYOUT, (ArtifactFile(name, candidates[0], loc),))
    raise ArtifactError(
        f"no Kata {version} tarball for {catalog.kata_arch(arch)} at {base} (tried .tar.zst and .tar.xz)",
        "check --kata-version and the mirror layout (kata/<version>/kata-static-<version>-<arch>.tar.zst + .sha256)",
    )
