"""Pure rules: eligibility, kernel parsing, version parsing, flavor scoring."""

import pytest

from nodeagent.detect import containerd, eligibility
from nodeagent.facts import HostFacts


def facts(**over):
    base = {
        "arch": "amd64", "kernel": "6.1.0",
        "virtualization": {"kvm_usable": True, "in_vm": False, "vhost_vsock": True, "reasons": []},
    }
    base.update(over)
    return HostFacts.from_json(base)


@pytest.mark.parametrize("release, expected", [
    ("6.18.44-fc-v782", (6, 18, 44)), ("5.4", (5, 4, 0)), ("4.14.77-foo", (4, 14, 77)), ("garbage", None), (None, None),
])
def test_kernel_tuple(release, expected):
    assert eligibility.kernel_tuple(release) == expected


@pytest.mark.parametrize("kernel, eligible", [("4.14.76", False), ("4.14.77", True), ("3.10.0-1160.el7", False), ("6.1.0", True)])
def test_gvisor_kernel_minimum(kernel, eligible):
    result = eligibility.gvisor(facts(kernel=kernel))
    assert result.eligible is eligible
    if not eligible:
        assert "older than gVisor's minimum 4.14.77" in result.reasons[0]


def test_gvisor_platform_kvm_only_on_bare_metal_with_usable_kvm():
    assert eligibility.gvisor(facts()).platform == "kvm"
    assert eligibility.gvisor(facts(virtualization={"kvm_usable": True, "in_vm": True})).platform == "systrap"
    assert eligibility.gvisor(facts(virtualization={"kvm_usable": False, "in_vm": False})).platform == "systrap"


@pytest.mark.parametrize("arch, gvisor_ok, kata_ok", [
    ("amd64", True, True), ("arm64", True, True), ("s390x", False, True), ("ppc64le", False, True), ("riscv64", False, False),
])
def test_arch_support(arch, gvisor_ok, kata_ok):
    f = facts(arch=arch)
    assert eligibility.gvisor(f).eligible is gvisor_ok
    assert eligibility.kata(f).eligible is kata_ok


def test_kata_lists_every_missing_piece():
    result = eligibility.kata(facts(arch="riscv64", virtualization={
        "kvm_usable": False, "vhost_vsock": False, "reasons": ["/dev/kvm does not exist: KVM module not loaded"]}))
    assert result.eligible is False
    assert len(result.reasons) == 3
    assert "KVM is not usable (/dev/kvm does not exist" in result.reasons[0]
    assert result.reasons[1] == "host-side vsock (/dev/vhost-vsock) is missing: load the vhost_vsock module"
    assert "riscv64" in result.reasons[2]


@pytest.mark.parametrize("text, version", [
    ("containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3", "1.6.20"),
    ("containerd github.com/containerd/containerd/v2 2.1.9+ds1 2.1.9+ds1-5", "2.1.9"),
    ("containerd containerd.io 1.7.13 7c3aca7a610df76212171d200ca3811ff6096eb8", "1.7.13"),
    ("containerd github.com/k3s-io/containerd v1.7.20-k3s1", "1.7.20"),
    ("no version here", None),
])
def test_parse_version(text, version):
    assert containerd.parse_version(text) == version
