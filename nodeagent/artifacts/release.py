"""Resolve what to fetch: the files of one runtime/version/arch, each with a mandatory digest.

Only small digest files (and for Kata a HEAD and, when nothing else names a digest, its release
listing) are fetched here, never an artifact. A pinned release already recorded in the cache
resolves without any network, so air-gapped reinstalls work; `latest` always asks its source
and falls back to the record only when the source is unreachable.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from nodeagent.artifacts import catalog, release_listing, sources
from nodeagent.artifacts.pins import NO_PINS, Pins
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
        return mirror_relpath(self.runtime, self.version, self.arch, name)


def mirror_relpath(runtime: str, version: str, arch: str, name: str) -> str:
    """A file's path in the mirror layout, which is also how a pins file names it."""
    if runtime == "gvisor":
        return f"gvisor/{catalog.gvisor_dir(version, arch)}/{name}"
    return f"kata/{version}/{name}"


def _pinned_paths(runtime: str, version: str, arch: str) -> list[list[str]]:
    """Each way a release can be laid out, as the mirror paths that must all be pinned."""
    if runtime == "gvisor":
        return [[mirror_relpath(runtime, version, arch, catalog.GVISOR_TARBALL)],
                [mirror_relpath(runtime, version, arch, n) for n in (catalog.RUNSC, catalog.GVISOR_SHIM)]]
    return [[mirror_relpath(runtime, version, arch, catalog.kata_filename(version, arch, ext))] for ext in catalog.KATA_EXTS]


def check_trusted(runtime: str, version: str, arch: str, mirror: str | None, pins: Pins,
                  kata_sha256: str | None = None) -> None:
    """Refuse a plain-http mirror for a release no digest from elsewhere covers (security review H1).

    Over plain http anyone on the path can replace an artifact and its checksum file alike,
    so the mirror's own checksum files prove nothing; a pin, --kata-sha256 or the pinned
    catalog must vouch for it. Needs no network: called before anything is fetched or written.
    """
    if mirror is None or sources.mirror_base(mirror).authenticated:
        return
    if runtime == "kata" and (kata_sha256 or any(catalog.kata_pinned(version, arch, e) for e in catalog.KATA_EXTS)):
        return
    layouts = _pinned_paths(runtime, version, arch)
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
    release-listing URL template asked for a Kata digest no other source gives ("" = never ask).
    """
    catalog.check_version(runtime, version)
    arch_check = catalog.gvisor_arch if runtime == "gvisor" else catalog.kata_arch
    arch_check(arch)
    flag = parse_hex("sha256", kata_sha256, "--kata-sha256") if runtime == "kata" and kata_sha256 else None
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
        if runtime == "gvisor":
            return _resolve_gvisor(fetcher, version, arch, mirror, pins)
        return _resolve_kata(fetcher, version, arch, mirror, flag, pins, listing)
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


def _pinned_release(version: str, arch: str, base, pins: Pins) -> Release | None:
    """The gVisor release as the pins describe it, without asking the source for checksums."""
    for layout, names in ((GVISOR_TARBALL_LAYOUT, (catalog.GVISOR_TARBALL,)),
                          (GVISOR_FILES_LAYOUT, (catalog.RUNSC, catalog.GVISOR_SHIM))):
        digests = [pins.get(mirror_relpath("gvisor", version, arch, n)) for n in names]
        if all(digests):
            files = tuple(ArtifactFile(n, d, base.join(n)) for n, d in zip(names, digests))
            return Release("gvisor", version, arch, layout, files)
    return None


def _resolve_gvisor(fetcher: Fetcher, version: str, arch: str, mirror: str | None, pins: Pins) -> Release:
    base = sources.gvisor_base(mirror, version, arch)
    pinned = _pinned_release(version, arch, base, pins)
    if pinned is not None:
        return pinned
    tarball = base.join(catalog.GVISOR_TARBALL)
    text = fetcher.read_small(tarball.sibling(catalog.GVISOR_TARBALL + ".sha512"))
    if text is not None:
        digest = parse_sidecar("sha512", text, catalog.GVISOR_TARBALL, str(tarball.sibling(catalog.GVISOR_TARBALL + ".sha512")))
        return Release("gvisor", version, arch, GVISOR_TARBALL_LAYOUT, (ArtifactFile(catalog.GVISOR_TARBALL, digest, tarball),))
    # Older releases: separate files (installers that only know these now hit 404s, gvisor#13718).
    found, missing = [], []
    for name in (catalog.RUNSC, catalog.GVISOR_SHIM):
        loc = base.join(name)
        text = fetcher.read_small(loc.sibling(name + ".sha512"))
        if text is None:
            missing.append(name)
        else:
            found.append(ArtifactFile(name, parse_sidecar("sha512", text, name, str(loc.sibling(name + ".sha512"))), loc))
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


def _resolve_kata(fetcher: Fetcher, version: str, arch: str, mirror: str | None, flag: Digest | None,
                  pins: Pins, listing: str = "") -> Release:
    base = sources.kata_base(mirror, version)
    for ext in catalog.KATA_EXTS:
        name = catalog.kata_filename(version, arch, ext)
        loc = base.join(name)
        pin = pins.get(mirror_relpath("kata", version, arch, name))
        if pin is not None:  # the operator's word: the mirror's checksum file is not even read
            sidecar = None
        else:
            text = fetcher.read_small(loc.sibling(name + ".sha256"))
            sidecar = parse_sidecar("sha256", text, name, str(loc.sibling(name + ".sha256"))) if text is not None else None
            if sidecar is None and not fetcher.exists(loc):
                continue
        pinned_hex = catalog.kata_pinned(version, arch, ext)
        pinned = Digest("sha256", pinned_hex) if pinned_hex else None
        # over plain http the mirror's own .sha256 may only disagree (a conflict), never vouch
        vouching = sidecar if loc.authenticated else None
        candidates = [d for d in (flag, pinned, pin, vouching) if d is not None]
        if not candidates and loc.authenticated and listing:  # upstream's word, asked only when nothing else spoke
            candidates = [release_listing.listed_digest(fetcher, listing, version, name)]
        if not candidates and not loc.authenticated:
            raise ArtifactError(
                f"refusing {mirror_relpath('kata', version, arch, name)} from the plain http mirror {base}: "
                "only the mirror itself vouches for it",
                "pass --pins FILE or --kata-sha256 with its digest from a source you trust, or use an https mirror",
            )
        if not candidates:
            raise ArtifactError(
                f"no sha256 digest for {name} from any source (no --kata-sha256, not in the pinned catalog, no {name}.sha256 at {base}, "
                "the release listing is off)",
                "pass --kata-sha256 <hex> from a source you trust, set kata_release_listing (default: GitHub's API), "
                "or install from a bundle made with `nodeagent bundle`",
            )
        if len({d.hex for d in (*candidates, sidecar) if d is not None and d.algo == candidates[0].algo}) > 1:
            raise ArtifactError(
                f"conflicting digests for {name} (--kata-sha256, the pinned catalog, --pins and {name}.sha256 disagree)",
                "find out which is right before installing; the mirror may have been tampered with",
            )
        return Release("kata", version, arch, KATA_LAYOUT, (ArtifactFile(name, candidates[0], loc),))
    raise ArtifactError(
        f"no Kata {version} tarball for {catalog.kata_arch(arch)} at {base} (tried .tar.zst and .tar.xz)",
        "check --kata-version and the mirror layout (kata/<version>/kata-static-<version>-<arch>.tar.zst + .sha256)",
    )
