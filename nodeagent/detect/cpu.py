"""CPU and kernel facts: architecture, kernel release, virtualization flags, "am I a VM?".

Works the same on the live host and on a captured tree: the architecture comes from
/proc/sys/kernel/arch (what `uname -m` prints; newer kernels expose it), else from the
live `uname`, else it is inferred from /proc/cpuinfo's per-architecture layout.
"""

from __future__ import annotations

import os
import re
from typing import Any

from nodeagent.host import HostRoot

# `uname -m` -> the names Kubernetes (GOARCH) and artifact catalogs use
GOARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "s390x": "s390x",
    "ppc64le": "ppc64le",
    "riscv64": "riscv64",
    "armv7l": "arm",
    "armv8l": "arm",
    "i686": "386",
    "i386": "386",
}

# DMI vendor / product strings that only virtual machines report (systemd-detect-virt's list, abridged)
_VM_DMI = (
    "qemu", "kvm", "vmware", "virtualbox", "innotek", "xen", "bochs", "parallels", "bhyve",
    "openstack", "google compute engine", "firecracker", "cloud hypervisor", "virtual machine",
    "hvm domu", "apple virtualization",
)


def _first_line(text: str | None) -> str | None:
    if text is None:
        return None
    line = text.strip().splitlines()[0].strip() if text.strip() else ""
    return line or None


def _machine_from_cpuinfo(cpuinfo: str) -> str | None:
    """Infer `uname -m` from /proc/cpuinfo's per-architecture layout (captured trees)."""
    keys = {line.split(":", 1)[0].strip().lower() for line in cpuinfo.splitlines() if ":" in line}
    text = cpuinfo.lower()
    if "vendor_id" in keys and "ibm/s390" in text:
        return "s390x"
    if "flags" in keys and "vendor_id" in keys:
        return "x86_64"
    if "cpu architecture" in keys and "features" in keys:
        arch_line = re.search(r"^cpu architecture\s*:\s*(\S+)", text, re.M)
        return "aarch64" if arch_line and arch_line.group(1) in ("8", "aarch64") else "armv7l"
    if "cpu" in keys and re.search(r"^cpu\s*:\s*power", text, re.M):
        return "ppc64le"
    if "isa" in keys and "rv64" in text:
        return "riscv64"
    return None


def cpu_flags(cpuinfo: str | None) -> set[str]:
    """x86 `flags` words of the first processor (all processors share them)."""
    if not cpuinfo:
        return set()
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() == "flags":
            return set(value.split())
    return set()


def kernel_release(host: HostRoot) -> str | None:
    release = _first_line(host.read_text("/proc/sys/kernel/osrelease"))
    if release is None and host.is_live:
        release = os.uname().release
    return release


def probe(host: HostRoot) -> dict[str, Any]:
    reasons: list[str] = []
    cpuinfo = host.read_text("/proc/cpuinfo")
    if cpuinfo is None:
        why = host.read_error("/proc/cpuinfo")
        reasons.append("/proc/cpuinfo is missing or unreadable" + (f" ({why})" if why else "")
                       + ": CPU flags unknown")
    elif not cpu_flags(cpuinfo) and _machine_from_cpuinfo(cpuinfo) is None:
        reasons.append("/proc/cpuinfo has no recognisable content: CPU flags unknown")

    machine = _first_line(host.read_text("/proc/sys/kernel/arch"))
    if machine is None and host.is_live:
        machine = os.uname().machine
    if machine is None and cpuinfo:
        machine = _machine_from_cpuinfo(cpuinfo)
    if machine is None:
        unread = [f"{p} ({host.read_error(p)})" for p in ("/proc/sys/kernel/arch", "/proc/cpuinfo") if host.read_error(p)]
        reasons.append("architecture unknown: could not read " + ", ".join(unread) if unread
                       else "architecture unknown: no /proc/sys/kernel/arch and /proc/cpuinfo did not tell")
    arch = GOARCH.get(machine, machine) if machine else None

    kernel = kernel_release(host)
    if kernel is None:
        why = host.read_error("/proc/sys/kernel/osrelease")
        reasons.append(f"kernel release unknown: /proc/sys/kernel/osrelease could not be read ({why})" if why
                       else "kernel release unknown: /proc/sys/kernel/osrelease is missing")

    flags = cpu_flags(cpuinfo)
    cpu_flag = "vmx" if "vmx" in flags else "svm" if "svm" in flags else None

    evidence: list[str] = []
    if "hypervisor" in flags:
        evidence.append("cpuinfo flag 'hypervisor'")
    hv_type = _first_line(host.read_text("/sys/hypervisor/type"))
    if hv_type:
        evidence.append(f"/sys/hypervisor/type = {hv_type}")
    for name in ("sys_vendor", "product_name"):
        value = _first_line(host.read_text(f"/sys/class/dmi/id/{name}"))
        if value and any(marker in value.lower() for marker in _VM_DMI):
            evidence.append(f"DMI {name} = {value}")
    # non-x86 guests have no cpuinfo flag; a device-tree /hypervisor node marks e.g. Xen guests
    # (KVM/QEMU arm64 guests are caught by DMI above)
    if host.exists("/proc/device-tree/hypervisor") or host.exists("/sys/firmware/devicetree/base/hypervisor"):
        evidence.append("device tree has a /hypervisor node")

    return {
        "machine": machine,
        "arch": arch,
        "kernel": kernel,
        "flags": flags,
        "cpu_flag": cpu_flag,
        "in_vm": bool(evidence),
        "in_vm_evidence": evidence,
        "reasons": reasons,
    }
