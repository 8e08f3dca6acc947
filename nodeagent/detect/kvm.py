"""KVM: is /dev/kvm really usable, which module provides it, is nesting on.

CPU flags are not enough: a PVM host (kvm_pvm) has working KVM without vmx/svm, and a
VM may show vmx while the device is missing. So we open the device under the host
root and ask the kernel itself (KVM_GET_API_VERSION, then KVM_CREATE_VM).
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from typing import Any

from nodeagent.host import HostRoot

KVM_GET_API_VERSION = 0xAE00  # _IO(KVMIO, 0x00)
KVM_CREATE_VM = 0xAE01  # _IO(KVMIO, 0x01); arg 0 = default machine type / IPA size
KVM_API_VERSION = 12  # the only stable API version since Linux 2.6.22

# x86 vendor modules first: they own /dev/kvm when loaded; kvm_pvm is the software fallback
_X86_MODULES = ("kvm_intel", "kvm_amd", "kvm_pvm")


def _truthy_param(text: str | None) -> bool | None:
    """Module bool params read as Y/N, int params as 1/0."""
    if text is None:
        return None
    value = text.strip().upper()
    if value in ("Y", "1"):
        return True
    if value in ("N", "0"):
        return False
    return None


def probe_device(host: HostRoot, path: str = "/dev/kvm") -> dict[str, Any]:
    """Open the device and ask it; every failure becomes a reason, never an exception."""
    # links are followed inside the root: a captured tree's absolute /dev/kvm link must not reach
    # this machine's own device (a loop or a dangling link is no device)
    real = host.confined(path)
    facts: dict[str, Any] = {
        "kvm_device": host.exists(path),  # the name is there (a dangling link too)
        "kvm_usable": False,
        "kvm_api_version": None,
        "kvm_create_vm": None,
        "reasons": [],
    }
    reasons = facts["reasons"]
    try:
        if real is None:
            raise FileNotFoundError(path)
        st = os.stat(real)
    except FileNotFoundError:
        reasons.append(f"{path} does not exist: KVM module not loaded or device not exposed to this node/pod")
        return facts
    except OSError as exc:
        reasons.append(f"cannot stat {path}: {exc.strerror}")
        return facts
    if not stat.S_ISCHR(st.st_mode):
        kind = "a regular file" if stat.S_ISREG(st.st_mode) else "not a character device"
        reasons.append(f"{path} is {kind}, not the KVM character device")
        return facts
    try:
        fd = os.open(real, os.O_RDWR | os.O_CLOEXEC | os.O_NOCTTY)  # NOCTTY: a wrong node may be a tty
    except OSError as exc:
        hint = " (run as root, or allow the device in the pod/cgroup)" if exc.errno in (errno.EACCES, errno.EPERM) else ""
        reasons.append(f"cannot open {path}: {exc.strerror}{hint}")
        return facts
    try:
        try:
            api = fcntl.ioctl(fd, KVM_GET_API_VERSION, 0)
        except OSError as exc:
            reasons.append(f"{path} did not answer KVM_GET_API_VERSION: {exc.strerror}")
            return facts
        facts["kvm_api_version"] = api
        if api != KVM_API_VERSION:
            reasons.append(f"{path} reports KVM API version {api}, expected {KVM_API_VERSION}")
            return facts
        try:
            vm_fd = fcntl.ioctl(fd, KVM_CREATE_VM, 0)
        except OSError as exc:
            # e.g. EBUSY when another hypervisor owns VMX, ENOMEM, EINVAL for an unsupported IPA size
            facts["kvm_create_vm"] = False
            reasons.append(f"{path} answered but KVM_CREATE_VM failed: {exc.strerror}")
            return facts
        os.close(vm_fd)
        facts["kvm_create_vm"] = True
        # Stricter than "answered KVM_GET_API_VERSION" (the contract's floor): a device that
        # cannot create a VM cannot run Kata either, so it is not usable.
        facts["kvm_usable"] = True
    finally:
        os.close(fd)
    return facts


def module_and_nesting(host: HostRoot, arch: str | None) -> dict[str, Any]:
    """Which KVM module is in use and whether it allows nested guests."""
    loaded = [m for m in _X86_MODULES if host.exists(f"/sys/module/{m}")]
    module = loaded[0] if loaded else None
    nested: bool | None = None
    source: str | None = None
    if module in ("kvm_intel", "kvm_amd"):
        param = f"/sys/module/{module}/parameters/nested"
        raw = host.read_text(param)
        nested = _truthy_param(raw)
        if nested is not None:
            source = f"{param} = {raw.strip()}"
    elif module == "kvm_pvm":
        # PVM (pagetable-based virtual machine) exists to run KVM guests *inside* a VM without
        # hardware nesting: the KVM on this host is itself nested virtualization. It has no
        # `nested` parameter; the guest kernel is booted with `nested_pvm=1`. We report
        # nested = true because that is the truth an operator needs (nested-virt=true: VMs work,
        # at nested-virtualization cost), and say where it came from.
        nested = True
        cmdline = host.read_text("/proc/cmdline") or ""
        flag = " (kernel cmdline nested_pvm=1)" if "nested_pvm=1" in cmdline.split() else ""
        source = f"kvm_pvm is pagetable-based nested virtualization{flag}"
    elif arch == "arm64" and (host.exists("/sys/module/kvm") or host.exists("/dev/kvm")):
        # arm64 KVM is built into the kernel (no vendor module); nesting is a boot mode
        # (kvm-arm.mode=nested, Linux 6.16+), not a module parameter.
        module = "kvm_arm"
        cmdline = (host.read_text("/proc/cmdline") or "").split()
        if "kvm-arm.mode=nested" in cmdline:
            nested, source = True, "kernel cmdline kvm-arm.mode=nested"
    return {"kvm_module": module, "nested": nested, "nested_source": source}


def probe(host: HostRoot, arch: str | None, cpu_flags: set[str]) -> dict[str, Any]:
    facts = probe_device(host)
    facts.update(module_and_nesting(host, arch))
    if not facts["kvm_usable"] and arch == "amd64" and not cpu_flags & {"vmx", "svm"} and facts["kvm_module"] is None:
        facts["reasons"].append("the CPU shows neither vmx nor svm and no KVM module is loaded")
    return facts
