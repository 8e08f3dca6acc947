"""detect.kvm: is the root's /dev/kvm a working KVM, which module provides it, is nesting on.

test_detect_fixtures.py runs a real /dev/kvm through the whole detection; test_detect_bad_input.py
covers a regular file and another device's node. Here: the other ways the device can be wrong,
module and nesting per module, and the "no vmx/svm" reason."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nodeagent.detect import kvm
from nodeagent.host import HostRoot
from tests.support.hosttrees import HOSTS, KVM_DEV, mknod_char, needs_real_kvm

REPO = Path(__file__).resolve().parents[3]


def write(root, rel, text=""):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_missing_device_is_a_reason_not_an_error(tmp_path):
    facts = kvm.probe_device(HostRoot(tmp_path))
    assert facts == {"kvm_device": False, "kvm_usable": False, "kvm_api_version": None, "kvm_create_vm": None,
                     "reasons": ["/dev/kvm does not exist: KVM module not loaded or device not exposed to this node/pod"]}


def test_directory_is_not_a_character_device(tmp_path):
    (tmp_path / "dev/kvm").mkdir(parents=True)
    facts = kvm.probe_device(HostRoot(tmp_path))
    assert (facts["kvm_device"], facts["kvm_usable"]) == (True, False)
    assert facts["reasons"] == ["/dev/kvm is not a character device, not the KVM character device"]


def test_dev_that_is_a_file_cannot_be_statted(tmp_path):
    write(tmp_path, "dev")  # /dev/kvm under a regular file: ENOTDIR, not "missing"
    facts = kvm.probe_device(HostRoot(tmp_path))
    assert facts["reasons"] == ["cannot stat /dev/kvm: Not a directory"]


def test_dangling_symlink_is_missing(tmp_path):
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev/kvm").symlink_to("kvm-gone")
    facts = kvm.probe_device(HostRoot(tmp_path))
    assert facts["kvm_device"] is True  # the name is there ...
    assert facts["reasons"][0].startswith("/dev/kvm does not exist")  # ... the device is not


@needs_real_kvm
def test_real_kvm_node_creates_a_vm(tmp_path):
    mknod_char(tmp_path / "dev/kvm", KVM_DEV)
    facts = kvm.probe_device(HostRoot(tmp_path))
    assert facts == {"kvm_device": True, "kvm_usable": True, "kvm_api_version": 12, "kvm_create_vm": True,
                     "reasons": []}


@needs_real_kvm
def test_device_path_is_a_parameter(tmp_path):
    mknod_char(tmp_path / "dev/kvm-other", KVM_DEV)
    assert kvm.probe_device(HostRoot(tmp_path), "/dev/kvm-other")["kvm_usable"] is True
    assert kvm.probe_device(HostRoot(tmp_path))["kvm_usable"] is False


@needs_real_kvm
def test_absolute_symlink_does_not_reach_the_machines_own_kvm(tmp_path):
    # In the root, /dev/kvm -> /dev/kvm resolves to itself (a loop): there is no KVM device in it.
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev/kvm").symlink_to("/dev/kvm")
    assert kvm.probe_device(HostRoot(tmp_path))["kvm_usable"] is False


def test_absolute_symlink_is_resolved_inside_the_root(tmp_path):
    # runs without root or KVM: in the root there is no /dev/null, so there is no device
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev/kvm").symlink_to("/dev/null")
    assert kvm.probe_device(HostRoot(tmp_path))["reasons"][0].startswith("/dev/kvm does not exist")


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root to mknod and setpriv to drop caps")
def test_permission_denied_gets_the_run_as_root_hint(tmp_path):
    # /dev/null's numbers with mode 0000, probed in a real child without DAC override: EACCES
    mknod_char(tmp_path / "dev/kvm", (1, 3))
    (tmp_path / "dev/kvm").chmod(0)
    code = ("import sys; from nodeagent.detect import kvm; from nodeagent.host import HostRoot; "
            "print(kvm.probe_device(HostRoot(sys.argv[1]))['reasons'])")
    drop = "-dac_override,-dac_read_search"
    out = subprocess.run(["setpriv", f"--bounding-set={drop}", f"--inh-caps={drop}", sys.executable, "-c", code,
                          str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(["cannot open /dev/kvm: Permission denied "
                                      "(run as root, or allow the device in the pod/cgroup)"])


@pytest.mark.parametrize("module, raw, nested", [("kvm_intel", "Y\n", True), ("kvm_intel", "N\n", False),
                                                  ("kvm_amd", "1\n", True), ("kvm_amd", "0\n", False)])
def test_vendor_module_nested_parameter(tmp_path, module, raw, nested):
    write(tmp_path, f"sys/module/{module}/parameters/nested", raw)
    facts = kvm.module_and_nesting(HostRoot(tmp_path), "amd64")
    assert facts == {"kvm_module": module, "nested": nested,
                     "nested_source": f"/sys/module/{module}/parameters/nested = {raw.strip()}"}


@pytest.mark.parametrize("raw", [None, "maybe\n"])
def test_missing_or_odd_nested_parameter_is_unknown(tmp_path, raw):
    (tmp_path / "sys/module/kvm_intel").mkdir(parents=True)
    if raw is not None:
        write(tmp_path, "sys/module/kvm_intel/parameters/nested", raw)
    facts = kvm.module_and_nesting(HostRoot(tmp_path), "amd64")
    assert facts == {"kvm_module": "kvm_intel", "nested": None, "nested_source": None}


def test_intel_is_preferred_when_two_vendor_modules_show(tmp_path):
    write(tmp_path, "sys/module/kvm_amd/parameters/nested", "1\n")
    write(tmp_path, "sys/module/kvm_intel/parameters/nested", "N\n")
    facts = kvm.module_and_nesting(HostRoot(tmp_path), "amd64")
    assert (facts["kvm_module"], facts["nested"]) == ("kvm_intel", False)


@pytest.mark.parametrize("cmdline, source", [
    ("ro quiet nested_pvm=1\n", "kvm_pvm is pagetable-based nested virtualization (kernel cmdline nested_pvm=1)"),
    ("ro quiet xnested_pvm=1\n", "kvm_pvm is pagetable-based nested virtualization"),
])
def test_pvm_is_always_nested_and_says_why(tmp_path, cmdline, source):
    (tmp_path / "sys/module/kvm_pvm").mkdir(parents=True)
    write(tmp_path, "proc/cmdline", cmdline)
    facts = kvm.module_and_nesting(HostRoot(tmp_path), "amd64")
    assert facts == {"kvm_module": "kvm_pvm", "nested": True, "nested_source": source}


@pytest.mark.parametrize("cmdline, nested", [("kvm-arm.mode=nested\n", True), ("kvm-arm.mode=nvhe\n", None), (None, None)])
def test_arm64_builtin_kvm_nesting_comes_from_the_cmdline(tmp_path, cmdline, nested):
    (tmp_path / "sys/module/kvm").mkdir(parents=True)
    if cmdline:
        write(tmp_path, "proc/cmdline", cmdline)
    facts = kvm.module_and_nesting(HostRoot(tmp_path), "arm64")
    assert (facts["kvm_module"], facts["nested"]) == ("kvm_arm", nested)


def test_kvm_core_module_alone_is_no_module_on_amd64(tmp_path):
    (tmp_path / "sys/module/kvm").mkdir(parents=True)
    assert kvm.module_and_nesting(HostRoot(tmp_path), "amd64")["kvm_module"] is None


def test_no_vmx_svm_and_no_module_is_a_reason_on_amd64_only(tmp_path):
    host = HostRoot(tmp_path)
    why = "the CPU shows neither vmx nor svm and no KVM module is loaded"
    assert why in kvm.probe(host, "amd64", {"sse2"})["reasons"]
    assert why not in kvm.probe(host, "amd64", {"vmx"})["reasons"]
    assert why not in kvm.probe(host, "arm64", set())["reasons"]
    (tmp_path / "sys/module/kvm_pvm").mkdir(parents=True)  # PVM: KVM without vmx/svm
    assert why not in kvm.probe(host, "amd64", set())["reasons"]


def test_captured_amd_guest_module_and_nesting():
    facts = kvm.probe(HostRoot(HOSTS / "amd-vm-nested"), "amd64", {"svm"})
    assert (facts["kvm_module"], facts["nested"]) == ("kvm_amd", True)
    assert facts["kvm_usable"] is False  # captured trees have no device nodes
