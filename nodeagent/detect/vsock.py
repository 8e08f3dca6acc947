"""Host-side vsock (/dev/vhost-vsock), which Kata's shim needs to reach its guest agent.

A VM's own guest-side modules (vsock, vmw_vsock_virtio_transport) let *it* talk to its
hypervisor; they cannot serve Kata guests, so they are reported but never count.
"""

from __future__ import annotations

from typing import Any

from nodeagent.host import HostRoot

GUEST_SIDE_MODULES = ("vmw_vsock_virtio_transport", "vmw_vsock_vmci_transport", "hv_sock")


def probe(host: HostRoot) -> dict[str, Any]:
    present = host.is_char_device("/dev/vhost-vsock")
    module = host.exists("/sys/module/vhost_vsock")
    guest = [m for m in GUEST_SIDE_MODULES if host.exists(f"/sys/module/{m}")]
    reasons = []
    if not present:
        why = "the vhost_vsock module is loaded but the device is missing" if module else "load the vhost_vsock module"
        reasons.append(f"host-side vsock (/dev/vhost-vsock) is missing: {why}")
        if guest:
            reasons.append(
                f"guest-side vsock ({', '.join(guest)}) is loaded: this node is a VM, which does not serve vsock to Kata guests"
            )
    return {"vhost_vsock": present, "vhost_vsock_module": module, "guest_vsock": guest, "vsock_reasons": reasons}
