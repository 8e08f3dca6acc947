"""Bad host input is a fact with a reason, never an exception."""

import os

import pytest

from nodeagent.detect import cpu, detect_host, kvm, vsock
from nodeagent.errors import HostError
from nodeagent.host import HostRoot
from nodeagent.settings import Settings
from tests.support.hosttrees import VHOST_VSOCK_DEV, mknod_char


def detect(root):
    return detect_host(HostRoot(root), Settings(root=str(root))).to_json()


def test_root_that_does_not_exist_is_a_host_error(tmp_path):
    with pytest.raises(HostError) as err:
        HostRoot(tmp_path / "nope")
    assert "does not exist" in err.value.message and err.value.hint


def test_kvm_regular_file_is_unusable(host_tree):
    root = host_tree("baremetal-intel-nested")
    (root / "dev").mkdir()
    (root / "dev/kvm").write_text("")
    v = detect(root)["virtualization"]
    assert (v["kvm_device"], v["kvm_usable"], v["kvm_api_version"]) == (True, False, None)
    assert "/dev/kvm is a regular file, not the KVM character device" in v["reasons"]


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
def test_kvm_node_that_is_another_device_does_not_answer(tmp_path):
    # /dev/null's numbers under the name /dev/kvm: opens fine, the KVM ioctl fails
    mknod_char(tmp_path / "dev/kvm", (1, 3))
    facts = kvm.probe_device(HostRoot(tmp_path))
    assert facts["kvm_usable"] is False and facts["kvm_api_version"] is None
    assert any("did not answer KVM_GET_API_VERSION" in r for r in facts["reasons"])


def test_empty_root_reports_unknowns(tmp_path):
    facts = detect(tmp_path)
    assert facts["arch"] is None and facts["kernel"] is None
    assert facts["runtimes"]["gvisor"]["eligible"] is False
    assert any("architecture unknown" in r for r in facts["runtimes"]["gvisor"]["reasons"] + facts["cpu_reasons"])
    assert facts["containerd"]["found"] is False


@pytest.mark.parametrize("content", [b"\x00\xff garbage\n:::\nflags\n", b"", "processor: 0\nnonsense".encode()])
def test_garbage_cpuinfo_is_a_finding(host_tree, content):
    root = host_tree("vm-no-kvm")
    (root / "proc/cpuinfo").write_bytes(content)
    facts = detect(root)
    assert facts["virtualization"]["cpu_flag"] is None
    assert any("no recognisable content" in r for r in facts["cpu_reasons"])
    assert facts["arch"] == "amd64"  # /proc/sys/kernel/arch still says x86_64


def test_unreadable_cpuinfo_is_a_finding(host_tree):
    root = host_tree("arm64")  # no kernel/arch file: arch would come from cpuinfo
    (root / "proc/cpuinfo").unlink()
    (root / "proc/cpuinfo").mkdir()  # reading a directory fails even for root
    facts = detect(root)
    assert any("/proc/cpuinfo is missing or unreadable" in r for r in facts["cpu_reasons"])
    assert facts["arch"] is None
    assert facts["runtimes"]["gvisor"]["eligible"] is False


@pytest.mark.parametrize("text", ["version = 2\n[plugins\n", "this is not toml", 'version = "2"\n', "version = 9\n"])
def test_broken_containerd_config_is_a_finding(host_tree, text):
    root = host_tree("containerd-v2")
    (root / "etc/containerd/config.toml").write_text(text)
    c = detect(root)["containerd"]
    assert c["found"] is True and c["config_version"] is None
    assert c["config_error"] and any(c["config_error"] in r for r in c["reasons"])


def test_missing_import_is_a_finding(host_tree):
    root = host_tree("containerd-v2")
    cfg = root / "etc/containerd/config.toml"
    cfg.write_text(cfg.read_text().replace('"/etc/containerd/conf.d/*.toml"', '"/etc/containerd/gone.toml"'))
    c = detect(root)["containerd"]
    assert c["config_version"] == 2
    assert "gone.toml" in c["config_error"]


@pytest.mark.parametrize(
    "cpuinfo, machine",
    [
        ("processor\t: 0\nvendor_id\t: IBM/S390\n# processors    : 2\n", "s390x"),
        ("processor\t: 0\ncpu\t\t: POWER9 (architected), altivec supported\nclock\t\t: 2200.000000MHz\n", "ppc64le"),
        ("processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu vme\n", "x86_64"),
        ("processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd\nCPU architecture: 8\n", "aarch64"),
    ],
)
def test_arch_from_cpuinfo_layout(tmp_path, cpuinfo, machine):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cpuinfo").write_text(cpuinfo)
    assert cpu.probe(HostRoot(tmp_path))["machine"] == machine


def test_cpu_flags_are_whole_words():
    # 'svm' must not match inside another flag, and vmx is only the flags line's word
    info = "flags\t\t: fpu svm_lock vmxoff hypervisor\nbugs\t\t: vmx\n"
    assert cpu.cpu_flags(info) == {"fpu", "svm_lock", "vmxoff", "hypervisor"}


@pytest.mark.parametrize("raw, expected", [("Y\n", True), ("N\n", False), ("1\n", True), ("0", False), ("?", None), (None, None)])
def test_nested_param_values(raw, expected):
    assert kvm._truthy_param(raw) is expected


def _no_vhost_vsock_driver() -> bool:
    """This machine's kernel has no vhost_vsock (module not loaded, `nomodule` boot), see the notes."""
    return not os.path.exists("/sys/module/vhost_vsock") and not os.path.exists("/dev/vhost-vsock")


@pytest.mark.skipif(os.geteuid() != 0 or not _no_vhost_vsock_driver(),
                    reason="mknod needs root, and the kernel must have no vhost_vsock driver to answer")
def test_mknoded_vhost_vsock_without_a_kernel_driver_is_false(host_tree):
    # The real device numbers (10,241) in a captured root: a node exists, but no driver answers.
    root = host_tree("baremetal-intel-nested")
    mknod_char(root / "dev/vhost-vsock", VHOST_VSOCK_DEV)
    v = detect(root)["virtualization"]
    assert v["vhost_vsock"] is False
    assert ("host-side vsock (/dev/vhost-vsock) is unusable: a device node without a kernel driver behind it "
            "(No such device)") in v["reasons"]  # the captured tree lists the module under /sys/module


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
def test_vhost_vsock_node_that_is_another_device_does_not_answer(tmp_path):
    # /dev/null's numbers under the name /dev/vhost-vsock: opens fine, the vhost ioctl fails
    mknod_char(tmp_path / "dev/vhost-vsock", (1, 3))
    facts = vsock.probe(HostRoot(tmp_path))
    assert facts["vhost_vsock"] is False
    assert any("did not answer VHOST_GET_FEATURES" in r for r in facts["vsock_reasons"])


@pytest.mark.parametrize("make, reason", [
    (lambda dev: dev.write_text(""), "is unusable: a regular file, not the vhost-vsock character device; load the vhost_vsock module"),
    (lambda dev: None, "is missing: load the vhost_vsock module"),
])
def test_vhost_vsock_regular_file_or_missing_is_false(tmp_path, make, reason):
    (tmp_path / "dev").mkdir()
    make(tmp_path / "dev/vhost-vsock")
    facts = vsock.probe(HostRoot(tmp_path))
    assert facts["vhost_vsock"] is False
    assert facts["vsock_reasons"] == [f"host-side vsock (/dev/vhost-vsock) {reason}"]
