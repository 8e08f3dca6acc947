"""Detection and doctor on THIS machine, and against real containerd daemons running here.

The acceptance facts (kvm_pvm host: KVM usable without vmx/svm, no host-side vsock) are only
asserted on a machine of that kind; elsewhere those tests skip and say why.
"""

from __future__ import annotations

import json
import os

import pytest

from nodeagent import doctor
from nodeagent.detect import detect_host
from nodeagent.host import HostRoot
from nodeagent.settings import Settings
from tests.support.cli import run_cli
from tests.support.containerd_daemon import cri_plugin_table, minimal_config

pytestmark = pytest.mark.integration

PVM_HOST = os.path.isdir("/sys/module/kvm_pvm")
pvm_only = pytest.mark.skipif(not PVM_HOST, reason="acceptance facts hold only on a kvm_pvm host (/sys/module/kvm_pvm absent)")


@pvm_only
def test_acceptance_detect_json_on_pvm_host():
    proc = run_cli("detect", "-o", "json")
    assert proc.returncode == 0, proc.stderr
    facts = json.loads(proc.stdout)
    v = facts["virtualization"]
    assert v["kvm_usable"] is True and v["kvm_api_version"] == 12
    assert v["kvm_module"] == "kvm_pvm"
    assert v["in_vm"] is True
    assert v["cpu_flag"] is None
    assert v["vhost_vsock"] is False
    assert facts["runtimes"]["gvisor"] == {**facts["runtimes"]["gvisor"], "eligible": True, "platform": "systrap"}
    kata = facts["runtimes"]["kata"]
    assert kata["eligible"] is False
    assert any(r.startswith("host-side vsock (/dev/vhost-vsock) is missing") for r in kata["reasons"])
    assert not any("KVM" in r for r in kata["reasons"])  # KVM itself is fine here


@pvm_only
def test_acceptance_doctor_on_pvm_host():
    proc = run_cli("doctor", "-o", "json")
    data = json.loads(proc.stdout)
    checks = {c["id"]: c for c in data["checks"]}
    assert checks["kvm"]["status"] == "ok" and "kvm_pvm" in checks["kvm"]["summary"]
    assert checks["nested"]["status"] == "warn"
    assert checks["vhost-vsock"]["status"] == "warn" and "modprobe vhost_vsock" in checks["vhost-vsock"]["hint"]
    assert checks["gvisor-host"]["status"] == "ok"
    assert proc.returncode == {"ok": 0, "warn": 1, "fail": 2}[data["status"]]
    text = run_cli("doctor")
    assert text.stdout.splitlines()[0].split() == ["STATUS", "CHECK", "SUMMARY"]
    assert "vhost-vsock: modprobe vhost_vsock" in text.stdout


def test_live_root_uses_uname_and_real_kvm_probe():
    facts = detect_host(HostRoot("/")).to_json()
    assert facts["root_is_live"] is True
    assert facts["machine"] == os.uname().machine
    assert facts["kernel"] == os.uname().release
    v = facts["virtualization"]
    assert v["kvm_device"] == os.path.exists("/dev/kvm")
    if v["kvm_usable"]:
        assert v["kvm_api_version"] == 12 and v["kvm_create_vm"] is True


def _runsc_handler(version: str) -> str:
    table = cri_plugin_table(version)
    quote = "'" if version.startswith("2") else '"'
    return f"\n[{table}.containerd.runtimes.runsc]\n  runtime_type = {quote}io.containerd.runsc.v1{quote}\n"


def _checks(config_path) -> dict[str, doctor.Check]:
    settings = Settings(root="/", containerd_config=str(config_path))
    return {c.id: c for c in doctor.run_checks(HostRoot("/"), settings)}


@pytest.mark.parametrize("version", ["1.6", "2.1"])
def test_running_containerd_is_found_by_its_process(containerd_factory, version):
    daemon = containerd_factory(version, lambda work: minimal_config(version, work, extra=_runsc_handler(version)))
    facts = detect_host(HostRoot("/"), Settings(containerd_config=str(daemon.config_path))).to_json()
    c = facts["containerd"]
    assert (c["running"], c["pid"]) == (True, daemon.pid)
    assert c["socket"] == str(daemon.socket)  # from the process's --address
    assert c["binary"] == str(daemon.binary) and c["version"].startswith(version + ".")
    assert c["config_version"] == (3 if version == "2.1" else 2)
    assert c["handlers"] == ["runc", "runsc"] and c["systemd_cgroup"] is False

    checks = _checks(daemon.config_path)
    assert checks["containerd-running"].status == "ok"
    assert checks["containerd-config"].status == "ok" and "containerd config dump" in checks["containerd-config"].summary
    # containerd serves runsc (an unknown shim only fails when a pod uses it), but the shim is
    # nowhere on the daemon's PATH: doctor says so before a pod finds out
    assert checks["cri-handlers"].status == "ok" and "runsc" in checks["cri-handlers"].summary
    assert checks["handlers"].status == "fail"
    assert "runsc: containerd-shim-runsc-v1 not on containerd's PATH" in checks["handlers"].summary
    assert str(daemon.bindir) in checks["handlers"].hint  # the daemon's own PATH was read


def test_handler_added_without_restart_is_not_served(containerd_factory):
    daemon = containerd_factory("1.6")
    daemon.write_config(minimal_config("1.6", daemon.work, extra=_runsc_handler("1.6")))
    check = _checks(daemon.config_path)["cri-handlers"]
    assert check.status == "fail" and "not served via CRI: runsc" in check.summary
    assert "restart containerd" in check.hint


def test_config_containerd_rejects_fails(containerd_factory, tmp_path):
    daemon = containerd_factory("1.6")
    # valid TOML, but containerd refuses it: an unsupported schema version
    daemon.write_config("version = 2\n[plugins]\n  [plugins.\"io.containerd.grpc.v1.cri\"]\n    sandbox_image = 7\n")
    check = _checks(daemon.config_path)["containerd-config"]
    assert check.status == "fail", check
    assert "containerd rejects" in check.summary and "config dump" in check.hint


def test_cri_plugin_broken_by_dropin_fails(containerd_factory):
    """containerd#5837 on 1.x: the daemon answers but the CRI plugin failed; doctor must not say ok."""

    def config(work):
        dropin = work / "runsc.toml"
        dropin.write_text(_runsc_handler("1.6"))
        return f'imports = ["{dropin}"]\n' + minimal_config("1.6", work)

    daemon = containerd_factory("1.6", config)
    check = _checks(daemon.config_path)["cri-handlers"]
    assert check.status == "fail" and "CRI plugin" in check.summary
