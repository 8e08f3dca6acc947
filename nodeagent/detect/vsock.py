"""Host-side vsock (/dev/vhost-vsock), which Kata's shim needs to reach its guest agent.

A device node proves nothing: one mknod'ed into a root, or left behind when the module is not
loaded, opens with ENODEV/ENXIO. So, as kvm.probe_device does with /dev/kvm, we open the device
under the host root and ask the kernel itself (VHOST_GET_FEATURES).

A VM's own guest-side modules (vsock, vmw_vsock_virtio_transport) let *it* talk to its
hypervisor; they cannot serve Kata guests, so they are reported but never count.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from typing import Any

from nodeagent.host import HostRoot

GUEST_SIDE_MODULES = ("vmw_vsock_virtio_transport", "vmw_vsock_vmci_transport", "hv_sock")
DEVICE = "/dev/vhost-vsock"
VHOST_GET_FEATURES = 0x8008AF00  # _IOR(VHOST_VIRTIO=0xAF, 0x00, __u64)
_NO_DRIVER = (errno.ENODEV, errno.ENXIO)  # a node whose major/minor no loaded driver serves
UNUSABLE = f"host-side vsock ({DEVICE}) is unusable"  # the reason's start when a node is there but dead


def ask_device(host: HostRoot, path: str = DEVICE) -> str | None:
    """None when the kernel answers VHOST_GET_FEATURES on `path`, else why not (never raises)."""
    real = host.confined(path)  # links followed inside the root, never to this machine's device
    if real is None:
        return "missing"
    try:
        st = os.stat(real)
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"cannot stat it: {exc.strerror}"
    if not stat.S_ISCHR(st.st_mode):
        return "a regular file, not the vhost-vsock character device" if stat.S_ISREG(st.st_mode) \
            else "not a character device"
    try:
        fd = os.open(real, os.O_RDWR | os.O_CLOEXEC | os.O_NOCTTY)  # NOCTTY: a wrong node may be a tty
    except OSError as exc:
        if exc.errno in _NO_DRIVER:
            return f"a device node without a kernel driver behind it ({exc.strerror})"
        hint = " (run as root, or allow the device in the pod/cgroup)" if exc.errno in (errno.EACCES, errno.EPERM) else ""
        return f"cannot open it: {exc.strerror}{hint}"
    try:
        fcntl.ioctl(fd, VHOST_GET_FEATURES, bytearray(8))
    except OSError as exc:
        return f"it did not answer VHOST_GET_FEATURES: {exc.strerror}"
    finally:
        os.close(fd)
    return None


def probe(host: HostRoot) -> dict[str, Any]:
    problem = ask_device(host)
    present = problem is None
    module = host.exists("/sys/module/vhost_vsock")
    guest = [m for m in GUEST_SIDE_MODULES if host.exists(f"/sys/module/{m}")]
    reasons = []
    if problem == "missing":
        why = "the vhost_vsock module is loaded but the device is missing" if module else "load the vhost_vsock module"
        reasons.append(f"host-side vsock ({DEVICE}) is missing: {why}")
    elif problem:
        why = "" if module else "; load the vhost_vsock module"
        reasons.append(f"{UNUSABLE}: {problem}{why}")
    if problem and guest:
        reasons.append(
            f"guest-side vsock ({', '.join(guest)}) is loaded: this node is a VM, which does not serve vsock to Kata guests"
        )
    return {"vhost_vsock": present, "vhost_vsock_module": module, "guest_vsock": guest, "vsock_reasons": reasons}
