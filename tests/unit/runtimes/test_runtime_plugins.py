"""The runtime plug-in registry and what each plug-in answers (issue 12, scope 2).

The generic layers only ever ask these objects; these tests pin what they answer for the
defaults, so a plug-in that drifts from the contract fails here before an install test does.
"""

from __future__ import annotations

import pytest

from nodeagent import runtimes
from nodeagent.containerd import model
from nodeagent.errors import ArtifactError, UsageError
from nodeagent.runtimes import gvisor, kata, kata_shims
from nodeagent.runtimes.base import Runtime
from nodeagent.settings import Settings


def test_registry_order_and_lookup():
    assert [rt.name for rt in runtimes.ALL] == list(runtimes.NAMES) == ["gvisor", "kata"]
    assert all(isinstance(rt, Runtime) for rt in runtimes.ALL)
    assert runtimes.get("kata") is kata.RUNTIME and runtimes.get("gvisor") is gvisor.RUNTIME
    with pytest.raises(KeyError):
        runtimes.get("runc")
    assert runtimes.selected("all") == ["gvisor", "kata"] and runtimes.selected("kata") == ["kata"]


def test_options_are_built_from_settings_and_match_the_defaults():
    for rt in runtimes.ALL:
        assert rt.options(Settings()) == rt.default_options(), rt.name
    # the superseded kata_extra_handlers still names shims (by handler name), after kata_shims
    opts = kata.RUNTIME.options(Settings(kata_shims=["clh"], kata_extra_handlers=["kata-qemu", "kata-clh"],
                                         kata_sha256="a" * 64))
    assert [s.name for s in opts.shims] == ["clh", "qemu"] and kata.RUNTIME.operator_digest(opts) == "a" * 64
    assert gvisor.RUNTIME.operator_digest(gvisor.RUNTIME.default_options()) is None


def test_handler_specs_belong_to_their_runtime():
    specs = kata.RUNTIME.handler_specs(kata.KataOptions(shims=kata_shims.parse_shims(["qemu", "kata-fc"])))
    assert [s.name for s in specs] == ["kata", "kata-qemu", "kata-fc"]
    assert {s.runtime for s in specs} == {"kata"}
    assert specs[1].table()["options"] == {"ConfigPath": "/opt/kata/share/defaults/kata-containers/configuration-qemu.toml"}
    assert specs[1].shim_binary == "containerd-shim-kata-qemu-v2"
    (runsc,) = gvisor.RUNTIME.handler_specs(gvisor.GvisorOptions(handler="gvisor-a"))
    assert runsc.table() == {"runtime_type": "io.containerd.runsc.v1", "pod_annotations": ["dev.gvisor.*"],
                             "options": {"TypeUrl": "io.containerd.runsc.v1.options", "ConfigPath": "/etc/containerd/runsc.toml"}}
    with pytest.raises(UsageError):
        kata.RUNTIME.options(Settings(kata_shims=["nope"]))


def test_handlers_named_recognises_only_its_own_names():
    assert [s.runtime_type for s in kata.RUNTIME.handlers_named("kata-clh")] == [kata.RUNTIME_TYPE, "io.containerd.kata-clh.v2"]
    assert gvisor.RUNTIME.handlers_named("Not A Label") == []
    assert isinstance(gvisor.RUNTIME.handlers_named("runsc")[0], model.HandlerSpec)


def test_option_file_roles_have_one_owner():
    assert runtimes.option_roles() == {"runsc"}
    assert runtimes.owner_of_role("runsc") == "gvisor"
    assert runtimes.owner_of_role("config") is None


def test_links_and_ownership():
    assert gvisor.RUNTIME.links("/opt/nodeagent/gvisor/1") == {
        "/usr/local/bin/runsc": "/opt/nodeagent/gvisor/1/runsc",
        "/usr/local/bin/containerd-shim-runsc-v1": "/opt/nodeagent/gvisor/1/containerd-shim-runsc-v1",
    }
    assert kata.RUNTIME.links("/opt/nodeagent/kata/3.11.0") == {
        "/opt/kata": "/opt/nodeagent/kata/3.11.0",
        "/usr/local/bin/containerd-shim-kata-v2": "/opt/kata/bin/containerd-shim-kata-v2",
    }
    assert kata.RUNTIME.owns_link("/usr/local/bin/containerd-shim-kata-v2", "/opt/kata/bin/containerd-shim-kata-v2")
    assert not kata.RUNTIME.owns_link("/usr/local/bin/containerd-shim-kata-v2", "/usr/bin/containerd-shim-kata-v2")
    assert not gvisor.RUNTIME.owns_link("/usr/local/bin/runsc", "/opt/kata/bin/containerd-shim-kata-v2")


def test_catalog_answers_per_runtime():
    assert gvisor.RUNTIME.mirror_relpath("20240729.0", "arm64", "runsc") == "gvisor/20240729.0/aarch64/runsc"
    assert kata.RUNTIME.mirror_relpath("3.11.0", "amd64", "x") == "kata/3.11.0/x"
    assert kata.RUNTIME.builtin_digest("3.7.0", "amd64") and not kata.RUNTIME.builtin_digest("3.11.0", "amd64")
    assert not gvisor.RUNTIME.builtin_digest("latest", "amd64")
    assert gvisor.RUNTIME.pinned_layouts("latest", "amd64") == [
        ["gvisor/latest/x86_64/gvisor.tar.bz2"],
        ["gvisor/latest/x86_64/runsc", "gvisor/latest/x86_64/containerd-shim-runsc-v1"],
    ]
    with pytest.raises(ArtifactError, match="invalid kata version"):
        kata.RUNTIME.check_version("latest")
    with pytest.raises(ArtifactError, match="no static build"):
        kata.RUNTIME.upstream_arch("riscv64")


def test_runtime_classes_come_from_the_options():
    (rc,) = gvisor.RUNTIME.runtime_classes(gvisor.RUNTIME.options(Settings(gvisor_overhead_cpu="1")))
    assert (rc.name, rc.handler, rc.label, rc.memory, rc.cpu) == ("gvisor", "runsc", "gvisor", "64Mi", "1")
    (rc,) = kata.RUNTIME.runtime_classes(kata.RUNTIME.options(Settings(kata_handler="kata-x", kata_runtimeclass="vm")))
    assert (rc.name, rc.handler, rc.label, rc.memory, rc.cpu) == ("vm", "kata-x", "kata", "160Mi", "250m")
