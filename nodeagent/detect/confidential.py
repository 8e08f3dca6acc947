"""Confidential-VM support of the loaded KVM module: Intel TDX and AMD SEV-SNP.

Kata's TDX and SNP shims boot guests that only start when the host's KVM module was loaded
with the feature on: `kvm_intel` parameter `tdx` (Linux 6.16+) and `kvm_amd` parameter
`sev_snp` (Linux 6.11+) read `Y`. A missing module or parameter reads as False, not unknown:
either way the shim cannot start a guest here.
"""

from __future__ import annotations

from typing import Any

from nodeagent.host import HostRoot

PARAMS = {"tdx": "/sys/module/kvm_intel/parameters/tdx", "sev_snp": "/sys/module/kvm_amd/parameters/sev_snp"}


def probe(host: HostRoot) -> dict[str, Any]:
    """{"tdx": bool, "sev_snp": bool} from the KVM modules' parameters under --root."""
    out: dict[str, Any] = {}
    for feature, path in PARAMS.items():
        raw = host.read_text(path)
        out[feature] = raw is not None and raw.strip().upper() in ("Y", "1")
    return out
