"""Eligibility rules (pure): kernel parsing, gVisor's kernel minimum and platform, architectures,
and every missing piece Kata needs."""

import pytest

from nodeagent.detect import eligibility
from nodeagent.facts import HostFacts
from nodeagent.runtimes import gvisor, kata


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
    result = gvisor.eligibility(facts(kernel=kernel))
    assert result.eligible is eligible
    if not eligible:
        assert "older than gVisor's minimum 4.14.77" in result.reasons[0]


def test_gvisor_platform_kvm_only_on_bare_metal_with_usable_kvm():
    assert gvisor.eligibility(facts()).platform == "kvm"
    assert gvisor.eligibility(facts(virtualization={"kvm_usable": True, "in_vm": True})).platform == "systrap"
    assert gvisor.eligibility(facts(virtualization={"kvm_usable": False, "in_vm": False})).platform == "systrap"


@pytest.mark.parametrize("arch, gvisor_ok, kata_ok", [
    ("amd64", True, True), ("arm64", True, True), ("s390x", False, True), ("ppc64le", False, True), ("riscv64", False, False),
])
def test_arch_support(arch, gvisor_ok, kata_ok):
    f = facts(arch=arch)
    assert gvisor.eligibility(f).eligible is gvisor_ok
    assert kata.eligibility(f).eligible is kata_ok


def test_kata_lists_every_missing_piece():
    result = kata.eligibility(facts(arch="riscv64", virtualization={
        "kvm_usable": False, "vhost_vsock": False, "reasons": ["/dev/kvm does not exist: KVM module not loaded"]}))
    assert result.eligible is False
    assert len(result.reasons) == 3
    assert "KVM is not usable (/dev/kvm does not exist" in result.reasons[0]
    assert result.reasons[1] == "host-side vsock (/dev/vhost-vsock) is missing: load the vhost_vsock module"
    assert "riscv64" in result.reasons[2]

