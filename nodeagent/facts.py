"""Typed host facts: what one detection pass found, as dataclasses callers read by attribute.

`to_json()` prints the `detect` contract (INTERFACE.md) plus its extra keys, in today's key
order: tests/integration/test_json_unchanged.py compares it byte-for-byte with goldens.
`from_json()` reads that shape back, filling what a partial dict leaves out with the field's
default (facts written by hand, e.g. "containerd 2.1, nothing else known").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


def _from_mapping(cls: type[T], data: dict[str, Any] | None) -> T:
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in (data or {}).items() if k in names})


def _plain(obj: Any) -> dict[str, Any]:
    """Fields in declaration order, shallow: nested facts serialise themselves."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


@dataclass
class Virtualization:
    """CPU virtualization, KVM and vsock as the probes found them; `reasons` say why not."""

    in_vm: bool | None = None
    cpu_flag: str | None = None
    kvm_device: bool = False
    kvm_usable: bool = False
    kvm_api_version: int | None = None
    kvm_module: str | None = None
    nested: bool | None = None
    vhost_vsock: bool = False
    kvm_create_vm: bool | None = None
    nested_source: str | None = None
    in_vm_evidence: list[str] = field(default_factory=list)
    vhost_vsock_module: bool | None = None
    guest_vsock: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    # the KVM modules' confidential-VM switches ({"tdx": bool, "sev_snp": bool}; detect/confidential.py)
    confidential: dict[str, bool] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return _plain(self)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> "Virtualization":
        return _from_mapping(cls, data)


@dataclass
class ContainerdFacts:
    """containerd on the host: binary, version, config chain, socket, flavor (detect/containerd.py)."""

    found: bool = False
    version: str | None = None
    config_path: str | None = None
    config_version: int | None = None
    socket: str | None = None
    flavor: str = "containerd"
    binary: str | None = None
    binary_dir: str | None = None
    running: bool = False
    pid: int | None = None
    daemon_path: list[str] = field(default_factory=list)
    config_exists: bool = False
    config_error: str | None = None
    config_imports: list[str] = field(default_factory=list)
    config_template: str | None = None
    config_template_candidates: list[str] = field(default_factory=list)
    config_dropin_dir: str | None = None
    config_rendered: str | None = None
    systemd_cgroup: bool | None = None
    handlers: list[str] = field(default_factory=list)
    devmapper_pool: str | None = None  # the devmapper snapshotter's pool_name (Kata's fc shim needs one)
    cri_snapshotter: str | None = None  # the CRI plugin's default snapshotter (None: containerd's own)
    flavor_evidence: list[str] = field(default_factory=list)
    unit: str | None = None
    reasons: list[str] = field(default_factory=list)
    # processes calling themselves containerd that discovery ignored (detect.trust.describe's dicts)
    untrusted_processes: list[dict[str, Any]] = field(default_factory=list)
    untrusted_socket: str | None = None

    def to_json(self) -> dict[str, Any]:
        return _plain(self)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> "ContainerdFacts":
        return _from_mapping(cls, data)


@dataclass
class RuntimeVerdict:
    """Whether this host can run one runtime, why not, and (gVisor) the platform to use."""

    eligible: bool
    reasons: list[str] = field(default_factory=list)
    platform: str | None = None
    platform_reason: str | None = None
    # a verdict per variant of the runtime an operator may choose (Kata's shims), None: no variants
    shims: dict[str, "RuntimeVerdict"] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"eligible": self.eligible}
        if self.platform is not None:  # only runtimes with platforms carry the keys
            out.update(platform=self.platform, platform_reason=self.platform_reason)
        out["reasons"] = self.reasons
        if self.shims is not None:
            out["shims"] = {name: verdict.to_json() for name, verdict in self.shims.items()}
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RuntimeVerdict":
        data = {"eligible": False, **data}
        if data.get("shims") is not None:
            data["shims"] = {n: cls.from_json(v) for n, v in data["shims"].items()}
        return _from_mapping(cls, data)


@dataclass
class HostFacts:
    """One detection pass: the contract's keys first, then the extras doctor/install/labels use."""

    arch: str | None = None
    kernel: str | None = None
    virtualization: Virtualization = field(default_factory=Virtualization)
    containerd: ContainerdFacts = field(default_factory=ContainerdFacts)
    systemd: bool = False
    runtimes: dict[str, RuntimeVerdict] = field(default_factory=dict)
    systemd_installed: bool = False
    cgroup_version: int | None = None
    cgroup_mode: str | None = None
    machine: str | None = None
    root: str = "/"
    root_is_live: bool = False
    cpu_reasons: list[str] = field(default_factory=list)
    # host files that could not be read (other than missing ones): "path: why (ERRNO)"
    read_errors: list[str] = field(default_factory=list)
    unreliable_reads: list[str] = field(default_factory=list)

    def verdict(self, runtime: str) -> RuntimeVerdict | None:
        return self.runtimes.get(runtime)

    def to_json(self) -> dict[str, Any]:
        out = _plain(self)
        out["virtualization"] = self.virtualization.to_json()
        out["containerd"] = self.containerd.to_json()
        out["runtimes"] = {name: verdict.to_json() for name, verdict in self.runtimes.items()}
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> "HostFacts":
        data = dict(data or {})
        data["virtualization"] = Virtualization.from_json(data.get("virtualization"))
        data["containerd"] = ContainerdFacts.from_json(data.get("containerd"))
        data["runtimes"] = {n: RuntimeVerdict.from_json(v) for n, v in data.get("runtimes", {}).items()}
        return _from_mapping(cls, data)
