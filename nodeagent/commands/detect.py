"""`nodeagent detect`: host facts as JSON (the contract) or a short readable summary."""

from __future__ import annotations

from typing import Any

from nodeagent.detect import detect_host
from nodeagent.facts import HostFacts
from nodeagent.host import HostRoot
from nodeagent.output import Result, table


def _yes(value: Any) -> str:
    return {True: "yes", False: "no", None: "unknown"}.get(value, str(value))


def summary(facts: HostFacts) -> str:
    """What a person wants at a glance, one fact per row, reasons underneath."""
    virt, ctd = facts.virtualization, facts.containerd
    gvisor, kata = facts.runtimes["gvisor"], facts.runtimes["kata"]
    kvm = _yes(virt.kvm_usable)
    if virt.kvm_usable:
        kvm += f" (API {virt.kvm_api_version}, {virt.kvm_module or 'module unknown'})"
    containerd = "not found"
    if ctd.found:
        containerd = f"{ctd.version or 'version unknown'} ({ctd.flavor}, {'running' if ctd.running else 'not running'})"
    rows = [
        ["architecture", facts.arch or "unknown"],
        ["kernel", facts.kernel or "unknown"],
        ["in a VM", _yes(virt.in_vm) + (f" ({'; '.join(virt.in_vm_evidence)})" if virt.in_vm_evidence else "")],
        ["CPU virt flag", virt.cpu_flag or "none"],
        ["/dev/kvm", "present" if virt.kvm_device else "missing"],
        ["KVM usable", kvm],
        ["nested", _yes(virt.nested) + (f" ({virt.nested_source})" if virt.nested_source else "")],
        ["host vsock", _yes(virt.vhost_vsock)],
        ["cgroup", f"v{facts.cgroup_version} ({facts.cgroup_mode})" if facts.cgroup_version else "unknown"],
        ["systemd", "running" if facts.systemd else ("installed, not running" if facts.systemd_installed else "no")],
        ["containerd", containerd],
        ["config", f"{ctd.config_path} (version {ctd.config_version if ctd.config_version else 'unknown'})"],
        ["socket", ctd.socket or "unknown"],
        ["gVisor", ("eligible" if gvisor.eligible else "not eligible") + f", platform {gvisor.platform}"],
        ["Kata", "eligible" if kata.eligible else "not eligible"],
    ]
    lines = [table(rows)]
    notes = [
        *(f"gVisor: {r}" for r in gvisor.reasons),
        *(f"Kata: {r}" for r in kata.reasons),
        *(f"KVM: {r}" for r in virt.reasons if "vsock" not in r),
        *(f"containerd: {r}" for r in ctd.reasons),
        *(f"containerd: ignored pid {p['pid']} (user {p['user']}, binary {p['binary']}): {p['reason']}"
          for p in ctd.untrusted_processes),
        *(f"host: {r}" for r in facts.cpu_reasons),
    ]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)


def run(settings, args) -> Result:
    facts = detect_host(HostRoot(settings.root), settings)
    return Result(facts.to_json(), lambda: summary(facts))
