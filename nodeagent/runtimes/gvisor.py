"""gVisor: the runsc handler, runsc.toml, its release layout on storage.googleapis.com, `runsc do`.

Release layout: `<base>/<latest|YYYYMMDD[.N]>/<x86_64|aarch64>/` with `gvisor.tar.bz2` + `.sha512`
in recent releases, and `runsc` + `containerd-shim-runsc-v1` (+ `.sha512` each) in older ones;
installers that only know the old names get 404s now (gvisor#13718), so the tarball is tried
first and the two files on 404.
"""

from __future__ import annotations

import copy
import os
import posixpath
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import structlog

from nodeagent import run as run_mod
from nodeagent.artifacts import extract, place, sources
from nodeagent.artifacts.digest import Digest, parse_sidecar
from nodeagent.artifacts.release import ArtifactFile, Release
from nodeagent.containerd import model, tomlparse
from nodeagent.detect.eligibility import kernel_tuple
from nodeagent.errors import ArtifactError, CommandFailed, ConfigError, UsageError
from nodeagent.facts import HostFacts, RuntimeVerdict
from nodeagent.fsutil import TEMP_PREFIX
from nodeagent.runtimes import runsc_toml
from nodeagent.runtimes.base import ConfigContext, ConfigFile, Runtime, RuntimeClassSpec, VerifyContext

log = structlog.get_logger(__name__)

RUNTIME_TYPE = "io.containerd.runsc.v1"
OPTIONS_TYPE_URL = "io.containerd.runsc.v1.options"
# gVisor's mount hints (`dev.gvisor.spec.mount.*` pod annotations) reach the shim only through the
# handler's pod_annotations; without them, inotify across containers on a shared volume does not
# work (https://gvisor.dev/docs/user_guide/containerd/configuration/). gVisor's installers set it.
HANDLER_KEYS = {"pod_annotations": ["dev.gvisor.*"]}
RUNSC_CONFIG_PATH = runsc_toml.PATH
UPSTREAM = "https://storage.googleapis.com/gvisor/releases/release"
TARBALL = "gvisor.tar.bz2"
RUNSC = "runsc"
SHIM = "containerd-shim-runsc-v1"
TARBALL_LAYOUT = "gvisor-tarball"
FILES_LAYOUT = "gvisor-files"

ARCHES = ("amd64", "arm64")
# gVisor's install guide: "requires Linux 4.14.77+" (https://gvisor.dev/docs/user_guide/install/)
MIN_KERNEL = (4, 14, 77)
# contract arch (as `detect` prints it) -> gVisor's spelling
_ARCH = {"amd64": "x86_64", "arm64": "aarch64"}
# Used with fullmatch: `$` also matches before a final newline, so `20240729.0\n` passed (L5).
_VERSION = re.compile(r"latest|\d{8}(\.\d+)?")


@dataclass(frozen=True)
class GvisorOptions:
    """The settings gVisor reads (built once from Settings by `GVisor.options`)."""

    version: str = "latest"
    handler: str = "runsc"
    platform: str | None = None  # None: chosen by detection
    runtimeclass: str = "gvisor"
    overhead_memory: str | None = "64Mi"
    overhead_cpu: str | None = "100m"
    tolerations: list[dict[str, Any]] | None = None
    debug_log: str | None = None  # runsc's debug-log; None: no debug logging
    net_raw: bool = False


def check_options(opts: GvisorOptions) -> None:
    """Refuse runsc.toml options runsc would misread (UsageError; planning reports it as bad input)."""
    if opts.platform is not None and opts.platform not in runsc_toml.PLATFORMS:
        raise UsageError(f"unknown gVisor platform {opts.platform!r}",
                         "set gvisor_platform to one of: " + ", ".join(runsc_toml.PLATFORMS) + " (or leave it unset)")
    path = opts.debug_log
    if path is None:
        return
    if not path.startswith("/") or any(ord(c) < 32 or ord(c) == 127 for c in path) or "/../" in f"{path}/":
        raise UsageError(f"gvisor_debug_log {path!r} is not an absolute path",
                         "pass an absolute directory such as /var/log/runsc/ (the trailing / gives one file per command)")


def check_runsc_toml(raw: bytes | None, path: str, facts: HostFacts,
                     handler_table: dict[str, Any] | None = None) -> tuple[str, str, str | None]:
    """doctor's verdict on runsc.toml: (ok|warn|fail, summary, hint). It must parse, and the
    platform it names must be able to run on this node (kvm needs a /dev/kvm that answers).
    A runsc handler (`handler_table`, as containerd loads it) without gVisor's pod_annotations
    is a warning: pods' mount hints never reach the shim."""
    if raw is None:
        return "ok", f"gVisor not configured yet ({path} absent)", None
    try:
        data = tomlparse.parse(raw, path)
    except ConfigError as exc:
        return "fail", exc.message, f"fix the syntax of {path}: gVisor's shim cannot read it"
    table = data.get("runsc_config", {})
    if not isinstance(table, dict):
        return "fail", f"{path}: runsc_config is not a table", f"make it a [runsc_config] table in {path}"
    platform = table.get("platform", "systrap")  # runsc's default platform since 2023
    fix = "set gvisor_platform to systrap (or unset it to let detection choose), then run `nodeagent install`"
    if platform not in runsc_toml.PLATFORMS:
        return "fail", f"{path} names platform {platform!r}, which runsc does not have", fix
    virt = facts.virtualization
    if platform == "kvm" and not virt.kvm_usable:
        why = "; ".join(r for r in virt.reasons if "vsock" not in r) or "KVM is not usable"
        return "fail", f"{path} forces platform kvm, but /dev/kvm does not answer here ({why}): gVisor pods cannot start", \
            fix + "; or make /dev/kvm usable"
    summary = f"{path} parses; platform {platform} can run here"
    if table.get("debug-log"):
        summary += f", debug logs to {table['debug-log']}"
    if str(table.get("net-raw", "false")).lower() == "true":
        summary += ", raw sockets allowed"
    if platform == "kvm" and virt.in_vm:
        return "warn", summary + " (nested: KVM inside a VM)", "systrap is faster and supported in a VM: " + fix
    wanted = HANDLER_KEYS["pod_annotations"]
    if handler_table is not None and not set(wanted) <= set(handler_table.get("pod_annotations") or []):
        return "warn", summary + f"; but the runsc handler lacks pod_annotations = {wanted}, so gVisor's mount hints are dropped", \
            "add the key to the runsc handler in containerd's config, or let nodeagent own it: `nodeagent install --force`"
    return "ok", summary, None


def handler(name: str = "runsc") -> model.HandlerSpec:
    """The runsc handler table of the contract: options point the shim at runsc.toml."""
    model.validate_handler_name(name)
    return model.HandlerSpec(
        name=name,
        runtime="gvisor",
        runtime_type=RUNTIME_TYPE,
        keys=copy.deepcopy(HANDLER_KEYS),
        adoptable_without=tuple(HANDLER_KEYS),  # gVisor's docs' runsc table predates the key
        options={"TypeUrl": OPTIONS_TYPE_URL, "ConfigPath": RUNSC_CONFIG_PATH},
    )


def _handler_before_pod_annotations(name: str) -> model.HandlerSpec:
    """The runsc table nodeagent wrote until 2026-12 (no pod_annotations): recognised as ours."""
    spec = handler(name)
    return model.HandlerSpec(name=spec.name, runtime=spec.runtime, runtime_type=spec.runtime_type, options=spec.options)


def platform_of(facts: HostFacts, override: str | None) -> str:
    """The runsc platform: the operator's, else detection's choice, else systrap."""
    if override:
        return override
    verdict = facts.verdict("gvisor")
    return (verdict.platform if verdict else None) or "systrap"


def eligibility(facts: HostFacts) -> RuntimeVerdict:
    reasons = []
    arch = facts.arch
    if arch not in ARCHES:
        reasons.append(f"architecture {arch or 'unknown'} is not supported by gVisor (amd64, arm64 only)")
    kernel = kernel_tuple(facts.kernel)
    minimum = ".".join(map(str, MIN_KERNEL))
    if kernel is None:
        reasons.append(f"kernel release unknown; gVisor needs Linux {minimum} or newer")
    elif kernel < MIN_KERNEL:
        reasons.append(f"kernel {facts.kernel} is older than gVisor's minimum {minimum}")
    virt = facts.virtualization
    # KVM platform only on bare metal: in a VM it runs nested and gVisor recommends systrap there.
    if virt.kvm_usable and not virt.in_vm:
        platform, why = "kvm", "bare metal with usable KVM"
    elif virt.kvm_usable:
        platform, why = "systrap", "KVM works but this host is a VM (nested): systrap is faster and supported"
    else:
        platform, why = "systrap", "KVM is not usable"
    return RuntimeVerdict(eligible=not reasons, reasons=reasons, platform=platform, platform_reason=why)


def upstream_arch(arch: str) -> str:
    try:
        return _ARCH[arch]
    except KeyError:
        raise ArtifactError(
            f"gVisor publishes no build for architecture {arch!r}",
            "gVisor supports amd64 and arm64; choose one of those with --arch",
        ) from None


def release_dir(version: str, arch: str) -> str:
    """The release directory relative to a base: `<version>/<x86_64|aarch64>`."""
    return f"{version}/{upstream_arch(arch)}"


def release_base(mirror: str | None, version: str, arch: str) -> sources.Base:
    """The directory holding one gVisor release for one arch."""
    rel = release_dir(version, arch)
    return sources.release_base(mirror, f"{UPSTREAM}/{rel}", f"gvisor/{rel}")


def mirror_relpath(version: str, arch: str, name: str) -> str:
    return f"gvisor/{release_dir(version, arch)}/{name}"


def _pinned_release(version: str, arch: str, base: sources.Base, pins) -> Release | None:
    """The release as the pins describe it, without asking the source for checksums."""
    for layout, names in ((TARBALL_LAYOUT, (TARBALL,)), (FILES_LAYOUT, (RUNSC, SHIM))):
        digests = [pins.get(mirror_relpath(version, arch, n)) for n in names]
        if all(digests):
            files = tuple(ArtifactFile(n, d, base.join(n)) for n, d in zip(names, digests))
            return Release("gvisor", version, arch, layout, files)
    return None


def resolve(fetcher, version: str, arch: str, mirror: str | None, pins) -> Release:
    base = release_base(mirror, version, arch)
    pinned = _pinned_release(version, arch, base, pins)
    if pinned is not None:
        return pinned
    tarball = base.join(TARBALL)
    text = fetcher.read_small(tarball.sibling(TARBALL + ".sha512"))
    if text is not None:
        digest = parse_sidecar("sha512", text, TARBALL, str(tarball.sibling(TARBALL + ".sha512")))
        return Release("gvisor", version, arch, TARBALL_LAYOUT, (ArtifactFile(TARBALL, digest, tarball),))
    # Older releases: separate files (installers that only know these now hit 404s, gvisor#13718).
    found, missing = [], []
    for name in (RUNSC, SHIM):
        loc = base.join(name)
        text = fetcher.read_small(loc.sibling(name + ".sha512"))
        if text is None:
            missing.append(name)
        else:
            found.append(ArtifactFile(name, parse_sidecar("sha512", text, name, str(loc.sibling(name + ".sha512"))), loc))
    if not missing:
        return Release("gvisor", version, arch, FILES_LAYOUT, tuple(found))
    for name in (TARBALL, *missing):
        if fetcher.exists(base.join(name)):
            raise ArtifactError(
                f"{base.join(name)} has no {name}.sha512 digest file; refusing an unverifiable download",
                "publish the digest file next to it (`sha512sum FILE > FILE.sha512`) or rebuild the mirror with `nodeagent bundle`",
            )
    raise ArtifactError(
        f"no gVisor release {version} for {upstream_arch(arch)} at {base}",
        "check --gvisor-version and the mirror layout (gvisor/<version>/<x86_64|aarch64>/gvisor.tar.bz2 + .sha512)",
    )


def _stage_tarball(release: Release, cache, staging: Path, limits: extract.Limits) -> Path:
    f = release.files[0]
    raw = staging / "raw"
    raw.mkdir()
    # hashed while extracting: the cache entry may have changed since it was verified
    entries = extract.extract(cache.path_for(f.digest), raw, limits, f.name, digest=f.digest)
    runsc = extract.find_unique(entries, RUNSC, f.name)
    shim = extract.find_unique(entries, SHIM, f.name)
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
    for name in (RUNSC, SHIM):
        os.chmod(out / name, 0o755)
    return out


def _stage_files(release: Release, cache, staging: Path) -> Path:
    out = staging / "out"
    out.mkdir()
    for f in release.files:
        # verified by Cache.verify just before (hashed now or stamped unchanged): no second hash
        place.link_or_copy(cache.path_for(f.digest), out / f.name)
        os.chmod(out / f.name, 0o755)
    return out


def runsc_release(runsc: Path) -> str | None:
    """`runsc --version` says e.g. "runsc version release-20240729.0"; a foreign arch cannot run.

    Called only on a runsc whose archive matched its digest. Still, it is a downloaded binary:
    it runs from a root-owned copy as nobody, without capabilities or network (security review
    H1). Where that sandbox cannot be had (no unshare/setpriv, or user namespaces refused), the release
    stays unnamed (`latest-<digest>`) rather than running it as root.
    """
    try:
        with tempfile.TemporaryDirectory(prefix=TEMP_PREFIX) as tmp:
            os.chmod(tmp, 0o755)  # the nobody user may enter it, not write to it
            copy = Path(tmp) / RUNSC
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


def _valid_specs(factory: Callable[[str], model.HandlerSpec], name: str) -> list[model.HandlerSpec]:
    try:
        return [factory(name)]
    except Exception:
        return []


class GVisor(Runtime):
    name = "gvisor"
    title = "gVisor"
    config_roles = ("runsc",)

    def options(self, settings: Any) -> GvisorOptions:
        return GvisorOptions(
            version=settings.gvisor_version,
            handler=settings.gvisor_handler,
            platform=settings.gvisor_platform,
            runtimeclass=getattr(settings, "gvisor_runtimeclass", "gvisor"),
            overhead_memory=getattr(settings, "gvisor_overhead_memory", None),
            overhead_cpu=getattr(settings, "gvisor_overhead_cpu", None),
            tolerations=getattr(settings, "gvisor_tolerations", None),
            debug_log=settings.gvisor_debug_log or None,
            net_raw=settings.gvisor_net_raw,
        )

    def default_options(self) -> GvisorOptions:
        return GvisorOptions()

    def version(self, opts: GvisorOptions) -> str:
        return opts.version

    def handler_specs(self, opts: GvisorOptions) -> list[model.HandlerSpec]:
        check_options(opts)
        return [handler(opts.handler)]

    def handlers_named(self, name: str) -> list[model.HandlerSpec]:
        # nodeagent before pod_annotations wrote the same table without it: still ours to remove
        return _valid_specs(handler, name) + _valid_specs(_handler_before_pod_annotations, name)

    def config_files(self, current: Callable[[str], bytes | None], ctx: ConfigContext,
                     opts: GvisorOptions) -> list[ConfigFile]:
        raw = current(RUNSC_CONFIG_PATH)
        new = runsc_toml.render(raw, platform_of(ctx.facts, opts.platform), ctx.systemd_cgroup, RUNSC_CONFIG_PATH,
                                net_raw=opts.net_raw, debug_log=opts.debug_log)
        return [ConfigFile(RUNSC_CONFIG_PATH, "runsc", new)]

    def eligibility(self, facts: HostFacts) -> RuntimeVerdict:
        return eligibility(facts)

    def check_version(self, version: str) -> str:
        if not _VERSION.fullmatch(version):
            raise ArtifactError(f"invalid gvisor version {version!r}", "pass a release version such as latest or 20240729.0")
        return version

    def upstream_arch(self, arch: str) -> str:
        return upstream_arch(arch)

    def mirror_relpath(self, version: str, arch: str, name: str) -> str:
        return mirror_relpath(version, arch, name)

    def pinned_layouts(self, version: str, arch: str) -> list[list[str]]:
        return [[mirror_relpath(version, arch, TARBALL)], [mirror_relpath(version, arch, n) for n in (RUNSC, SHIM)]]

    def resolve(self, fetcher, version: str, arch: str, mirror: str | None, flag: Digest | None, pins,
                listing: str = "") -> Release:
        return resolve(fetcher, version, arch, mirror, pins)  # gVisor publishes .sha512 files: no listing

    def is_archive(self, release: Release) -> bool:
        return release.layout != FILES_LAYOUT

    def unpack(self, release: Release, cache, staging: Path, limits: extract.Limits) -> Path:
        if release.layout == FILES_LAYOUT:
            return _stage_files(release, cache, staging)
        return _stage_tarball(release, cache, staging, limits)

    def check_archive(self, release: Release, path: Path, limits: extract.Limits) -> None:
        if release.layout == TARBALL_LAYOUT:
            entries = extract.scan(path, limits, release.files[0].name)
            extract.find_unique(entries, RUNSC, release.files[0].name)
            extract.find_unique(entries, SHIM, release.files[0].name)

    def release_name(self, release: Release, tree: Path) -> str:
        if release.version == "latest":
            return runsc_release(tree / RUNSC) or f"latest-{release.files[0].digest.hex[:12]}"
        return release.version

    def links(self, base: str, opts: Any = None) -> dict[str, str]:
        return {f"/usr/local/bin/{n}": f"{base}/{n}" for n in (RUNSC, SHIM)}

    def runtime_classes(self, opts: GvisorOptions) -> list[RuntimeClassSpec]:
        return [RuntimeClassSpec(opts.runtimeclass, opts.handler, self.name, opts.overhead_memory,
                                 opts.overhead_cpu, opts.tolerations)]

    def verify(self, ctx: VerifyContext, opts: GvisorOptions):
        from nodeagent import verify

        check = verify.verify_gvisor(ctx.host, platform=opts.platform, timeout=ctx.timeout)
        if check.detail.get("runsc") is None and not ctx.explicit:
            check.skipped = True
        return check


RUNTIME = GVisor()
