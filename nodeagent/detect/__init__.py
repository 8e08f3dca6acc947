"""Host detection: every probe reads through HostRoot and returns facts, never raises.

`detect_host` assembles typed facts (nodeagent/facts.py) whose `to_json()` is the contract's
`detect` JSON (see INTERFACE.md) plus extra keys that doctor, install and labels use.
"""

from __future__ import annotations

from nodeagent.detect import cgroup, confidential, containerd, cpu, eligibility, kvm, systemd, vsock
from nodeagent.facts import HostFacts, Virtualization
from nodeagent.host import HostReadError, HostRoot
from nodeagent.settings import Settings


def detect_host(host: HostRoot, settings: Settings | None = None) -> HostFacts:
    """All host facts from one pass (`to_json()` is the `detect` command's output)."""
    settings = settings or Settings(root=str(host.root))
    errors_before, unreliable_before = len(host.read_errors), len(host.unreliable_reads)
    cpu_facts = cpu.probe(host)
    virt = kvm.probe(host, arch=cpu_facts["arch"], cpu_flags=cpu_facts["flags"])
    virt.update(vsock.probe(host))
    virtualization = Virtualization.from_json({
        **virt,
        "in_vm": cpu_facts["in_vm"],
        "in_vm_evidence": cpu_facts["in_vm_evidence"],
        "cpu_flag": cpu_facts["cpu_flag"],
        "reasons": list(virt["reasons"]) + list(virt.get("vsock_reasons", [])),
        "confidential": confidential.probe(host),  # extra: Kata's TDX/SNP shims
    })
    systemd_facts = systemd.probe(host)
    cgroup_facts = cgroup.probe(host)
    facts = HostFacts(
        arch=cpu_facts["arch"],
        kernel=cpu_facts["kernel"],
        virtualization=virtualization,
        containerd=containerd.probe(host, settings.containerd_config, settings.containerd_socket),
        systemd=systemd_facts["running"],
        systemd_installed=systemd_facts["installed"],
        cgroup_version=cgroup_facts["version"],
        cgroup_mode=cgroup_facts["mode"],
        machine=cpu_facts["machine"],
        root=str(host.root),
        root_is_live=host.is_live,
        cpu_reasons=cpu_facts["reasons"],
        read_errors=host.read_errors[errors_before:],
        unreliable_reads=host.unreliable_reads[unreliable_before:],
    )
    facts.runtimes = eligibility.evaluate(facts)
    return facts


def usable_facts(host: HostRoot, settings: Settings | None = None) -> HostFacts:
    """detect_host() for callers that act on the facts: refuse facts read while the reads failed
    for reasons unrelated to the files (out of file descriptors or memory, I/O errors). A host
    read that way looks like "architecture unknown" or "no KVM", and acting on that would skip or
    remove runtimes that work (security review M2)."""
    facts = detect_host(host, settings)
    unreliable = facts.unreliable_reads
    if unreliable:
        more = f" (and {len(unreliable) - 1} more)" if len(unreliable) > 1 else ""
        raise HostReadError(
            f"cannot read the host reliably: {unreliable[0]}{more}; nothing was changed",
            "nodeagent ran out of file descriptors or memory (raise LimitNOFILE or the pod's limits, "
            "look for a flood of connections to the health endpoint); `nodeagent detect` lists the "
            "read errors; run again",
        )
    return facts
