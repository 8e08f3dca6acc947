"""Which sandbox runtimes this host can run, and why not: pure functions of the facts."""

from __future__ import annotations

import re

from nodeagent.facts import HostFacts, RuntimeVerdict

GVISOR_ARCHES = ("amd64", "arm64")
# gVisor's install guide: "requires Linux 4.14.77+" (https://gvisor.dev/docs/user_guide/install/)
GVISOR_MIN_KERNEL = (4, 14, 77)
KATA_ARCHES = ("amd64", "arm64", "s390x", "ppc64le")


def kernel_tuple(release: str | None) -> tuple[int, int, int] | None:
    """'6.18.44-fc-v782' -> (6, 18, 44); '5.4' -> (5, 4, 0); garbage -> None."""
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", release or "")
    if not match:
        return None
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)


def gvisor(facts: HostFacts) -> RuntimeVerdict:
    reasons = []
    arch = facts.arch
    if arch not in GVISOR_ARCHES:
        reasons.append(f"architecture {arch or 'unknown'} is not supported by gVisor (amd64, arm64 only)")
    kernel = kernel_tuple(facts.kernel)
    minimum = ".".join(map(str, GVISOR_MIN_KERNEL))
    if kernel is None:
        reasons.append(f"kernel release unknown; gVisor needs Linux {minimum} or newer")
    elif kernel < GVISOR_MIN_KERNEL:
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


def kata(facts: HostFacts) -> RuntimeVerdict:
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
    if arch not in KATA_ARCHES:
        reasons.append(f"architecture {arch or 'unknown'} is not supported by Kata ({', '.join(KATA_ARCHES)})")
    return RuntimeVerdict(eligible=not reasons, reasons=reasons)


def evaluate(facts: HostFacts) -> dict[str, RuntimeVerdict]:
    return {"gvisor": gvisor(facts), "kata": kata(facts)}
