"""The Kata shims nodeagent can register: one handler, shim link, config file and overhead each.

A Kata release is one static tarball holding two shim binaries (the Go shim in
`opt/kata/bin/`, the Rust "runtime-rs" shim in `opt/kata/runtime-rs/bin/`, the default
from Kata 4.0) and a configuration file per hypervisor flavour. containerd finds a shim by
name on its PATH (`io.containerd.kata-qemu.v2` -> `containerd-shim-kata-qemu-v2`), so each
shim gets its own link to the binary it needs and its own handler whose `ConfigPath` names
its configuration. Which shims use the Rust binary and where their configurations live
follows kata-deploy's installer (tools/packaging/kata-deploy/scripts/kata-deploy.sh,
`get_kata_containers_runtime_path` / `get_kata_containers_config_path`); the default overheads
are those of kata-deploy's RuntimeClasses (tools/packaging/kata-deploy/runtimeclasses/
kata-runtimeClasses.yaml).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from nodeagent.errors import UsageError

KATA_ROOT = "/opt/kata"
DEFAULTS_DIR = f"{KATA_ROOT}/share/defaults/kata-containers"
GO_SHIM = f"{KATA_ROOT}/bin/containerd-shim-kata-v2"
RUST_SHIM = f"{KATA_ROOT}/runtime-rs/bin/containerd-shim-kata-v2"
LINK_DIR = "/usr/local/bin"
OVERHEAD_SOURCE = "kata-deploy runtimeclasses/kata-runtimeClasses.yaml"

# What a shim needs beyond KVM and vhost-vsock (which every Kata shim needs).
NEEDS_DEVMAPPER = "devmapper"  # Firecracker has no virtio-fs: it boots container rootfs from block devices
NEEDS_TDX = "tdx"  # kvm_intel loaded with tdx=Y
NEEDS_SNP = "snp"  # kvm_amd loaded with sev_snp=Y


@dataclass(frozen=True)
class KataShim:
    """One Kata shim: `kata-<name>` handler, `containerd-shim-kata-<name>-v2` link."""

    name: str
    rust: bool  # runtime-rs shim (Rust binary, configuration under runtime-rs/)
    overhead_memory: str
    overhead_cpu: str
    needs: tuple[str, ...] = ()
    overhead_source: str = OVERHEAD_SOURCE

    @property
    def handler(self) -> str:
        return f"kata-{self.name}"

    @property
    def runtime_type(self) -> str:
        return f"io.containerd.kata-{self.name}.v2"

    @property
    def shim_binary(self) -> str:
        return f"containerd-shim-kata-{self.name}-v2"

    @property
    def link(self) -> str:
        """Where containerd finds this shim (a host path, on its default PATH)."""
        return f"{LINK_DIR}/{self.shim_binary}"

    @property
    def shim_target(self) -> str:
        """Host-absolute path of the binary this shim's link points to (through /opt/kata)."""
        return RUST_SHIM if self.rust else GO_SHIM

    @property
    def config_path(self) -> str:
        subdir = "runtime-rs/" if self.rust else ""
        return f"{DEFAULTS_DIR}/{subdir}configuration-{self.name}.toml"

    def release_paths(self) -> tuple[str, str]:
        """The shim binary and configuration this shim needs, relative to /opt/kata."""
        return (self.shim_target.removeprefix(KATA_ROOT + "/"), self.config_path.removeprefix(KATA_ROOT + "/"))


_M160, _M130, _M2G, _C250, _C1 = "160Mi", "130Mi", "2048Mi", "250m", "1"

SHIMS: dict[str, KataShim] = {s.name: s for s in (
    KataShim("qemu", False, _M160, _C250),
    KataShim("clh", False, _M130, _C250),
    KataShim("fc", False, _M130, _C250, (NEEDS_DEVMAPPER,)),
    KataShim("qemu-tdx", False, _M2G, _C1, (NEEDS_TDX,)),
    KataShim("qemu-snp", False, _M2G, _C1, (NEEDS_SNP,)),
    KataShim("stratovirt", False, _M130, _C250),
    KataShim("dragonball", True, _M130, _C250),
    KataShim("cloud-hypervisor", True, _M130, _C250),
    KataShim("qemu-runtime-rs", True, _M160, _C250),
)}

# Kubernetes resource quantities as RuntimeClass overheads use them (no exponents, no negatives).
_MEMORY = re.compile(r"[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?")
_CPU = re.compile(r"[0-9]+(\.[0-9]+)?m?")


def shim_name(raw: str) -> str:
    """`kata-qemu` and `qemu` both name the qemu shim (the old kata_extra_handlers spelling)."""
    return raw.strip().removeprefix("kata-")


def parse_shims(names: list[str] | tuple[str, ...]) -> tuple[KataShim, ...]:
    """The shims a `kata_shims` list names, in its order, each once; unknown names are refused."""
    out: list[KataShim] = []
    for raw in names:
        name = shim_name(raw)
        if name not in SHIMS:
            raise UsageError(f"unknown Kata shim {raw!r} in kata_shims",
                             "choose from: " + ", ".join(SHIMS) + " (comma-separated; a kata- prefix is accepted)")
        if SHIMS[name] not in out:
            out.append(SHIMS[name])
    return tuple(out)


def parse_overheads(entries: list[str] | tuple[str, ...]) -> dict[str, tuple[str, str | None]]:
    """`kata_shim_overheads` entries `<shim>=<memory>[/<cpu>]` -> {shim: (memory, cpu or None)}."""
    out: dict[str, tuple[str, str | None]] = {}
    for raw in entries:
        name, sep, value = raw.partition("=")
        name = shim_name(name)
        memory, _, cpu = value.strip().partition("/")
        memory, cpu = memory.strip(), cpu.strip()
        if not sep or name not in SHIMS or not _MEMORY.fullmatch(memory) or ("/" in value and not _CPU.fullmatch(cpu)):
            raise UsageError(
                f"invalid kata_shim_overheads entry {raw!r}",
                "write <shim>=<memory>[/<cpu>] with a known shim and Kubernetes quantities, e.g. qemu=200Mi/300m",
            )
        out[name] = (memory, cpu or None)
    return out


def with_overheads(shims: tuple[KataShim, ...], overheads: dict[str, tuple[str, str | None]]) -> tuple[KataShim, ...]:
    """The shims with the operator's overheads where given (the source then says so)."""
    out = []
    for shim in shims:
        if shim.name in overheads:
            memory, cpu = overheads[shim.name]
            shim = replace(shim, overhead_memory=memory, overhead_cpu=cpu or shim.overhead_cpu,
                           overhead_source="kata_shim_overheads")
        out.append(shim)
    return tuple(out)


def owns_link(link: str, target: str) -> bool:
    """A shim link exactly as nodeagent makes it (name and target both match a known shim)."""
    return any(link == s.link and target == s.shim_target for s in SHIMS.values())
