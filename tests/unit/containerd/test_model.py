"""containerd.model: where each config version keeps its handlers, and what a gVisor or Kata
handler must look like (the contract's handler tables)."""

from __future__ import annotations

import pytest

from nodeagent.containerd import model
from nodeagent.errors import ConfigError, UsageError
from nodeagent.runtimes import gvisor, kata


@pytest.mark.parametrize("version, plugin", [
    (None, "cri"), (1, "cri"), (2, "io.containerd.grpc.v1.cri"),
    (3, "io.containerd.cri.v1.runtime"), (4, "io.containerd.cri.v1.runtime"),
])
def test_each_config_version_keeps_runtimes_under_its_cri_plugin(version, plugin):
    assert model.runtimes_table_path(model.config_version(version)) == ("plugins", plugin, "containerd", "runtimes")


@pytest.mark.parametrize("value, words", [("2", "not an integer"), (True, "not an integer"), (2.0, "not an integer"),
                                          (5, "not supported"), (0, "not supported")])
def test_a_version_containerd_would_not_read_is_refused(value, words):
    with pytest.raises(ConfigError, match=words) as exc:
        model.config_version(value)
    assert exc.value.hint


@pytest.mark.parametrize("name", ["runsc", "kata-qemu", "a", "x" * 63, "0gvisor9"])
def test_handler_names_that_are_dns_labels_pass(name):
    assert model.validate_handler_name(name) == name


@pytest.mark.parametrize("name", ["", "Runsc", "runsc\n", "-runsc", "runsc-", "run_sc", "run.sc", "x" * 64, None, 7])
def test_handler_names_kubernetes_would_refuse_are_refused(name):
    with pytest.raises(UsageError, match="invalid handler name"):
        model.validate_handler_name(name)


def test_the_contracts_handler_tables():
    assert gvisor.handler().table() == {
        "runtime_type": "io.containerd.runsc.v1", "pod_annotations": ["dev.gvisor.*"],
        "options": {"TypeUrl": "io.containerd.runsc.v1.options", "ConfigPath": "/etc/containerd/runsc.toml"},
    }
    spec = kata.handler("kata-vm")
    assert spec.name == "kata-vm" and spec.table() == {
        "runtime_type": "io.containerd.kata.v2", "privileged_without_host_devices": True,
        "pod_annotations": ["io.katacontainers.*"],
    }
    clh = kata.hypervisor_handler("kata-clh")
    assert clh.shim_binary == "containerd-shim-kata-clh-v2"
    assert clh.table()["options"] == {"ConfigPath": "/opt/kata/share/defaults/kata-containers/configuration-clh.toml"}
    assert gvisor.handler().shim_binary == "containerd-shim-runsc-v1"


def test_each_spec_has_its_own_keys_so_one_handler_cannot_change_the_contract_for_the_next():
    kata.handler().keys["pod_annotations"].append("changed")
    kata.hypervisor_handler("kata-qemu").keys["pod_annotations"].append("changed")
    assert kata.handler().table()["pod_annotations"] == ["io.katacontainers.*"]
    assert kata.HANDLER_KEYS["pod_annotations"] == ["io.katacontainers.*"]


@pytest.mark.parametrize("name", ["kata-xyz", "qemu", "kata-"])
def test_unknown_extra_kata_handlers_are_refused(name):
    with pytest.raises(UsageError):
        kata.hypervisor_handler(name)


def test_a_runtime_type_maps_to_its_shim_binary_or_is_refused():
    assert model.shim_binary_for("io.containerd.runc.v2") == "containerd-shim-runc-v2"
    for bad in ("runc", "io.containerd.runc", "org.containerd.runc.v2"):
        with pytest.raises(UsageError):
            model.shim_binary_for(bad)
