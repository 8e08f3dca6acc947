"""Where each runtime's artifacts live, per version and architecture, and the pinned digests.

gVisor: `<base>/<latest|YYYYMMDD[.N]>/<x86_64|aarch64>/` with `gvisor.tar.bz2` + `.sha512`
in recent releases, and `runsc` + `containerd-shim-runsc-v1` (+ `.sha512` each) in older
ones; installers that only know the old names get 404s now (gvisor#13718), so we try the
tarball first and fall back on 404.

Kata: GitHub release assets `kata-static-<v>-<arch>.tar.zst` (recent; `.tar.xz` in older
releases, see kata-containers#11714). Kata publishes no checksum file, so its digests come
from `--kata-sha256`, pins, a mirror's `.sha256`, the pinned table below, or, when none of
those names one, GitHub's release listing (`release_listing.py`).
"""

from __future__ import annotations

import platform
import re

from nodeagent.errors import ArtifactError

GVISOR_UPSTREAM = "https://storage.googleapis.com/gvisor/releases/release"
KATA_UPSTREAM = "https://github.com/kata-containers/kata-containers/releases/download"

GVISOR_TARBALL = "gvisor.tar.bz2"
RUNSC = "runsc"
GVISOR_SHIM = "containerd-shim-runsc-v1"
KATA_SHIM = "containerd-shim-kata-v2"
KATA_EXTS = ("tar.zst", "tar.xz")

# contract arch (as `detect` prints it) -> each project's spelling
_GVISOR_ARCH = {"amd64": "x86_64", "arm64": "aarch64"}
_KATA_ARCH = {"amd64": "amd64", "arm64": "arm64", "s390x": "s390x", "ppc64le": "ppc64le"}
_MACHINE = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "s390x": "s390x", "ppc64le": "ppc64le"}

# Pinned sha256 of upstream Kata tarballs: (version, kata arch, extension) -> hex.
# Only values published by two independent sources are listed; never add a guessed one.
#   3.7.0 amd64 .tar.xz: kubespray roles/kubespray_defaults/vars/main/checksums.yml
#   (kata_containers_binary_checksums, tags v2.29.0..v2.31.0), matching the same value in an
#   independent kubespray-download test fixture.
#   3.28.0 arm64 .tar.zst (the default version): apple/container
#   Sources/ContainerPersistence/ContainerSystemConfig.swift (KernelConfig.defaultDigest), matching an
#   independent project's log of downloading and hashing the same asset (596775193 bytes).
#   3.28.0 amd64 has only one published value found so far, so it is NOT pinned: its digest comes
#   from GitHub's release listing (assets uploaded after June 2025 all have one).
KATA_PINNED_SHA256: dict[tuple[str, str, str], str] = {
    ("3.7.0", "amd64", "tar.xz"): "bebf218cafdc082476c7dabbcc5439aee6a41d6dda24dd3cfffbe0a6ae94e23d",
    ("3.28.0", "arm64", "tar.zst"): "f63d54507d1f18635d94475077e4c2330de4d8e05cedf25f7c38f063b0e66a91",
}

# Used with fullmatch: `$` also matches before a final newline, so `20240729.0\n` passed (L5).
_GVISOR_VERSION = re.compile(r"latest|\d{8}(\.\d+)?")
_KATA_VERSION = re.compile(r"\d+\.\d+\.\d+([.-][0-9A-Za-z.-]+)?")


def host_arch() -> str:
    """This machine's architecture in the contract's spelling (amd64, arm64, ...)."""
    machine = platform.machine()
    return _MACHINE.get(machine, machine)


def gvisor_arch(arch: str) -> str:
    try:
        return _GVISOR_ARCH[arch]
    except KeyError:
        raise ArtifactError(
            f"gVisor publishes no build for architecture {arch!r}",
            "gVisor supports amd64 and arm64; choose one of those with --arch",
        ) from None


def kata_arch(arch: str) -> str:
    try:
        return _KATA_ARCH[arch]
    except KeyError:
        raise ArtifactError(
            f"Kata publishes no static build for architecture {arch!r}",
            "choose one of: " + ", ".join(_KATA_ARCH),
        ) from None


def check_version(runtime: str, version: str) -> str:
    """Refuse versions that could not name a release (and could walk out of a URL or dir)."""
    pattern = _GVISOR_VERSION if runtime == "gvisor" else _KATA_VERSION
    if not pattern.fullmatch(version):
        example = "latest or 20240729.0" if runtime == "gvisor" else "3.11.0"
        raise ArtifactError(f"invalid {runtime} version {version!r}", f"pass a release version such as {example}")
    return version


def gvisor_dir(version: str, arch: str) -> str:
    """The release directory relative to a base: `<version>/<x86_64|aarch64>`."""
    return f"{version}/{gvisor_arch(arch)}"


def kata_filename(version: str, arch: str, ext: str) -> str:
    return f"kata-static-{version}-{kata_arch(arch)}.{ext}"


def kata_pinned(version: str, arch: str, ext: str) -> str | None:
    return KATA_PINNED_SHA256.get((version, kata_arch(arch), ext))
