"""detect.vsock: is the root's /dev/vhost-vsock a device the kernel answers for, and the reasons.

test_detect_bad_input.py covers a regular file, a missing node, another device's node and a node
without a driver; here: the reasons' wording with and without the module, guest-side modules,
other wrong kinds of path, and the permission hint (asked as an unprivileged user, for real)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nodeagent.detect import vsock
from nodeagent.host import HostRoot
from tests.support.hosttrees import HOSTS, mknod_char

REPO = Path(__file__).resolve().parents[3]


def test_missing_device_with_the_module_loaded(tmp_path):
    (tmp_path / "sys/module/vhost_vsock").mkdir(parents=True)
    facts = vsock.probe(HostRoot(tmp_path))
    assert facts == {"vhost_vsock": False, "vhost_vsock_module": True, "guest_vsock": [],
                     "vsock_reasons": ["host-side vsock (/dev/vhost-vsock) is missing: "
                                       "the vhost_vsock module is loaded but the device is missing"]}


def test_unusable_node_with_the_module_loaded_does_not_say_load_it(tmp_path):
    (tmp_path / "sys/module/vhost_vsock").mkdir(parents=True)
    (tmp_path / "dev/vhost-vsock").mkdir(parents=True)
    assert vsock.probe(HostRoot(tmp_path))["vsock_reasons"] == [
        f"{vsock.UNUSABLE}: not a character device"]


def test_dev_that_is_a_file_cannot_be_statted(tmp_path):
    (tmp_path / "dev").write_text("")
    assert vsock.ask_device(HostRoot(tmp_path)) == "cannot stat it: Not a directory"


def test_guest_side_modules_are_listed_and_explain_a_missing_device():
    # a QEMU guest: vmw_vsock_virtio_transport lets it talk to its own hypervisor only
    facts = vsock.probe(HostRoot(HOSTS / "amd-vm-nested"))
    assert facts["vhost_vsock"] is False and facts["guest_vsock"] == ["vmw_vsock_virtio_transport"]
    assert facts["vsock_reasons"][-1] == ("guest-side vsock (vmw_vsock_virtio_transport) is loaded: this node is a VM, "
                                          "which does not serve vsock to Kata guests")


def test_every_guest_side_module_is_named(tmp_path):
    for name in ("hv_sock", "vmw_vsock_vmci_transport"):
        (tmp_path / "sys/module" / name).mkdir(parents=True)
    facts = vsock.probe(HostRoot(tmp_path))
    assert facts["guest_vsock"] == ["vmw_vsock_vmci_transport", "hv_sock"]
    assert "(vmw_vsock_vmci_transport, hv_sock) is loaded" in facts["vsock_reasons"][1]


def test_vsock_core_module_is_not_a_guest_transport(tmp_path):
    (tmp_path / "sys/module/vsock").mkdir(parents=True)  # the core module: host and guest both load it
    assert vsock.probe(HostRoot(tmp_path))["guest_vsock"] == []


def test_ask_device_takes_another_path(tmp_path):
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev/other").write_text("")
    assert vsock.ask_device(HostRoot(tmp_path), "/dev/other") == "a regular file, not the vhost-vsock character device"


def ask_without_dac_override(root: Path) -> str:
    """ask_device in a real child process that is root without CAP_DAC_OVERRIDE/DAC_READ_SEARCH,
    so file modes apply to it as to any unprivileged agent (setpriv drops them for real)."""
    code = ("import sys; from nodeagent.detect import vsock; from nodeagent.host import HostRoot; "
            "print(vsock.ask_device(HostRoot(sys.argv[1])))")
    drop = "-dac_override,-dac_read_search"
    out = subprocess.run(["setpriv", f"--bounding-set={drop}", f"--inh-caps={drop}", sys.executable, "-c", code,
                          str(root)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root to mknod and setpriv to drop caps")
def test_permission_denied_gets_the_run_as_root_hint(tmp_path):
    # /dev/null's numbers with mode 0000: without DAC override, opening it is EACCES
    mknod_char(tmp_path / "dev/vhost-vsock", (1, 3))
    (tmp_path / "dev/vhost-vsock").chmod(0)
    assert ask_without_dac_override(tmp_path) == (
        "cannot open it: Permission denied (run as root, or allow the device in the pod/cgroup)")


def test_absolute_symlink_is_resolved_inside_the_root(tmp_path):
    # In the root there is no /dev/null: the link dangles, so the device is missing
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev/vhost-vsock").symlink_to("/dev/null")
    assert vsock.ask_device(HostRoot(tmp_path)) == "missing"
