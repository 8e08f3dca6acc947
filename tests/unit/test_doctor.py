"""`nodeagent doctor` against captured host trees: statuses, hints, exit codes, read-only."""

import json
import os

import pytest

from nodeagent import doctor
from nodeagent.host import HostRoot
from nodeagent.settings import Settings
from tests.support.cli import assert_known_error, run_cli
from tests.support.hosttrees import HOSTS, KVM_DEV, VHOST_VSOCK_DEV, copy_host, mknod_char, needs_real_kvm
from tests.support.tree import diff_snapshots, snapshot


def checks_of(root, **settings):
    results = doctor.run_checks(HostRoot(root), Settings(root=str(root), **settings))
    return {c.id: c for c in results}


@pytest.fixture
def tree(tmp_path):
    return lambda name: copy_host(name, tmp_path)


def test_json_contract_and_exit_code_for_every_fixture():
    for path in sorted(p for p in HOSTS.iterdir() if p.is_dir()):
        before = snapshot(path)
        proc = run_cli("doctor", "--root", str(path), "-o", "json")
        assert "Traceback" not in proc.stderr
        data = json.loads(proc.stdout)
        assert set(data) == {"status", "checks"}
        assert data["status"] in ("ok", "warn", "fail")
        statuses = [c["status"] for c in data["checks"]]
        expected = "fail" if "fail" in statuses else "warn" if "warn" in statuses else "ok"
        assert data["status"] == expected, path.name
        assert proc.returncode == {"ok": 0, "warn": 1, "fail": 2}[expected], path.name
        for check in data["checks"]:
            assert set(check) == {"id", "status", "summary", "hint"}
            assert check["status"] in ("ok", "warn", "fail", "skip") and check["summary"]
            if check["status"] in ("warn", "fail"):
                assert check["hint"], check  # every problem says what to do
        assert diff_snapshots(before, snapshot(path)) == [], "doctor must not write"


def test_text_output_is_a_table_with_hints():
    proc = run_cli("doctor", "--root", str(HOSTS / "no-containerd"))
    assert proc.returncode == 2
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["STATUS", "CHECK", "SUMMARY"]
    assert any(l.startswith("FAIL") and "containerd-found" in l for l in lines)
    assert "what to do:" in lines
    assert any(l.strip().startswith("containerd-found: install containerd") for l in lines)
    assert lines[-1] == "overall: fail"


def test_root_that_does_not_exist(tmp_path):
    msg = assert_known_error(run_cli("doctor", "--root", str(tmp_path / "missing")), 2)
    assert "does not exist" in msg


def test_broken_config_fails_with_hint_and_changes_nothing(tree):
    root = tree("containerd-v2")
    (root / "etc/containerd/config.toml").write_text("version = 2\n[plugins.\n")
    before = snapshot(root)
    proc = run_cli("doctor", "--root", str(root), "-o", "json")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    check = {c["id"]: c for c in json.loads(proc.stdout)["checks"]}["containerd-config"]
    assert check["status"] == "fail" and "not valid TOML" in check["summary"]
    assert "fix /etc/containerd/config.toml" in check["hint"]
    assert diff_snapshots(before, snapshot(root)) == []


def test_handlers_ok_when_shims_present():
    checks = checks_of(HOSTS / "containerd-v2")
    assert checks["handlers"].status == "ok" and "runsc" in checks["handlers"].summary
    assert checks["cgroup-driver"].status == "ok"
    assert checks["containerd-config"].status == "ok"


def test_missing_shim_and_options_file_fail(tree):
    root = tree("containerd-v2")
    (root / "usr/local/bin/containerd-shim-runsc-v1").unlink()
    (root / "etc/containerd/runsc.toml").unlink()
    check = checks_of(root)["handlers"]
    assert check.status == "fail"
    assert "runsc: containerd-shim-runsc-v1 not on containerd's PATH" in check.summary
    assert "runsc: ConfigPath /etc/containerd/runsc.toml missing" in check.summary


def test_shim_next_to_containerd_binary_counts(tree):
    # containerd also looks next to its own executable (how k3s/rke2 ship their shims)
    root = tree("rke2-node")
    assert checks_of(root)["handlers"].status == "warn"  # runc fine, no sandbox handler yet
    (root / "var/lib/rancher/rke2/bin/containerd-shim-runc-v2").unlink()
    assert checks_of(root)["handlers"].status == "fail"


def test_kata_registered_without_shim_fails():
    check = checks_of(HOSTS / "containerd-v3")["handlers"]
    assert check.status == "fail" and "kata: containerd-shim-kata-v2 not on containerd's PATH" in check.summary


def test_cgroup_driver_mismatch_is_gvisor_7671(tree):
    root = tree("containerd-v2")
    (root / "etc/containerd/runsc.toml").write_text('[runsc_config]\n  systemd-cgroup = "false"\n')
    check = checks_of(root)["cgroup-driver"]
    assert check.status == "fail"
    assert "runc uses systemd, gVisor (/etc/containerd/runsc.toml) uses cgroupfs" in check.summary
    assert 'systemd-cgroup = "true"' in check.hint and "gvisor/issues/7671" in check.hint


def test_systemd_cgroup_without_systemd_fails(tree):
    root = tree("k3s-node")
    (root / "run/systemd/system/.keep").unlink()
    (root / "run/systemd/system").rmdir()
    check = checks_of(root)["cgroup-driver"]
    assert check.status == "fail" and "systemd is not the running init" in check.summary


def test_runsc_toml_not_toml_fails(tree):
    root = tree("containerd-v2")
    (root / "etc/containerd/runsc.toml").write_text("[runsc_config\n")
    check = checks_of(root)["cgroup-driver"]
    assert check.status == "fail" and "not valid TOML" in check.summary


def test_vm_without_kvm(tree):
    checks = checks_of(HOSTS / "vm-no-kvm")
    assert checks["kvm"].status == "warn" and "/dev/kvm does not exist" in checks["kvm"].summary
    assert checks["nested"].status == "warn" and "nested virtualization is off" in checks["nested"].summary
    assert checks["vhost-vsock"].status == "warn"
    assert checks["gvisor-host"].status == "ok"  # 4.19 >= 4.14.77


def test_old_kernel_fails_gvisor(tree):
    root = tree("vm-no-kvm")
    (root / "proc/sys/kernel/osrelease").write_text("3.10.0-1160.el7.x86_64\n")
    check = checks_of(root)["gvisor-host"]
    assert check.status == "fail" and "older than gVisor's minimum 4.14.77" in check.summary


def test_runtimeclass_hook_skips_without_kubernetes(monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    check = checks_of(HOSTS / "containerd-v2")["runtimeclasses"]
    assert (check.status, check.summary) == ("skip", "no Kubernetes API configured")


@needs_real_kvm
def test_bare_metal_with_kvm_and_vsock_is_clean_but_for_containerd(tree):
    root = tree("baremetal-intel-nested")
    mknod_char(root / "dev/kvm", KVM_DEV)
    mknod_char(root / "dev/vhost-vsock", VHOST_VSOCK_DEV)
    checks = checks_of(root)
    assert checks["kvm"].status == "ok"
    assert checks["nested"].status == "ok" and "nested guests enabled" in checks["nested"].summary
    # the node answers only where a vhost_vsock driver is behind it (not on this kind of machine)
    if os.path.exists("/sys/module/vhost_vsock"):
        assert checks["vhost-vsock"].status == "ok"
    else:
        assert checks["vhost-vsock"].status == "warn" and "unusable" in checks["vhost-vsock"].summary
    assert checks["cgroup-driver"].status == "ok"
    assert checks["containerd-running"].status == "warn"  # a captured tree has no processes
    assert checks["handlers"].status == "warn"  # nothing registered yet


def test_not_running_hint_names_the_flavors_unit():
    check = checks_of(HOSTS / "k3s-node")["containerd-running"]
    assert check.status == "warn" and "systemctl start k3s.service" in check.hint
    assert "<root>/proc" in check.hint  # a non-live root sees the node's processes through its procfs


def test_containerd_trust_is_ok_when_no_untrusted_process_calls_itself_containerd():
    # the warn case, with a real nobody process, is tests/integration/test_discovery_trust.py
    check = checks_of(HOSTS / "containerd-v2")["containerd-trust"]
    assert check.status == "ok" and check.hint is None
    assert check.summary == "no untrusted process calls itself containerd"
