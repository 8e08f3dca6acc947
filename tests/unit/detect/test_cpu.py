"""detect.cpu: architecture, kernel release and "am I a VM?" from a host root's /proc and /sys.

test_detect_bad_input.py covers cpuinfo layouts per architecture and garbage cpuinfo; these
tests cover where each fact comes from, the GOARCH mapping and the VM evidence."""

import os

import pytest

from nodeagent.detect import cpu
from nodeagent.host import HostRoot
from tests.support.hosttrees import HOSTS

X86 = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu vmx sse2\n"


def root_with(tmp_path, files):
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return HostRoot(tmp_path)


def test_kernel_arch_file_wins_over_cpuinfo(tmp_path):
    host = root_with(tmp_path, {"proc/cpuinfo": X86, "proc/sys/kernel/arch": "aarch64\n"})
    facts = cpu.probe(host)
    assert (facts["machine"], facts["arch"]) == ("aarch64", "arm64")


@pytest.mark.parametrize("machine, arch", [("x86_64", "amd64"), ("armv7l", "arm"), ("i686", "386"),
                                           ("s390x", "s390x"), ("mips64", "mips64")])
def test_goarch_mapping_and_unknown_machines_pass_through(tmp_path, machine, arch):
    facts = cpu.probe(root_with(tmp_path, {"proc/sys/kernel/arch": f"{machine}\n"}))
    assert (facts["machine"], facts["arch"]) == (machine, arch)


def test_blank_arch_file_falls_back_to_cpuinfo(tmp_path):
    facts = cpu.probe(root_with(tmp_path, {"proc/sys/kernel/arch": "\n  \n", "proc/cpuinfo": X86}))
    assert facts["machine"] == "x86_64"


def test_armv7_cpuinfo_is_not_aarch64(tmp_path):
    info = "processor\t: 0\nFeatures\t: half thumb vfp\nCPU architecture: 7\n"
    assert cpu.probe(root_with(tmp_path, {"proc/cpuinfo": info}))["machine"] == "armv7l"


def test_riscv_cpuinfo(tmp_path):
    info = "processor\t: 0\nhart\t\t: 0\nisa\t\t: rv64imafdc\nmmu\t\t: sv39\n"
    assert cpu.probe(root_with(tmp_path, {"proc/cpuinfo": info}))["arch"] == "riscv64"


def test_kernel_release_is_the_first_line(tmp_path):
    host = root_with(tmp_path, {"proc/sys/kernel/osrelease": "6.1.0-18-amd64\nextra\n"})
    assert cpu.kernel_release(host) == "6.1.0-18-amd64"
    assert cpu.probe(host)["kernel"] == "6.1.0-18-amd64"


def test_missing_kernel_release_is_a_reason(tmp_path):
    facts = cpu.probe(root_with(tmp_path, {"proc/cpuinfo": X86}))
    assert facts["kernel"] is None
    assert "kernel release unknown: /proc/sys/kernel/osrelease is missing" in facts["reasons"]


def test_unreadable_kernel_release_says_why(tmp_path):
    (tmp_path / "proc/sys/kernel/osrelease").mkdir(parents=True)  # reading a directory fails even for root
    facts = cpu.probe(HostRoot(tmp_path))
    assert any(r.startswith("kernel release unknown: /proc/sys/kernel/osrelease could not be read (")
               for r in facts["reasons"])


def test_unreadable_arch_file_is_named_in_the_reason(tmp_path):
    (tmp_path / "proc/sys/kernel/arch").mkdir(parents=True)
    facts = cpu.probe(HostRoot(tmp_path))
    assert facts["machine"] is None and facts["arch"] is None
    assert any(r.startswith("architecture unknown: could not read /proc/sys/kernel/arch (") for r in facts["reasons"])


@pytest.mark.parametrize("flags, expected", [("vmx svm", "vmx"), ("svm", "svm"), ("sse2", None)])
def test_cpu_flag_prefers_vmx(tmp_path, flags, expected):
    info = f"processor\t: 0\nvendor_id\t: X\nflags\t\t: {flags}\n"
    assert cpu.probe(root_with(tmp_path, {"proc/cpuinfo": info}))["cpu_flag"] == expected


def test_bare_metal_has_no_vm_evidence(tmp_path):
    host = root_with(tmp_path, {"proc/cpuinfo": X86, "sys/class/dmi/id/sys_vendor": "Dell Inc.\n",
                                "sys/class/dmi/id/product_name": "PowerEdge R650\n"})
    facts = cpu.probe(host)
    assert (facts["in_vm"], facts["in_vm_evidence"]) == (False, [])


def test_every_vm_marker_is_evidence(tmp_path):
    host = root_with(tmp_path, {
        "proc/cpuinfo": X86.replace("sse2", "sse2 hypervisor"),
        "sys/hypervisor/type": "xen\n",
        "sys/class/dmi/id/sys_vendor": "QEMU\n",
        "sys/class/dmi/id/product_name": "Standard PC (Q35 + ICH9, 2009)\n",
        "proc/device-tree/hypervisor/compatible": "xen,xen\n",
    })
    facts = cpu.probe(host)
    assert facts["in_vm"] is True
    assert facts["in_vm_evidence"] == ["cpuinfo flag 'hypervisor'", "/sys/hypervisor/type = xen",
                                       "DMI sys_vendor = QEMU", "device tree has a /hypervisor node"]


@pytest.mark.parametrize("value", ["Google Compute Engine", "VMware, Inc.", "innotek GmbH", "Microsoft Virtual Machine"])
def test_dmi_vendor_markers_are_case_insensitive(tmp_path, value):
    facts = cpu.probe(root_with(tmp_path, {"sys/class/dmi/id/product_name": value.upper() + "\n"}))
    assert facts["in_vm_evidence"] == [f"DMI product_name = {value.upper()}"]


def test_arm_guest_with_a_firmware_device_tree_hypervisor_node(tmp_path):
    (tmp_path / "sys/firmware/devicetree/base/hypervisor").mkdir(parents=True)
    assert cpu.probe(HostRoot(tmp_path))["in_vm"] is True


def test_captured_xen_guest_is_a_vm_without_virtualization_flags():
    facts = cpu.probe(HostRoot(HOSTS / "vm-no-kvm"))
    assert facts["in_vm"] is True and facts["cpu_flag"] is None
    assert "/sys/hypervisor/type = xen" in facts["in_vm_evidence"]


def test_live_root_answers_from_uname(tmp_path):
    facts = cpu.probe(HostRoot("/"))
    assert facts["machine"] == os.uname().machine and facts["kernel"] == os.uname().release
