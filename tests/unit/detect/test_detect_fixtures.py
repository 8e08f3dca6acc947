"""The real probes against captured host trees (tests/fixtures/hosts, see README there)."""

import os

import pytest

from nodeagent.detect import detect_host
from nodeagent.host import HostRoot
from nodeagent.settings import Settings
from tests.support.hosttrees import HOSTS, KVM_DEV, VHOST_VSOCK_DEV, mknod_char, needs_real_kvm


def detect(root, **settings):
    return detect_host(HostRoot(root), Settings(root=str(root), **settings)).to_json()


# name -> facts that must hold (dotted keys), straight from the captured files
EXPECTED = {
    "baremetal-intel-nested": {
        "arch": "amd64", "kernel": "6.1.0-18-amd64", "virtualization.in_vm": False,
        "virtualization.cpu_flag": "vmx", "virtualization.kvm_module": "kvm_intel", "virtualization.nested": True,
        "virtualization.kvm_device": False, "virtualization.kvm_usable": False,
        "containerd.found": True, "containerd.version": "1.7.13", "containerd.flavor": "containerd",
        "containerd.config_version": 2, "containerd.systemd_cgroup": True, "cgroup_version": 2, "systemd": True,
        "containerd.unit": "containerd.service",
    },
    "amd-vm-nested": {
        "virtualization.in_vm": True, "virtualization.cpu_flag": "svm", "virtualization.kvm_module": "kvm_amd",
        "virtualization.nested": True, "containerd.found": False, "containerd.version": None,
        "virtualization.guest_vsock": ["vmw_vsock_virtio_transport"], "virtualization.vhost_vsock": False,
    },
    "vm-no-kvm": {
        "virtualization.in_vm": True, "virtualization.cpu_flag": None, "virtualization.kvm_device": False,
        "virtualization.kvm_usable": False, "virtualization.kvm_module": None, "virtualization.nested": None,
        "cgroup_version": 1, "cgroup_mode": "hybrid", "runtimes.gvisor.eligible": True,
        "runtimes.gvisor.platform": "systrap", "runtimes.kata.eligible": False,
    },
    "arm64": {
        "arch": "arm64", "machine": "aarch64", "virtualization.cpu_flag": None, "virtualization.in_vm": False,
        "virtualization.kvm_module": "kvm_arm", "virtualization.nested": None, "containerd.version": "1.6.20",
    },
    "k3s-node": {
        "containerd.flavor": "k3s", "containerd.config_path": "/var/lib/rancher/k3s/agent/etc/containerd/config.toml",
        "containerd.socket": "/run/k3s/containerd/containerd.sock",
        "containerd.binary": "/var/lib/rancher/k3s/data/current/bin/containerd",
        "containerd.config_template": "/var/lib/rancher/k3s/agent/etc/containerd/config.toml.tmpl",
        "containerd.config_version": 2, "containerd.systemd_cgroup": True, "containerd.found": True,
        "containerd.unit": "k3s.service",
    },
    "rke2-node": {
        "containerd.flavor": "rke2", "containerd.config_path": "/var/lib/rancher/rke2/agent/etc/containerd/config.toml",
        "containerd.socket": "/run/k3s/containerd/containerd.sock", "containerd.binary": "/var/lib/rancher/rke2/bin/containerd",
        "containerd.config_version": 2, "virtualization.in_vm": True, "containerd.unit": "rke2-agent.service",
    },
    "k0s-node": {
        "containerd.flavor": "k0s", "containerd.config_path": "/etc/k0s/containerd.toml",
        "containerd.socket": "/run/k0s/containerd.sock", "containerd.config_dropin_dir": "/etc/k0s/containerd.d",
        "containerd.unit": "k0sworker.service",
    },
    "microk8s-node": {
        "containerd.flavor": "microk8s", "containerd.socket": "/var/snap/microk8s/common/run/containerd.sock",
        "containerd.config_path": "/var/snap/microk8s/current/args/containerd-template.toml",
        "containerd.config_rendered": "/var/snap/microk8s/current/args/containerd.toml",
        "containerd.config_version": 2, "containerd.unit": "snap.microk8s.daemon-containerd.service",
    },
    "containerd-v1": {
        "containerd.config_version": 1, "containerd.version": "1.4.13", "containerd.systemd_cgroup": False,
        "containerd.handlers": ["runc"],
    },
    "containerd-v2": {
        "containerd.config_version": 2, "containerd.version": "1.6.20", "containerd.systemd_cgroup": True,
        "containerd.handlers": ["runc", "runsc"], "containerd.config_imports": ["/etc/containerd/conf.d/99-gvisor.toml"],
    },
    "containerd-v3": {
        "containerd.config_version": 3, "containerd.version": "2.1.9", "containerd.systemd_cgroup": True,
        "containerd.handlers": ["kata", "runc"],
    },
    "no-containerd": {
        "containerd.found": False, "containerd.version": None, "containerd.config_version": None,
        "containerd.running": False, "containerd.flavor": "containerd",
    },
}


def dotted(facts, key):
    for part in key.split("."):
        facts = facts[part]
    return facts


def test_every_fixture_is_covered():
    assert sorted(p.name for p in HOSTS.iterdir() if p.is_dir()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_facts(name):
    facts = detect(HOSTS / name)
    got = {key: dotted(facts, key) for key in EXPECTED[name]}
    assert got == EXPECTED[name]
    # never a running process for a captured tree: processes on this machine are not that host's
    assert facts["containerd"]["running"] is False and facts["containerd"]["pid"] is None
    assert facts["root_is_live"] is False


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_contract_keys_and_types(name):
    facts = detect(HOSTS / name)
    assert isinstance(facts["arch"], str) and isinstance(facts["kernel"], str)
    v = facts["virtualization"]
    for key in ("in_vm", "kvm_device", "kvm_usable", "vhost_vsock"):
        assert isinstance(v[key], bool), key
    assert v["cpu_flag"] in ("vmx", "svm", None)
    assert v["kvm_module"] in ("kvm_intel", "kvm_amd", "kvm_pvm", "kvm_arm", None)
    assert v["nested"] in (True, False, None)
    assert v["kvm_api_version"] is None or isinstance(v["kvm_api_version"], int)
    c = facts["containerd"]
    assert set(c) >= {"found", "version", "config_path", "config_version", "socket", "flavor"}
    assert c["flavor"] in ("containerd", "k3s", "rke2", "k0s", "microk8s")
    assert c["config_version"] in (1, 2, 3, 4, None)
    assert isinstance(facts["systemd"], bool)
    g, k = facts["runtimes"]["gvisor"], facts["runtimes"]["kata"]
    assert g["platform"] in ("systrap", "kvm") and isinstance(g["eligible"], bool) and isinstance(g["reasons"], list)
    assert isinstance(k["eligible"], bool) and all(isinstance(r, str) for r in k["reasons"])


def test_missing_kvm_device_is_a_reason():
    facts = detect(HOSTS / "vm-no-kvm")
    reasons = " ".join(facts["virtualization"]["reasons"])
    assert "/dev/kvm does not exist" in reasons
    assert "neither vmx nor svm" in reasons
    assert any("KVM is not usable" in r for r in facts["runtimes"]["kata"]["reasons"])


@needs_real_kvm
def test_bare_metal_with_working_kvm_gets_kvm_platform(host_tree):
    # A real /dev/kvm node in the copied tree: the probe opens it and the kernel answers.
    root = host_tree("baremetal-intel-nested")
    mknod_char(root / "dev/kvm", KVM_DEV)
    facts = detect(root)
    v = facts["virtualization"]
    assert (v["kvm_device"], v["kvm_usable"], v["kvm_api_version"], v["kvm_create_vm"]) == (True, True, 12, True)
    assert facts["runtimes"]["gvisor"]["platform"] == "kvm"
    # still no Kata: no host-side vsock device in this tree
    assert facts["runtimes"]["kata"]["eligible"] is False
    assert facts["runtimes"]["kata"]["reasons"] == [  # the probe's own words: the tree lists the module
        "host-side vsock (/dev/vhost-vsock) is missing: the vhost_vsock module is loaded but the device is missing"
    ]
    # A real vhost-vsock node (10,241) in the tree: the probe asks the kernel, and this one has no
    # vhost_vsock driver (see shared/notes/test-environment.md), so a node alone is not enough.
    mknod_char(root / "dev/vhost-vsock", VHOST_VSOCK_DEV)
    facts = detect(root)
    driver = os.path.exists("/sys/module/vhost_vsock")
    assert facts["virtualization"]["vhost_vsock"] is driver
    if driver:
        assert facts["runtimes"]["kata"] == {"eligible": True, "reasons": []}
    else:
        assert facts["runtimes"]["kata"]["eligible"] is False
        assert any("/dev/vhost-vsock) is unusable: a device node without a kernel driver" in r
                   for r in facts["virtualization"]["reasons"])
        # Kata's verdict says the same, not "missing": the node is there, its driver is not
        assert [r for r in facts["runtimes"]["kata"]["reasons"] if "vhost-vsock" in r] == [
            r for r in facts["virtualization"]["reasons"] if "/dev/vhost-vsock) is unusable" in r]
        assert not any("is missing" in r for r in facts["runtimes"]["kata"]["reasons"])


@needs_real_kvm
def test_vm_with_working_kvm_stays_on_systrap(host_tree):
    root = host_tree("amd-vm-nested")
    mknod_char(root / "dev/kvm", KVM_DEV)
    facts = detect(root)
    assert facts["virtualization"]["kvm_usable"] is True
    assert facts["runtimes"]["gvisor"]["platform"] == "systrap"


@needs_real_kvm
def test_arm64_kvm_module_is_kvm_arm(host_tree):
    root = host_tree("arm64")
    mknod_char(root / "dev/kvm", KVM_DEV)
    facts = detect(root)
    assert facts["virtualization"]["kvm_module"] == "kvm_arm"
    assert facts["runtimes"]["kata"]["eligible"] is False  # no vhost-vsock


def test_settings_override_config_path_and_socket():
    facts = detect(HOSTS / "containerd-v2", containerd_config="/etc/containerd/conf.d/99-gvisor.toml",
                   containerd_socket="/run/custom.sock")
    assert facts["containerd"]["config_path"] == "/etc/containerd/conf.d/99-gvisor.toml"
    assert facts["containerd"]["socket"] == "/run/custom.sock"
