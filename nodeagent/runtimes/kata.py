"""Kata Containers: its handlers, the kata-static release on GitHub, /opt/kata, a CRI sandbox check.

Release: GitHub release assets `kata-static-<v>-<arch>.tar.zst` (recent; `.tar.xz` in older
releases, see kata-containers#11714). Kata publishes no checksum file, so its digests come
from `--kata-sha256`, pins, a mirror's `.sha256`, the pinned table below, or, when none of
those names one, GitHub's release listing (`artifacts/release_listing.py`).

Every handler (the default `kata` and one per shim of `kata_shims`, e.g. `kata-qemu`) is a
`HandlerSpec` from `handler_specs`; each shim also gets its own link on containerd's PATH, its
own eligibility verdict, RuntimeClass and verify sandbox (the shim table is `kata_shims.py`).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodeagent.artifacts import extract, links as tree_links, release_listing, sources
from nodeagent.artifacts.digest import Digest, parse_sidecar
from nodeagent.artifacts.release import ArtifactFile, Release
from nodeagent.containerd import model
from nodeagent.errors import ArtifactError, UsageError
from nodeagent.facts import HostFacts, RuntimeVerdict
from nodeagent.runtimes import kata_shims
from nodeagent.runtimes.base import Runtime, RuntimeClassSpec, VerifyContext
from nodeagent.runtimes.kata_shims import KataShim

RUNTIME_TYPE = "io.containerd.kata.v2"
DEFAULTS_DIR = "/opt/kata/share/defaults/kata-containers"
# handler-level keys every Kata handler carries (the contract's handler table)
HANDLER_KEYS = {"privileged_without_host_devices": True, "pod_annotations": ["io.katacontainers.*"]}

UPSTREAM = "https://github.com/kata-containers/kata-containers/releases/download"
SHIM = "containerd-shim-kata-v2"
EXTS = ("tar.zst", "tar.xz")
LAYOUT = "kata-tarball"
LINK = "/opt/kata"
SHIM_TARGET = f"/opt/kata/bin/{SHIM}"
ARCHES = ("amd64", "arm64", "s390x", "ppc64le")
# contract arch (as `detect` prints it) -> Kata's spelling
_ARCH = {"amd64": "amd64", "arm64": "arm64", "s390x": "s390x", "ppc64le": "ppc64le"}
_VERSION = re.compile(r"\d+\.\d+\.\d+([.-][0-9A-Za-z.-]+)?")

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
PINNED_SHA256: dict[tuple[str, str, str], str] = {
    ("3.7.0", "amd64", "tar.xz"): "bebf218cafdc082476c7dabbcc5439aee6a41d6dda24dd3cfffbe0a6ae94e23d",
    ("3.28.0", "arm64", "tar.zst"): "f63d54507d1f18635d94475077e4c2330de4d8e05cedf25f7c38f063b0e66a91",
}


@dataclass(frozen=True)
class KataOptions:
    """The settings Kata reads (built once from Settings by `Kata.options`)."""

    version: str = "3.28.0"
    sha256: str | None = None
    handler: str = "kata"
    shims: tuple[KataShim, ...] = field(default_factory=tuple)  # kata_shims (+ the old kata_extra_handlers)
    runtimeclass: str = "kata"
    overhead_memory: str | None = "160Mi"
    overhead_cpu: str | None = "250m"
    tolerations: list[dict[str, Any]] | None = None


def shims_of(settings: Any) -> tuple[KataShim, ...]:
    """`kata_shims`, then the superseded `kata_extra_handlers` (kata-qemu, ...: the same shims by their
    handler names, so old settings files keep working), with `kata_shim_overheads` applied."""
    names = [*getattr(settings, "kata_shims", []), *getattr(settings, "kata_extra_handlers", [])]
    overheads = kata_shims.parse_overheads(getattr(settings, "kata_shim_overheads", []))
    return kata_shims.with_overheads(kata_shims.parse_shims(names), overheads)


def handler(name: str = "kata") -> model.HandlerSpec:
    model.validate_handler_name(name)
    return model.HandlerSpec(name=name, runtime="kata", runtime_type=RUNTIME_TYPE, keys=copy.deepcopy(HANDLER_KEYS))


def shim_handler(shim: KataShim, snapshotter: bool = True) -> model.HandlerSpec:
    """`kata-<shim>`: its own runtime_type (so its own shim link) and configuration file.

    Firecracker's gets `snapshotter = "devmapper"`: it has no shared filesystem and boots the
    rootfs from a block device. containerd 1.7 and 2.x honour a per-handler snapshotter (their
    `config dump` shows it); 1.6 drops the key silently, so there the CRI plugin's own snapshotter
    must be devmapper (eligibility says so)."""
    keys = copy.deepcopy(HANDLER_KEYS)
    if snapshotter and kata_shims.NEEDS_DEVMAPPER in shim.needs:
        keys["snapshotter"] = "devmapper"
    return model.HandlerSpec(name=shim.handler, runtime="kata", runtime_type=shim.runtime_type, keys=keys,
                             options={"ConfigPath": shim.config_path})


def hypervisor_handler(name: str) -> model.HandlerSpec:
    """A shim handler by its name (`kata-qemu`); UsageError for a shim nodeagent does not know."""
    model.validate_handler_name(name)
    if not name.startswith("kata-"):
        raise UsageError(f"unknown Kata shim handler {name!r}", "shim handlers are named kata-<shim>")
    return shim_handler(kata_shims.parse_shims([name])[0])


def eligibility(facts: HostFacts) -> RuntimeVerdict:
    verdict = _base_eligibility(facts)
    verdict.shims = {name: shim_eligibility(shim, facts, verdict.reasons) for name, shim in kata_shims.SHIMS.items()}
    return verdict


def shim_eligibility(shim: KataShim, facts: HostFacts, base_reasons: list[str]) -> RuntimeVerdict:
    """Kata's own rules (KVM, vhost-vsock, arch) plus what this shim needs beyond them."""
    reasons = list(base_reasons)
    ctd = facts.containerd
    confidential = facts.virtualization.confidential
    if kata_shims.NEEDS_DEVMAPPER in shim.needs:
        if not ctd.devmapper_pool:
            reasons.append("Firecracker needs containerd's devmapper snapshotter: configure "
                           'plugins."io.containerd.snapshotter.v1.devmapper" with a pool_name (a thin pool)')
        elif _older_than_17(ctd.version) and ctd.cri_snapshotter != "devmapper":
            reasons.append("containerd before 1.7 ignores a handler's own snapshotter: set the CRI plugin's "
                           'containerd.snapshotter = "devmapper" for Firecracker')
    if kata_shims.NEEDS_TDX in shim.needs and not confidential.get("tdx"):
        reasons.append("Intel TDX is off: kvm_intel's tdx parameter is not Y (/sys/module/kvm_intel/parameters/tdx)")
    if kata_shims.NEEDS_SNP in shim.needs and not confidential.get("sev_snp"):
        reasons.append("AMD SEV-SNP is off: kvm_amd's sev_snp parameter is not Y (/sys/module/kvm_amd/parameters/sev_snp)")
    return RuntimeVerdict(eligible=not reasons, reasons=reasons)


def _older_than_17(version: str | None) -> bool:
    match = re.match(r"(\d+)\.(\d+)", version or "")
    return bool(match) and (int(match.group(1)), int(match.group(2))) < (1, 7)


def _base_eligibility(facts: HostFacts) -> RuntimeVerdict:
    reasons = []
    virt = facts.virtualization
    if not virt.kvm_usable:
        detail = "; ".join(r for r in virt.reasons if "vsock" not in r) or "KVM is not usable"
        reasons.append(f"KVM is not usable ({detail})")
    if not virt.vhost_vsock:
        # the probe's own words: "missing", or present but "unusable" (a node with no driver behind it)
        said = [r for r in virt.reasons if "/dev/vhost-vsock" in r]
        reasons += said or ["host-side vsock (/dev/vhost-vsock) is missing: load the vhost_vsock module"]
    arch = facts.arch
    if arch not in ARCHES:
        reasons.append(f"architecture {arch or 'unknown'} is not supported by Kata ({', '.join(ARCHES)})")
    return RuntimeVerdict(eligible=not reasons, reasons=reasons)


def upstream_arch(arch: str) -> str:
    try:
        return _ARCH[arch]
    except KeyError:
        raise ArtifactError(
            f"Kata publishes no static build for architecture {arch!r}",
            "choose one of: " + ", ".join(_ARCH),
        ) from None


def filename(version: str, arch: str, ext: str) -> str:
    return f"kata-static-{version}-{upstream_arch(arch)}.{ext}"


def pinned(version: str, arch: str, ext: str) -> str | None:
    return PINNED_SHA256.get((version, upstream_arch(arch), ext))


def release_base(mirror: str | None, version: str) -> sources.Base:
    """The directory holding one Kata release's tarballs."""
    return sources.release_base(mirror, f"{UPSTREAM}/{version}", f"kata/{version}")


def mirror_relpath(version: str, arch: str, name: str) -> str:
    return f"kata/{version}/{name}"


def resolve(fetcher, version: str, arch: str, mirror: str | None, flag: Digest | None, pins,
            listing: str = "") -> Release:
    base = release_base(mirror, version)
    for ext in EXTS:
        name = filename(version, arch, ext)
        loc = base.join(name)
        pin = pins.get(mirror_relpath(version, arch, name))
        if pin is not None:  # the operator's word: the mirror's checksum file is not even read
            sidecar = None
        else:
            text = fetcher.read_small(loc.sibling(name + ".sha256"))
            sidecar = parse_sidecar("sha256", text, name, str(loc.sibling(name + ".sha256"))) if text is not None else None
            if sidecar is None and not fetcher.exists(loc):
                continue
        pinned_hex = pinned(version, arch, ext)
        catalog_digest = Digest("sha256", pinned_hex) if pinned_hex else None
        # over plain http the mirror's own .sha256 may only disagree (a conflict), never vouch
        vouching = sidecar if loc.authenticated else None
        candidates = [d for d in (flag, catalog_digest, pin, vouching) if d is not None]
        if not candidates and loc.authenticated and listing:  # upstream's word, asked only when nothing else spoke
            candidates = [release_listing.listed_digest(fetcher, listing, version, name)]
        if not candidates and not loc.authenticated:
            raise ArtifactError(
                f"refusing {mirror_relpath(version, arch, name)} from the plain http mirror {base}: "
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
        return Release("kata", version, arch, LAYOUT, (ArtifactFile(name, candidates[0], loc),))
    raise ArtifactError(
        f"no Kata {version} tarball for {upstream_arch(arch)} at {base} (tried .tar.zst and .tar.xz)",
        "check --kata-version and the mirror layout (kata/<version>/kata-static-<version>-<arch>.tar.zst + .sha256)",
    )


def check_shims(tree: Path, shims: tuple[KataShim, ...], where: str) -> None:
    """Refuse a release (its opt/kata tree) that lacks a chosen shim's binary or configuration.

    Each path must resolve, through any links in the release, to a regular file inside it."""
    top = tree.resolve()
    missing = []
    for shim in shims:
        for rel in shim.release_paths():
            real = (tree / rel).resolve()
            if not real.is_relative_to(top) or not real.is_file():
                missing.append(f"{rel} (shim {shim.name})")
    if missing:
        raise ArtifactError(
            f"the Kata release at {where} lacks what the chosen shims need: {', '.join(missing)}; nothing was changed",
            "choose shims this release ships (kata_shims), or a Kata version that ships them",
        )


def release_tree(entries: list[extract.Entry], archive: str) -> str:
    """The archive's opt/kata directory, refused unless it holds the Kata shim (install and bundle)."""
    tree = extract.find_tree(entries, ("opt", "kata"), archive)
    if not any(e.name == f"{tree}/bin/{SHIM}" and e.kind in ("file", "hardlink") for e in entries):
        raise ArtifactError(
            f"refusing {archive}: it has no {tree}/bin/{SHIM}",
            "the archive is not a Kata static release; use the upstream kata-static tarball",
        )
    return tree


class Kata(Runtime):
    name = "kata"
    title = "Kata"
    digest_flag = "--kata-sha256"

    def options(self, settings: Any) -> KataOptions:
        return KataOptions(
            version=settings.kata_version,
            sha256=settings.kata_sha256,
            handler=settings.kata_handler,
            shims=shims_of(settings),
            runtimeclass=getattr(settings, "kata_runtimeclass", "kata"),
            overhead_memory=getattr(settings, "kata_overhead_memory", None),
            overhead_cpu=getattr(settings, "kata_overhead_cpu", None),
            tolerations=getattr(settings, "kata_tolerations", None),
        )

    def default_options(self) -> KataOptions:
        return KataOptions()

    def version(self, opts: KataOptions) -> str:
        return opts.version

    def operator_digest(self, opts: KataOptions) -> str | None:
        return opts.sha256

    def handler_specs(self, opts: KataOptions) -> list[model.HandlerSpec]:
        return [handler(opts.handler), *(shim_handler(s) for s in opts.shims)]

    def handlers_named(self, name: str) -> list[model.HandlerSpec]:
        specs = []
        for factory in (handler, hypervisor_handler):
            try:
                specs.append(factory(name))
            except Exception:
                continue
        shim = kata_shims.SHIMS.get(kata_shims.shim_name(name)) if name.startswith("kata-") else None
        if shim is not None and kata_shims.NEEDS_DEVMAPPER in shim.needs:
            specs.append(shim_handler(shim, snapshotter=False))  # as nodeagent wrote it before it set one
        return specs

    def eligibility(self, facts: HostFacts) -> RuntimeVerdict:
        return eligibility(facts)

    def variant_verdicts(self, facts: HostFacts, opts: KataOptions) -> dict[str, RuntimeVerdict]:
        base = _base_eligibility(facts).reasons
        return {s.handler: shim_eligibility(s, facts, base) for s in opts.shims}

    def check_version(self, version: str) -> str:
        if not _VERSION.fullmatch(version):
            raise ArtifactError(f"invalid kata version {version!r}", "pass a release version such as 3.28.0")
        return version

    def upstream_arch(self, arch: str) -> str:
        return upstream_arch(arch)

    def mirror_relpath(self, version: str, arch: str, name: str) -> str:
        return mirror_relpath(version, arch, name)

    def pinned_layouts(self, version: str, arch: str) -> list[list[str]]:
        return [[mirror_relpath(version, arch, filename(version, arch, ext))] for ext in EXTS]

    def builtin_digest(self, version: str, arch: str) -> bool:
        return any(pinned(version, arch, e) for e in EXTS)

    def resolve(self, fetcher, version: str, arch: str, mirror: str | None, flag: Digest | None, pins,
                listing: str = "") -> Release:
        return resolve(fetcher, version, arch, mirror, flag, pins, listing)

    def is_archive(self, release: Release) -> bool:
        return True

    def unpack(self, release: Release, cache, staging: Path, limits: extract.Limits) -> Path:
        f = release.files[0]
        raw = staging / "raw"
        raw.mkdir()
        entries = extract.extract(cache.path_for(f.digest), raw, limits, f.name, host_trees=(LINK,), digest=f.digest)
        tree = release_tree(entries, f.name)
        # only opt/kata is installed: its links must resolve inside it, chains included
        tree_links.check_tree(raw / tree, f.name, host_trees=(LINK,))
        return raw / tree

    def check_archive(self, release: Release, path: Path, limits: extract.Limits) -> None:
        name = release.files[0].name
        entries = extract.scan(path, limits, name, host_trees=(LINK,))
        tree = release_tree(entries, name)
        tree_links.check_entries(entries, tree, name, host_trees=(LINK,))

    def links(self, base: str, opts: KataOptions | None = None) -> dict[str, str]:
        shims = opts.shims if opts is not None else ()
        return {LINK: base, f"/usr/local/bin/{SHIM}": SHIM_TARGET, **{s.link: s.shim_target for s in shims}}

    def all_links(self, base: str) -> dict[str, str]:
        return self.links(base, KataOptions(shims=tuple(kata_shims.SHIMS.values())))

    def owns_link(self, link: str, target: str) -> bool:
        return (link.endswith(SHIM) and target == SHIM_TARGET) or kata_shims.owns_link(link, target)

    def check_release(self, tree: Path, opts: KataOptions, where: str) -> None:
        check_shims(tree, opts.shims, where)

    def runtime_classes(self, opts: KataOptions) -> list[RuntimeClassSpec]:
        main = RuntimeClassSpec(opts.runtimeclass, opts.handler, self.name, opts.overhead_memory,
                                opts.overhead_cpu, opts.tolerations)
        return [main, *(RuntimeClassSpec(s.handler, s.handler, s.handler, s.overhead_memory, s.overhead_cpu,
                                         opts.tolerations) for s in opts.shims)]

    def verify(self, ctx: VerifyContext, opts: KataOptions):
        """The default handler's sandbox, then one per shim (`detail["shims"]`): ok only if all are."""
        check = self._verify_handler(ctx, opts.handler)
        if not opts.shims or check.skipped:
            return check
        shims = {s.handler: self._verify_handler(ctx, s.handler) for s in opts.shims}
        check.detail["shims"] = {h: c.as_dict() for h, c in shims.items()}
        failed = [f"{h}: {c.reason}" for h, c in shims.items() if not c.ok]
        if failed:
            check.ok = False
            check.reason = "; ".join(([f"{opts.handler}: {check.reason}"] if check.reason else []) + failed)
        return check

    def _verify_handler(self, ctx: VerifyContext, handler_name: str):
        from nodeagent import verify

        socket = ctx.socket()
        installed, why = _installed(handler_name, socket)
        skip = verify.RuntimeCheck(self.name, "cri", host_kernel=verify.host_kernel(ctx.host),
                                   detail={"handler": handler_name, "socket": socket})
        if not installed:
            skip.reason, skip.skipped = why, not ctx.explicit
            return skip
        if not ctx.image:
            skip.reason = "Kata is checked through CRI and needs an image: pass --image (one present on the node)"
            skip.skipped = not ctx.explicit
            return skip
        return verify.verify_cri(self.name, handler_name, socket, ctx.image, ctx.host, timeout=ctx.timeout)


def _installed(handler_name: str, socket: str) -> tuple[bool, str]:
    """Whether containerd serves the Kata handler (else why not)."""
    from nodeagent.containerd.cri import cri_status

    status = cri_status(socket, timeout=5)
    if status.ok:
        if handler_name in status.handlers:
            return True, ""
        return False, f"containerd does not serve a {handler_name!r} handler (Kata is not installed)"
    return False, f"cannot ask containerd which handlers it serves: {status.reason}"


RUNTIME = Kata()
